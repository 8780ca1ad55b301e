// The plain-HTTP listener (`http_redirect`, `tls.acme.http_listen_addr`): ACME HTTP-01
// challenges are answered while Prox's own ACME is on, everything else is redirected to the
// HTTPS listener (without it, challenges too: a CA follows the redirect to a webroot route there).
// Its error answers (a bad Host, an unknown challenge token) are thrown as ProxyErrors: the
// pipeline's observedHandler turns them into Prox's error answer, with the operator's page.

import type { ClientInfo, Handler } from "../ports.ts";
import { ProxyError } from "../domain/errors.ts";
import { HOST_FIELD } from "../domain/headers.ts";
import { authorityOf, wireQuery } from "../domain/rewrite.ts";
import { CHALLENGE_PREFIX } from "./acme.ts";
import type { AcmeController } from "./acme.ts";

/** The plain-HTTP listener's handler; the arguments are read per request (they follow reloads). */
export function redirectHandler(o: {
  acme: () => AcmeController | null;
  status: () => number;
  httpsPort: () => number;
  /** Whether a route takes the host (one that none takes gets 404, not a redirect to it). */
  routed?: () => (host: string) => boolean;
}): Handler {
  return (req, info) => {
    if (madeUpAuthority(req, info)) throw new ProxyError("bad_request", "Missing Host header");
    const acme = o.acme();
    // A Host that is not a host ("a b") makes URL parsing throw: httpsRedirect refuses it (400).
    return acme && authorityIn(req) !== null &&
        new URL(req.url).pathname.startsWith(CHALLENGE_PREFIX)
      ? acme.answerChallenge(req)
      : Promise.resolve(
        httpsRedirect(req, { status: o.status(), httpsPort: o.httpsPort(), routed: o.routed?.() }),
      );
  };
}

/**
 * The plain-HTTP listener's answer: 308 to https. The host is the request target's authority,
 * else Host (RFC 9112 §3.2.2), without its port; one that is not a host is a `bad_request`
 * ProxyError (400), as on the main listener (it would move the path, or add userinfo); one no
 * route takes (`routed`) a `not_found` one (404), as over HTTPS, rather than a redirect to any
 * name a client gives (Caddy redirects the sites it serves). Path and query go over as they came,
 * like nginx's `$request_uri`: never normalized or re-encoded.
 */
export function httpsRedirect(
  req: Request,
  opts: { status: number; httpsPort: number; routed?: (host: string) => boolean },
): Response {
  const url = req.url;
  const authority = authorityIn(req);
  if (authority === null) throw new ProxyError("bad_request", "Invalid Host header");
  if (opts.routed && !opts.routed(authority)) {
    throw new ProxyError("not_found", "No route for this host");
  }
  const target = url.slice(url.indexOf("://") + 3 + authority.length);
  const host = authority.replace(/:\d*$/, "");
  const port = opts.httpsPort === 443 ? "" : `:${opts.httpsPort}`;
  return new Response(null, {
    status: opts.status,
    headers: { location: `https://${host}${port}${wireQuery(target || "/")}` },
  });
}

/**
 * True for a request that named no host: HTTP/1.1 without Host (RFC 9112 §3.2: 400), or HTTP/1.0
 * without it. Deno.serve makes up `localhost:<its port>` for those, which a redirect would send the
 * client to, and counts them as h2c (protocolOf); HTTP/2's authority is `:authority`, without a
 * Host field, so only that made-up one tells them apart (an h2c client naming exactly it, as no
 * browser does, is refused too).
 */
function madeUpAuthority(req: Request, info: ClientInfo): boolean {
  if (req.headers.has("host")) return false;
  if (info.protocol === "http/1.1") return true;
  return (info.authority ?? authorityOf(req.url)) === `localhost:${info.localPort}`;
}

/** The request URL's authority when it and the Host field are a host and an optional port. */
function authorityIn(req: Request): string | null {
  const authority = authorityOf(req.url);
  const hostField = req.headers.get("host");
  return authority === null || !HOST_FIELD.test(authority) ||
      (hostField !== null && !HOST_FIELD.test(hostField))
    ? null
    : authority;
}

// The plain-HTTP listener (`http_redirect`, `tls.acme.http_listen_addr`): ACME HTTP-01
// challenges are answered, everything else is redirected to the HTTPS listener.

import type { Handler } from "../ports.ts";
import { CHALLENGE_PREFIX } from "./acme.ts";
import type { AcmeController } from "./acme.ts";

/** The plain-HTTP listener's handler; the arguments are read per request (they follow reloads). */
export function redirectHandler(o: {
  acme: () => AcmeController | null;
  status: () => number;
  httpsPort: () => number;
}): Handler {
  return (req) => {
    const acme = o.acme();
    return acme && new URL(req.url).pathname.startsWith(CHALLENGE_PREFIX)
      ? acme.answerChallenge(req)
      : Promise.resolve(httpsRedirect(req, { status: o.status(), httpsPort: o.httpsPort() }));
  };
}

/** The plain-HTTP listener's answer: 308 to https, except ACME HTTP-01 challenges. */
export function httpsRedirect(req: Request, opts: { status: number; httpsPort: number }): Response {
  const url = new URL(req.url);
  if (url.pathname.startsWith(CHALLENGE_PREFIX)) {
    return new Response("Not found\n", { status: 404 });
  }
  const host = (req.headers.get("host") ?? url.hostname).replace(/:\d+$/, "");
  const port = opts.httpsPort === 443 ? "" : `:${opts.httpsPort}`;
  return new Response(null, {
    status: opts.status,
    headers: { location: `https://${host}${port}${url.pathname}${url.search}` },
  });
}

// The admin listener: a Hono app on its own Deno.serve, off the public port (127.0.0.1:9090 by
// default). Metrics, health and readiness probes, the effective config with secrets redacted,
// reload, a status JSON, a self-contained status page, `/explain` (a request dry-run) and cache
// purges.
// Everything except the two probes needs the bearer token when one is configured (HTTP Basic with
// the token as password also works, so a browser can open the status page).

import { Hono } from "hono";
import { compress } from "hono/compress";
import type { Logger } from "../ports.ts";
import { bindHint } from "./listener_set.ts";
import { formatListenAddr, isLoopback } from "../config/listen.ts";
import { keepAccepting } from "./http_serve.ts";
import type { ListenAddr } from "../config/listen.ts";
import { statusPage } from "./admin_page.ts";
import type { StatusJson } from "./admin_status.ts";
import type { ExplainRequest, Explanation } from "../proxy/explain.ts";
import type { PurgeInput, PurgeResult } from "../proxy/cache_purge.ts";
import type { AcmeStatus } from "./acme.ts";
import { requestFromArgs } from "./explain_cli.ts";
import { denoEnv } from "./config_source.ts";
import { REDACTED, redactSecrets, SECRET_KEY } from "../config/secret_names.ts";

export { isLoopback, redactSecrets };

/** The outcome of `POST /config/reload` as the server reports it. */
export interface AdminReloadResult {
  ok: boolean;
  version: number;
  at: number;
  issues: readonly unknown[];
  /** Not tried: shutting down. */
  skipped?: true;
}

/** What the admin app needs from the server; the admin's own contract. */
export interface AdminCallbacks {
  status(): StatusJson;
  reload(): Promise<AdminReloadResult>;
  /** The latest reload outcomes, newest first. */
  reloadHistory?(): readonly AdminReloadResult[];
  /** Listeners up, config loaded, not draining. */
  ready(): boolean;
  /** The resolved config; the admin app redacts secrets before sending it. */
  effectiveConfig(): unknown;
  metricsText(): Promise<string>;
  /** `POST /cache/purge`: drops response cache entries (proxy/cache_purge.ts). */
  purgeCache?(input: PurgeInput): PurgeResult;
  /**
   * `POST /upstreams/drain` and `/upstreams/undrain`: takes a target out of rotation (its
   * requests in flight finish) or puts it back; null when no route has that target.
   */
  drainTarget?(
    target: string,
    on: boolean,
  ): { target: string; drained: boolean; inFlight: number } | null;
  /**
   * `POST /acme/renew`: orders a new ACME certificate now (`started`: false when an order is in
   * progress already); null without `tls.acme`.
   */
  renewCertificate?(): { started: boolean; acme: AcmeStatus } | null;
  /** `GET /explain`: one request explained against the live config and health. */
  explain?(req: ExplainRequest): Promise<Explanation>;
  metricsContentType?: string;
}

/** A running admin listener. */
export interface AdminListener {
  readonly hostname: string;
  readonly port: number;
  shutdown(): Promise<void>;
}

const encoder = new TextEncoder();

/** Compares two secrets in time independent of where they differ. */
export function safeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** True when the Authorization header carries `token` (Bearer, or Basic with it as password). */
export function authorized(header: string | undefined, token: string): boolean {
  if (!header) return false;
  // Exactly a scheme and one credential: "Bearer <token> junk" is no valid field (RFC 9110 §11.4).
  const parts = header.trim().split(/\s+/);
  if (parts.length !== 2) return false;
  const [scheme, cred] = parts;
  if (/^bearer$/i.test(scheme)) return safeEqual(cred, token);
  if (/^basic$/i.test(scheme)) {
    let decoded: string;
    try {
      // UTF-8, as the challenge's charset="UTF-8" asks browsers to send (RFC 7617 §2.1).
      decoded = new TextDecoder().decode(Uint8Array.from(atob(cred), (c) => c.charCodeAt(0)));
    } catch {
      return false;
    }
    const colon = decoded.indexOf(":");
    return colon >= 0 && safeEqual(decoded.slice(colon + 1), token); // user-id ":" password
  }
  return false;
}

function originHost(origin: string): string | null {
  try {
    return new URL(origin).host;
  } catch {
    return null;
  }
}

/** The admin API's endpoints and the methods each takes (a known path asked otherwise: 405). */
const ADMIN_METHODS = new Map<string, string>([
  ...["/", "/healthz", "/readyz", "/metrics", "/config", "/config/history", "/status", "/explain"]
    .map((p) => [p, "GET, HEAD"] as [string, string]),
  ...["/config/reload", "/cache/purge", "/upstreams/drain", "/upstreams/undrain", "/acme/renew"]
    .map((p) => [p, "POST"] as [string, string]),
]);

/** What an unknown path's 404 lists: every endpoint, from the table above. */
const ENDPOINTS = [...ADMIN_METHODS].map(([p, m]) => `${m === "POST" ? "POST" : "GET"} ${p}`);

/** The longest url, prefix or route a purge takes. */
const PURGE_MAX = 2000;

/** Builds the admin Hono app; `token` (when set) guards all but /healthz and /readyz. */
export function createAdminApp(
  cb: AdminCallbacks,
  opts: {
    token?: string | (() => string | undefined);
    logger?: Logger;
    /** The listener is on a loopback address (no token then means "this machine only"). */
    loopback?: boolean;
  } = {},
): Hono {
  const tokenOf = typeof opts.token === "function" ? opts.token : () => opts.token as string;
  const app = new Hono();
  const open = new Set(["/healthz", "/readyz"]);

  app.use("*", async (c, next) => {
    const token = tokenOf();
    c.header("cache-control", "no-store");
    c.header("x-content-type-options", "nosniff");
    if (
      token && !open.has(c.req.path) && !authorized(c.req.header("authorization"), token)
    ) {
      // Basic first: browsers then prompt (or use URL credentials) for the status page.
      c.header("www-authenticate", 'Basic realm="prox-admin", charset="UTF-8"');
      c.header("www-authenticate", 'Bearer realm="prox-admin"', { append: true });
      return c.json({ error: "Unauthorized: send Authorization: Bearer <admin.token>" }, 401);
    }
    // HTTP/2 names the host in :authority, not Host (RFC 9113 §8.3.1): Deno puts it in the URL.
    const host = c.req.header("host") ?? new URL(c.req.url).host;
    // Without a token, a loopback listener trusts whoever can reach it: this machine. A web page
    // can reach it too through DNS rebinding (its own name resolved to 127.0.0.1), but then Host
    // carries that name: only an address or localhost is accepted.
    if (!token && opts.loopback && !open.has(c.req.path) && !localHost(host)) {
      return c.json({ error: "Forbidden: use an address or localhost as the host" }, 403);
    }
    // Elsewhere (0.0.0.0 takes loopback connections too, a LAN address LAN browsers reach) a
    // scraper may name the host (`prox:9090`), but a browser's request (it sends Origin or
    // Sec-Fetch-*) for a name may come from a page that name was rebound from.
    if (!token && !open.has(c.req.path) && !localHost(host) && fromBrowser(c.req.raw.headers)) {
      return c.json({
        error: "Forbidden: from a browser, use an address or localhost as the host, or set " +
          "admin.token",
      }, 403);
    }
    // A browser holding Basic credentials must not be driven into a reload by another site.
    const origin = c.req.header("origin");
    if (c.req.method === "POST" && origin && originHost(origin) !== host) {
      return c.json({ error: "Forbidden: cross-origin request" }, 403);
    }
    return await next();
  });

  // Prometheus asks for gzip; an exposition with many routes shrinks about tenfold.
  app.use("*", compress({ encoding: "gzip" }));
  app.get("/healthz", (c) => c.text("ok\n"));
  app.get("/readyz", (c) => cb.ready() ? c.text("ready\n") : c.text("not ready\n", 503));
  app.get("/metrics", async (c) => {
    const body = await cb.metricsText();
    return c.body(body, 200, {
      "content-type": cb.metricsContentType ?? "text/plain; version=0.0.4; charset=utf-8",
    });
  });
  app.get("/config", (c) => c.json(redactSecrets(cb.effectiveConfig()) as object));
  app.post("/config/reload", async (c) => {
    const r = await cb.reload();
    opts.logger?.info("Reload requested through the admin API", { ok: r.ok, version: r.version });
    // Shutting down is no fault of the config's: 503, not 422.
    return c.json(r, r.ok ? 200 : r.skipped ? 503 : 422);
  });
  app.get("/config/history", (c) => c.json(cb.reloadHistory?.() ?? []));
  // Not a GET: it changes state (a link or a prefetch must not reload). 405 says which method.
  app.get("/config/reload", (c) => {
    c.header("allow", "POST");
    return c.json({ error: "Method not allowed: use POST /config/reload" }, 405);
  });
  // ?url=… (every Vary variant of it), ?prefix=… (every URL it starts), ?route=… (all of it) or
  // ?tag=… (repeatable or a comma list: every entry of any route tagged so).
  app.post("/cache/purge", (c) => {
    if (!cb.purgeCache) return c.json({ error: "Not found: purging is not available" }, 404);
    const given = (["url", "prefix", "route", "tag"] as const).filter((k) =>
      c.req.query(k) !== undefined
    );
    if (given.length !== 1) {
      return c.json({
        error: "Bad request: give one of url, prefix, route or tag, as in " +
          "POST /cache/purge?url=https://example.com/page",
      }, 400);
    }
    const k = given[0];
    // Tags may be repeated (?tag=a&tag=b) as well as listed (?tag=a,b).
    const v = k === "tag" ? c.req.queries("tag")!.join(",") : c.req.query(k)!;
    // With workers it is passed on in one control line of at most 4 KiB.
    if (v.length > PURGE_MAX) {
      return c.json({ error: `Bad request: ${k} longer than ${PURGE_MAX} characters` }, 400);
    }
    const input: PurgeInput = k === "url"
      ? { url: v }
      : k === "prefix"
      ? { prefix: v }
      : k === "route"
      ? { route: v }
      : { tag: v };
    const r = cb.purgeCache(input);
    // A purge by tag spans routes: it names none.
    return r.ok
      ? c.json(r.route === null ? { purged: r.purged } : { route: r.route, purged: r.purged })
      : c.json({ error: r.error }, r.status);
  });
  app.get("/cache/purge", (c) => {
    c.header("allow", "POST");
    return c.json({ error: "Method not allowed: use POST /cache/purge" }, 405);
  });
  // ?target=<a target as the config names it>: no new requests for it while drained (HAProxy's
  // `set server … state drain`); /status shows its requests in flight until they are done.
  for (const [path, on] of [["/upstreams/drain", true], ["/upstreams/undrain", false]] as const) {
    app.post(path, (c) => {
      if (!cb.drainTarget) return c.json({ error: "Not found: draining is not available" }, 404);
      const target = c.req.query("target");
      if (!target) {
        return c.json({
          error: `Bad request: give the target, as in POST ${path}?target=http://10.0.0.1:8080`,
        }, 400);
      }
      if (target.length > PURGE_MAX) {
        return c.json({ error: `Bad request: target longer than ${PURGE_MAX} characters` }, 400);
      }
      const r = cb.drainTarget(target, on);
      return r ? c.json(r) : c.json(
        { error: `Not found: no route has the target "${target}" (see GET /status)` },
        404,
      );
    });
    app.get(path, (c) => {
      c.header("allow", "POST");
      return c.json({ error: `Method not allowed: use POST ${path}` }, 405);
    });
  }
  // A certificate to replace before it is due (a key that leaked, a CA's mass revocation).
  app.post("/acme/renew", (c) => {
    const r = cb.renewCertificate?.() ?? null;
    if (!r) return c.json({ error: "Not found: tls.acme is not enabled" }, 404);
    return r.started
      ? c.json({ renewing: true, acme: r.acme }, 202)
      : c.json({ error: "Conflict: an ACME order is in progress", acme: r.acme }, 409);
  });
  app.get("/acme/renew", (c) => {
    c.header("allow", "POST");
    return c.json({ error: "Method not allowed: use POST /acme/renew" }, 405);
  });
  app.get("/status", (c) => c.json(cb.status()));
  // ?url=…&method=…&header=Name:%20value (repeated)&client_ip=…
  app.get("/explain", async (c) => {
    if (!cb.explain) return c.json({ error: "Not found: explain is not available" }, 404);
    const q = c.req.queries();
    const req = requestFromArgs([c.req.query("method") ?? "GET", c.req.query("url") ?? ""], {
      headers: q.header ?? [],
      clientIp: c.req.query("client_ip"),
    });
    if (typeof req === "string") return c.json({ error: `Bad request: ${req}` }, 400);
    const e = await cb.explain(req);
    // Header rules may add credentials from {env.…}, which /config shows as the placeholder:
    // a value holding one is hidden whatever its header's name, as is one a secret's name holds.
    const h = e.requestHeaders;
    if (h) {
      const secrets = envValues(cb.effectiveConfig());
      const hide = (k: string, v: string) =>
        SECRET_KEY.test(k) || secrets.some((s) => v.includes(s)) ? REDACTED : v;
      h.added = h.added.map(([k, v]) => [k, hide(k, v)]);
      h.changed = h.changed.map(([k, a, b]) => [k, hide(k, a), hide(k, b)]);
    }
    return c.json(e);
  });
  app.get("/", (c) => {
    const nonce = crypto.randomUUID().replaceAll("-", "");
    c.header(
      "content-security-policy",
      `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; ` +
        "connect-src 'self'; frame-ancestors 'none'",
    );
    return c.html(statusPage(cb.status(), { nonce }));
  });
  app.notFound((c) => {
    // A known endpoint asked with another method: 405 with the methods it takes (RFC 9110 §15.5.6).
    const allow = ADMIN_METHODS.get(c.req.path);
    if (allow) {
      c.header("allow", allow);
      return c.json(
        { error: `Method not allowed: ${c.req.method} ${c.req.path} takes ${allow}` },
        405,
      );
    }
    return c.json({
      error: `Not found: ${c.req.method} ${c.req.path}`,
      endpoints: ENDPOINTS,
    }, 404);
  });
  app.onError((err, c) => {
    opts.logger?.error("Admin request failed", { path: c.req.path, error: String(err) });
    return c.json({ error: "Internal error" }, 500);
  });
  return app;
}

/** Shorter values are not credentials, and would hide any header holding those few characters. */
const ENV_SECRET_MIN = 4;

/** The values of the `{env.NAME}` variables `config` names (at least ENV_SECRET_MIN long). */
function envValues(config: unknown): string[] {
  const names = new Set<string>();
  for (const m of JSON.stringify(config ?? null).matchAll(/\{env\.([^{}\s"\\]+)\}/g)) {
    names.add(m[1]);
  }
  const out: string[] = [];
  for (const name of names) {
    const v = denoEnv.env(name);
    if (v !== undefined && v.length >= ENV_SECRET_MIN) out.push(v);
  }
  return out;
}

/** True when a request comes from a browser: fetch metadata (Sec-Fetch-*) or Origin. */
function fromBrowser(h: Headers): boolean {
  return h.has("origin") || h.has("sec-fetch-site") || h.has("sec-fetch-mode");
}

/** True when a Host field names localhost or an IP address (never a name DNS could rebind). */
function localHost(host: string | undefined): boolean {
  if (!host) return false;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
  return name.toLowerCase() === "localhost" || /^\[[0-9a-f:.]+\]$/i.test(name) ||
    /^\d{1,3}(\.\d{1,3}){3}$/.test(name);
}

/**
 * HEAD answered as GET without the body but with its Content-Length: Hono answers HEAD with a
 * null body, for which Deno.serve sends `content-length: 0` (RFC 9110 §8.6: a HEAD response's
 * Content-Length must be the GET one's).
 */
async function headAsGet(app: Hono, req: Request): Promise<Response> {
  const res = await app.fetch(new Request(req.url, { method: "GET", headers: req.headers }));
  const headers = new Headers(res.headers);
  headers.set("content-length", String((await res.arrayBuffer()).byteLength));
  return new Response(null, { status: res.status, statusText: res.statusText, headers });
}

/** Starts the admin app on its own listener. */
export function startAdmin(
  addr: ListenAddr,
  opts: {
    callbacks: AdminCallbacks;
    token?: string | (() => string | undefined);
    logger: Logger;
    /** SO_REUSEPORT, so a `--takeover` successor can bind the port the old process holds. */
    reusePort?: boolean;
    /**
     * With `reusePort`: the port may already be held (by the Prox this one takes over). Otherwise
     * a held port fails the bind as without SO_REUSEPORT: two Prox must not share an admin port.
     */
    mayShare?: boolean;
  },
): AdminListener {
  const app = createAdminApp(opts.callbacks, {
    token: opts.token,
    logger: opts.logger,
    loopback: isLoopback(addr.hostname),
  });
  let serving: ReturnType<typeof keepAccepting>;
  try {
    if (opts.reusePort && !opts.mayShare) {
      Deno.listen({ hostname: addr.hostname, port: addr.port }).close(); // throws when held
    }
    // Accept errors (descriptors running out) do not end the admin listener either.
    serving = keepAccepting(
      (port) =>
        Deno.serve({
          hostname: addr.hostname,
          port,
          reusePort: opts.reusePort,
          onListen() {},
          onError(err) {
            opts.logger.error("Admin request failed", { error: String(err) });
            return new Response("Internal error\n", { status: 500 });
          },
        }, (req) => req.method === "HEAD" ? headAsGet(app, req) : app.fetch(req)),
      addr.port,
      {
        logger: opts.logger,
      },
    );
  } catch (err) {
    throw new Error(
      `Cannot listen on ${formatListenAddr(addr)} (admin): ${(err as Error).message}${
        bindHint(err, addr.port)
      }`,
    );
  }
  const server = serving.current;
  const hasToken = Boolean(typeof opts.token === "function" ? opts.token() : opts.token);
  if (!hasToken && !isLoopback(server.addr.hostname)) {
    opts.logger.warn("Admin listener is reachable from the network without a token", {
      addr: formatListenAddr(server.addr),
      fix: "set admin.token, or bind admin.listen_addr to 127.0.0.1",
    });
  }
  opts.logger.info("Admin listening", {
    addr: formatListenAddr(server.addr),
    auth: hasToken ? "bearer token" : "none",
  });
  let done: Promise<void> | null = null;
  return {
    hostname: server.addr.hostname,
    port: server.addr.port,
    shutdown: () => {
      serving.stop();
      return done ??= serving.current.shutdown();
    },
  };
}

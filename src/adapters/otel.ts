// Deno's OpenTelemetry (OTEL_DENO=true: spans for Deno.serve and fetch, exported over OTLP) and
// Prox's own HTTP/1.1 upstream client: without this, the upstream's spans would hang off the
// client's span, with Prox's server span beside them instead of between.

import type { ClientInfo, Handler, Logger } from "../ports.ts";

/**
 * True when Deno's OpenTelemetry is on for this process: OTEL_DENO=true in any case, as Deno
 * reads it ("1" leaves Deno's off, and Prox must not act as if it were on).
 */
export function otelEnabled(env: (name: string) => string | undefined): boolean {
  return env("OTEL_DENO")?.toLowerCase() === "true";
}

/**
 * The W3C trace context (`traceparent`, `tracestate`) of the span active now: inside a request,
 * Deno.serve's server span for it. Loaded only when tracing is on.
 */
export async function traceContextSource(): Promise<() => [string, string][]> {
  const api = await import("@opentelemetry/api");
  return () => {
    const carrier: Record<string, string> = {};
    api.propagation.inject(api.context.active(), carrier);
    return Object.entries(carrier);
  };
}

/**
 * Puts the current span's trace context on an upstream request's headers in place of the
 * client's, so the upstream's spans hang off Prox's. Without a span (no trace source, or none
 * active) the client's context goes on as it came. Deno's server span keeps no tracestate: the
 * client's goes on when the span continues its trace (W3C Trace Context §3.3: a participant
 * "MUST send it"), and is dropped when the span began a new one (its traceparent was invalid).
 */
export function carryTraceContext(
  headers: Pick<Headers, "delete" | "get" | "set">,
  source: (() => [string, string][]) | undefined,
): void {
  if (!source) return;
  const fields = source();
  if (fields.length === 0) return;
  const parent = fields.find(([k]) => k === "traceparent")?.[1];
  const theirs = headers.get("traceparent");
  // Same trace id (characters 3 to 35 of version 00 and of later versions alike).
  const continued = parent !== undefined && theirs !== null &&
    theirs.slice(3, 35).toLowerCase() === parent.slice(3, 35);
  if (!continued || fields.some(([k]) => k === "tracestate")) headers.delete("tracestate");
  for (const [k, v] of fields) headers.set(k, v);
}

/** Query parameters whose values are credentials (jwt_auth's access_token, signed URLs' sig…). */
const SECRET_PARAM = /token|sig|signature|secret|password|passwd|auth|credential|key|code|jwt/i;

/**
 * A URL for a span's `url.full`: credentials in the query replaced by REDACTED, as OpenTelemetry's
 * semantic conventions ask (a span exported to a tracing backend must not carry a bearer token).
 */
export function scrubbedUrl(url: string): string {
  const q = url.indexOf("?");
  if (q < 0) return url;
  const end = url.indexOf("#", q);
  const query = url.slice(q + 1, end < 0 ? undefined : end);
  const scrubbed = query.split("&").map((part) => {
    const eq = part.indexOf("=");
    if (eq < 0) return part;
    let name = part.slice(0, eq);
    try {
      name = decodeURIComponent(name.replaceAll("+", " "));
    } catch { /* an undecodable name is judged as it is */ }
    return SECRET_PARAM.test(name) ? `${part.slice(0, eq)}=REDACTED` : part;
  }).join("&");
  return url.slice(0, q + 1) + scrubbed + (end < 0 ? "" : url.slice(end));
}

/** The methods OpenTelemetry's HTTP conventions know; others are recorded as `_OTHER`. */
const KNOWN_METHODS = new Set([
  "CONNECT",
  "DELETE",
  "GET",
  "HEAD",
  "OPTIONS",
  "PATCH",
  "POST",
  "PUT",
  "TRACE",
]);

/** `network.protocol.version` of each protocol a listener reports. */
const PROTOCOL_VERSION: Record<string, string> = { "http/1.1": "1.1", h2: "2", h2c: "2", h3: "3" };

/**
 * A server span's name: the method, or "HTTP" for one the conventions do not know, so that a
 * client's made-up methods do not become span names (semantic conventions, HTTP spans: "Name").
 */
export function spanName(method: string): string {
  return KNOWN_METHODS.has(method) ? method : "HTTP";
}

/**
 * The attributes OpenTelemetry's HTTP server span conventions ask for (`url.path`, `url.scheme`,
 * `url.query` with credentials redacted, `server.address`, `server.port`, `client.address`, the
 * method or `_OTHER` and `http.request.method_original`), plus `url.full` as Deno.serve's spans
 * record it. `authority`: the Host the listener read, when it knows it better than the URL;
 * `version`: the HTTP version, else the request's own (`protocol`, `http10`).
 */
export function serverSpanAttributes(
  req: Request,
  info: Pick<ClientInfo, "remoteAddr" | "authority" | "protocol" | "http10">,
  version?: string,
): Record<string, string | number> {
  const url = new URL(req.url);
  let server = url;
  if (info.authority) {
    try {
      server = new URL(`${url.protocol}//${info.authority}`);
    } catch { /* the URL's own authority then */ }
  }
  const full = scrubbedUrl(req.url);
  const q = full.indexOf("?");
  const method = KNOWN_METHODS.has(req.method) ? req.method : "_OTHER";
  const attributes: Record<string, string | number> = {
    "http.request.method": method,
    "url.full": full,
    "url.scheme": url.protocol.slice(0, -1),
    "url.path": url.pathname,
  };
  if (method === "_OTHER") attributes["http.request.method_original"] = req.method;
  if (q >= 0 && q < full.length - 1) attributes["url.query"] = full.slice(q + 1);
  attributes["server.address"] = server.hostname.replace(/^\[(.*)\]$/, "$1");
  attributes["server.port"] = Number(server.port) || (url.protocol === "https:" ? 443 : 80);
  attributes["client.address"] = info.remoteAddr.hostname;
  attributes["network.protocol.name"] = "http";
  attributes["network.protocol.version"] = version ??
    (info.http10 ? "1.0" : PROTOCOL_VERSION[info.protocol] ?? "1.1");
  return attributes;
}

/**
 * Wraps a handler so that each request gets a server span continuing the client's trace context,
 * as Deno.serve makes for the requests it serves: for those Prox's own engines serve without
 * Deno.serve (HTTP/3; HTTP/1.1 and HTTP/2 behind `accept_proxy_protocol`). `version`: the HTTP
 * version when one engine serves only it. Loaded only when tracing is on.
 */
export async function serverSpans(): Promise<(handler: Handler, version?: string) => Handler> {
  const api = await import("@opentelemetry/api");
  const tracer = api.trace.getTracer("prox");
  const getter = {
    keys: (h: Headers) => [...h.keys()],
    get: (h: Headers, key: string) => h.get(key) ?? undefined,
  };
  return (handler, version) => (req, info) => {
    const parent = api.propagation.extract(api.ROOT_CONTEXT, req.headers, getter);
    const attributes = serverSpanAttributes(req, info, version);
    return tracer.startActiveSpan(
      spanName(req.method),
      { kind: api.SpanKind.SERVER, attributes },
      parent,
      async (span) => {
        try {
          const res = await handler(req, info);
          span.setAttribute("http.response.status_code", res.status);
          if (res.status >= 500) {
            // The conventions' error.type: the status code, for a server span's 5xx.
            span.setAttribute("error.type", String(res.status));
            span.setStatus({ code: api.SpanStatusCode.ERROR });
          }
          return res;
        } catch (err) {
          span.setAttribute("error.type", err instanceof Error ? err.name : "_OTHER");
          span.setStatus({ code: api.SpanStatusCode.ERROR, message: String(err) });
          throw err;
        } finally {
          span.end();
        }
      },
    );
  };
}

/**
 * Where Deno's exporter sends spans, as OpenTelemetry's exporter variables say: the traces
 * endpoint as given, else the general one with `/v1/traces` (HTTP) or as given (gRPC), else
 * localhost's 4318 (4317 for gRPC). null when traces are not exported (`OTEL_TRACES_EXPORTER=none`).
 */
export function otlpTracesEndpoint(env: (name: string) => string | undefined): string | null {
  if (env("OTEL_TRACES_EXPORTER")?.trim().toLowerCase() === "none") return null;
  const protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") ??
    env("OTEL_EXPORTER_OTLP_PROTOCOL") ?? "http/protobuf";
  const grpc = protocol.trim().toLowerCase() === "grpc";
  const own = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  if (own) return own;
  const base = env("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (!base) return grpc ? "http://localhost:4317" : "http://localhost:4318/v1/traces";
  return grpc ? base : `${base.replace(/\/+$/, "")}/v1/traces`;
}

/**
 * Tries a TCP connection to the span collector once, and warns when none opens: Deno's exporter
 * drops the spans it cannot send without a word (in batches, from a bounded queue, never holding
 * a request), so without this a collector that is down looks like tracing that does nothing.
 */
export async function checkCollector(
  endpoint: string | null,
  o: { logger: Logger; timeoutMs?: number },
): Promise<void> {
  if (endpoint === null) return;
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    o.logger.warn("Cannot use the OpenTelemetry collector endpoint: not a URL", { endpoint });
    return;
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(url.port) || (url.protocol === "https:" ? 443 : 80);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname, port });
  const timeoutMs = o.timeoutMs ?? 3000;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    (await Promise.race([connecting, late])).close();
  } catch (err) {
    // A connection that opens after the timeout is closed then.
    connecting.then((c) => c.close(), () => {});
    o.logger.warn("Cannot reach the OpenTelemetry collector: spans are dropped while it is down", {
      endpoint,
      error: err instanceof Error ? err.message : String(err),
    });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Names the server span active now (Deno.serve's or Prox's own) after the route that took the
 * request, `{method} {route}`, and sets `http.route` to the route key: a value from the config, so
 * span names stay few however many paths clients ask for (semantic conventions, HTTP spans).
 * Loaded only when tracing is on.
 */
export async function routeSpans(): Promise<(route: string, method: string) => void> {
  const api = await import("@opentelemetry/api");
  return (route, method) => {
    const span = api.trace.getActiveSpan();
    if (!span) return;
    span.setAttribute("http.route", route);
    span.updateName(`${spanName(method)} ${route}`);
  };
}

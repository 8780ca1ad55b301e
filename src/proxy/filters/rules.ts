// Applying compiled header and body rules to the upstream request and to the response. Bodies
// are replaced, never buffered: the rules available do not read the original body, so it is
// cancelled (response) or never read (request).

import { authUserValue } from "./basic_auth.ts";
import { expand } from "../../domain/placeholders.ts";
import { escapeValue, htmlSafeJson } from "../../domain/escape.ts";
import type { PlaceholderValues } from "../../domain/placeholders.ts";
import type { BodyRule, HeaderRules, JsonTemplate } from "../../domain/rules.ts";
import type { ConditionInput } from "../../domain/conditions.ts";
import { BODY_BYTES, BODY_REPLACED } from "../../ports.ts";
import type { BodyCounter, CountedResponse, Logger } from "../../ports.ts";
import { replaceApplies, replacedBody, replacedHeaders, replacerFor } from "./body_replace.ts";
import { HeaderList } from "../../domain/header_list.ts";
import type { HeaderMap } from "../../domain/header_list.ts";
import type { RequestContext } from "../context.ts";
import { WireResponse } from "../wire_response.ts";

/** The compiled rules of one route (any may be absent). */
export interface RouteRules {
  requestHeaders?: HeaderRules;
  responseHeaders?: HeaderRules;
  requestBody?: BodyRule;
  responseBody?: BodyRule;
  /** A `respond` route's `body`. */
  ownBody?: BodyRule;
}

/** For rules of fixed text only, which expand nothing. */
export const NO_VALUES: PlaceholderValues = () => "";

/** Placeholder values for a request (and its response, once known), computed on demand. */
export function placeholderValues(ctx: RequestContext, status?: number): PlaceholderValues {
  return (name: string): string => {
    switch (name) {
      case "client_ip":
        return ctx.clientIp;
      case "timestamp":
      case "timestamp_iso":
        return new Date(ctx.startWall).toISOString();
      case "uri_path":
        return ctx.path;
      case "query":
        return ctx.query.slice(1);
      case "host":
        return ctx.host;
      case "method":
        return ctx.req.method;
      case "scheme":
        return ctx.scheme;
      case "request_id":
        return ctx.requestId;
      case "route":
        return ctx.route?.id ?? "";
      case "auth_user":
        return authUserValue(ctx.authUser);
      case "tls_client_subject":
        return ctx.info.clientCert?.subject ?? "";
      case "tls_client_issuer":
        return ctx.info.clientCert?.issuer ?? "";
      case "tls_client_serial":
        return ctx.info.clientCert?.serial ?? "";
      case "tls_client_fingerprint":
        return ctx.info.clientCert?.fingerprint ?? "";
      case "tls_client_san":
        return ctx.info.clientCert?.san ?? "";
      case "tls_client_not_after":
        return ctx.info.clientCert?.notAfter ?? "";
      case "tls_client_cert":
        // URL-encoded PEM, one header line (nginx's $ssl_client_escaped_cert).
        return ctx.info.clientCert ? encodeURIComponent(ctx.info.clientCert.pem) : "";
      case "upstream":
        return ctx.upstream ?? "";
      case "status":
        return status === undefined ? "" : String(status);
      default:
        return "";
    }
  };
}

/** The condition input for the request side. */
export function requestInput(ctx: RequestContext, headers: Headers): ConditionInput {
  return {
    method: ctx.req.method,
    path: ctx.path,
    query: ctx.query.slice(1),
    headers,
    authority: ctx.host,
    clientIp: ctx.clientIp,
  };
}

/** Applies header rules in place: remove, then set, then append. Unsafe values are skipped. */
export function applyHeaderRules(
  rules: HeaderRules,
  headers: HeaderMap,
  opts: { values: PlaceholderValues; logger: Logger; requestId: string },
): void {
  for (const name of rules.remove) headers.delete(name);
  const fixed = rules.fixed;
  if (fixed) {
    // Fixed text checked at load: nothing to expand, nothing a message could make unsendable.
    const list = headers instanceof HeaderList ? headers : null;
    for (const [name, value] of fixed.set) {
      if (list) list.setChecked(name, value);
      else headers.set(name, value);
    }
    for (const [name, value] of fixed.append) {
      if (list) list.appendChecked(name, value);
      else headers.append(name, value);
    }
    return;
  }
  const put = (name: string, value: string, append: boolean) => {
    // Any control character but HTAB: Deno.serve's HTTP/1.1 writer panics on one (process exit).
    if (/[^\t\x20-\x7e\x80-\uffff]/.test(value)) {
      opts.logger.warn("Header rule skipped: value contains a control character after expansion", {
        header: name,
        requestId: opts.requestId,
      });
      return;
    }
    try {
      if (append) headers.append(name, value);
      else headers.set(name, value);
    } catch {
      opts.logger.warn("Header rule skipped: invalid header value", {
        header: name,
        requestId: opts.requestId,
      });
    }
  };
  // A value beyond Latin-1 (a route named "/日本") goes out as its UTF-8 bytes, as the config's
  // own text does (Headers refuses such characters: every request would skip the rule).
  const values: PlaceholderValues = (name) => {
    const v = opts.values(name);
    return /[\u0100-\uffff]/.test(v) ? String.fromCharCode(...new TextEncoder().encode(v)) : v;
  };
  for (const [name, t] of rules.set) put(name, expand(t, values), false);
  for (const [name, t] of rules.append) put(name, expand(t, values), true);
}

function buildJson(t: JsonTemplate, values: PlaceholderValues): unknown {
  switch (t.t) {
    case "str":
      return expand(t.v, values);
    case "lit":
      return t.v;
    case "arr":
      return t.v.map((x) => buildJson(x, values));
    case "obj":
      return Object.fromEntries(t.v.map(([k, x]) => [expand(k, values), buildJson(x, values)]));
  }
}

/** The replacement body bytes for a rule, or null when the rule keeps the body. */
export function ruleBody(
  rule: BodyRule,
  values: PlaceholderValues,
): Uint8Array<ArrayBuffer> | null {
  switch (rule.body.kind) {
    case "text": {
      const mode = rule.body.escape;
      const v = rule.body.v.constant || mode === "none"
        ? values
        : (name: string) => escapeValue(values(name), mode);
      return new TextEncoder().encode(expand(rule.body.v, v));
    }
    case "json":
      // Whatever its content_type: a placeholder's `</script>` or `<img …>` adds no markup.
      return new TextEncoder().encode(htmlSafeJson(JSON.stringify(buildJson(rule.body.v, values))));
    case "keep":
    case "replace":
      // A `replace` rule edits the body as it streams (body_replace.ts), not in one piece.
      return null;
  }
}

/** Headers that no longer describe a replaced body. */
export const STALE_BODY_HEADERS = [
  "content-length",
  "content-encoding",
  "etag",
  "content-md5",
  "digest",
  "content-digest",
  "repr-digest",
  "content-range",
  "accept-ranges",
  "last-modified",
  "transfer-encoding",
];

/** True when a Response's headers may be edited (not a fetch() Response's immutable ones). */
export function mutableHeaders(res: Response): boolean {
  try {
    res.headers.delete("x-prox-mutable-probe");
    return true;
  } catch {
    return false;
  }
}

/**
 * Applies response header and body rules; conditions see the response status and headers.
 * Returns the (possibly new) response. Synchronous: it runs on every proxied response.
 */
export function applyResponseRules(
  ctx: RequestContext,
  res: Response,
  rules: RouteRules,
  logger: Logger,
): Response {
  const { responseHeaders, responseBody } = rules;
  if (!responseHeaders && !responseBody) return res;
  // On the response side `has_header` looks at the response (what the seed's README intended);
  // path, method and query still describe the request.
  // One literal rather than a spread of requestInput(): a spread object's hidden class dies with
  // it, which makes V8 discard this function's optimized code at the next full GC after a pause.
  // None when no condition is there to read it.
  const input: ConditionInput | undefined = responseBody || !responseHeaders!.always
    ? {
      method: ctx.req.method,
      path: ctx.path,
      query: ctx.query.slice(1),
      headers: res.headers,
      clientIp: ctx.clientIp,
      status: res.status,
      responseHeaders: res.headers,
    }
    : undefined;
  // A 204, 205 or 304 has no content for a body rule to replace (RFC 9110 §15.3.5, §15.3.6,
  // §15.4.5; a Response with one cannot even be built): a 304's validators must stay.
  const nullBody = res.status === 204 || res.status === 205 || res.status === 304;
  let bodyRule = !nullBody && responseBody?.when(input!) ? responseBody : undefined;
  if (bodyRule?.body.kind === "replace" && !replaceApplies(res, bodyRule.body)) {
    bodyRule = undefined;
  }
  const headerRule = responseHeaders && (responseHeaders.always || responseHeaders.when(input!))
    ? responseHeaders
    : undefined;
  if (!bodyRule && !headerRule) return res;
  // The new body is the whole representation: a 206 without Content-Range would be invalid
  // (RFC 9110 §15.3.7). `{status}` is the status the client gets.
  const status = res.status === 206 && bodyRule && bodyRule.body.kind !== "keep" ? 200 : res.status;
  const values = bodyRule || !headerRule!.fixed ? placeholderValues(ctx, status) : NO_VALUES;
  if (!bodyRule && (res instanceof WireResponse || mutableHeaders(res))) {
    // Header rules only: edit in place, keeping the body (and Deno.serve's fast path) as is.
    applyHeaderRules(headerRule!, res.headers, { values, logger, requestId: ctx.requestId });
    return res;
  }
  const headers = new Headers(res.headers);
  let body: BodyInit | null = res.body;
  let replaced = false;
  /** The counter of a body whose strings are replaced as it streams. */
  let streamed: BodyCounter | undefined;
  if (bodyRule?.body.kind === "replace") {
    replacedHeaders(headers, status);
    if (bodyRule.contentType !== "") headers.set("content-type", bodyRule.contentType);
    if (res.body !== null && ctx.req.method !== "HEAD") {
      const contentType = headers.get("content-type") ?? "";
      const replacer = replacerFor(bodyRule.body, { values, contentType });
      streamed = { bytes: 0, ended: false };
      // The upstream's trailers (an HTTP/2 upstream's) go on after the body.
      const inner = (res as CountedResponse)[BODY_BYTES];
      if (inner) Object.defineProperty(streamed, "trailers", { get: () => inner.trailers });
      body = replacedBody(res.body, replacer, streamed);
    }
  } else if (bodyRule) {
    const bytes = ruleBody(bodyRule, values);
    if (bytes) {
      replaced = true;
      // The replaced body is let go (its upstream connection is released once cancelled), unless
      // the route's cache is storing it: rules apply to hits as to fresh answers.
      res.body?.cancel(BODY_REPLACED).catch(() => {});
      for (const h of STALE_BODY_HEADERS) headers.delete(h);
      // A 416's `Content-Range: bytes */N` gives the representation's length, which a replaced
      // error body does not change (RFC 9110 §15.5.17).
      const range = status === 416 ? res.headers.get("content-range") : null;
      if (range !== null) headers.set("content-range", range);
      headers.set("content-length", String(bytes.byteLength));
      body = ctx.req.method === "HEAD" ? null : bytes;
    }
    headers.set("content-type", bodyRule.contentType);
  }
  if (headerRule) {
    applyHeaderRules(headerRule, headers, { values, logger, requestId: ctx.requestId });
    // The body rule labels what it wrote, as on the request side (and in the Rust Prox).
    if (bodyRule && bodyRule.contentType !== "") headers.set("content-type", bodyRule.contentType);
  }
  const out: CountedResponse = new Response(nullBody ? null : body, {
    status,
    statusText: status === res.status ? res.statusText : undefined,
    headers,
  });
  // A kept body streams on with its counter: the bytes the access log counts and an HTTP/2
  // upstream's trailers (gRPC's status). A replaced body goes without: they described the old one.
  const counter = streamed ?? (replaced ? undefined : (res as CountedResponse)[BODY_BYTES]);
  if (counter) out[BODY_BYTES] = counter;
  return out;
}

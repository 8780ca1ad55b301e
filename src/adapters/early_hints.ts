// What the upstream clients (upstream_h1.ts, upstream_h2c.ts) do with an upstream's 103 Early
// Hints (RFC 8297): its fields go to the request's sink (the client's listener), as nginx's
// `early_hints` and Caddy pass them on; other interim answers (100) end at this hop.

import type { EarlyHintsSink } from "../ports.ts";

/**
 * Interim (1xx) answers taken before a final one. RFC 9110 §15.2 sets no number, but an upstream
 * that sends them for ever would keep a client parsing until the response-header timeout (a
 * minute by default); real servers send one or two (100 Continue, 103 Early Hints).
 */
export const MAX_INTERIM = 32;

/**
 * A value with a control character other than HTAB (RFC 9110 §5.5), which no engine can write:
 * such a field is left out of the hints.
 */
const FIELD_CTL = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * A field name (a token, RFC 9110 §5.1). An HTTP/1.1 upstream's parser passes other names on for
 * the final answer's Headers to refuse; a 103's would reach the client as they came (a bare CR
 * that an HTTP/1.1 client reads as a line of its own, a name an HTTP/2 client resets for).
 */
const FIELD_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Hands a 103's fields to `sink`. The upstream client already dropped the hop-by-hop ones
 * (RFC 9110 §7.6.1); a Content-Length, which no 1xx may carry (RFC 9110 §8.6), and names and
 * values no engine can write are left out too. A 103 with nothing left is not passed on (as nginx does).
 * A sink that throws does not fail the exchange: the hints are advice.
 */
export function passHints(sink: EarlyHintsSink, fields: readonly [string, string][]): void {
  const out: [string, string][] = [];
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    if (f[0].length === 14 && f[0].toLowerCase() === "content-length") continue;
    if (FIELD_CTL.test(f[1]) || !FIELD_NAME.test(f[0])) continue;
    out.push(f);
  }
  if (out.length === 0) return;
  try {
    sink.earlyHints(out);
  } catch { /* advice only: the answer still comes */ }
}

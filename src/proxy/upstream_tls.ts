// The TLS settings of an upstream (`tls` on proxy, load_balance and websocket routes and on
// forward_auth), resolved once per config snapshot from the files the server read.

import type { UpstreamTlsConfig } from "../config/schema.ts";
import type { UpstreamTls } from "../ports.ts";

/** `tls` as the upstream clients take it; undefined without one. */
export function upstreamTlsOf(
  tls: UpstreamTlsConfig | undefined,
  files: ReadonlyMap<string, string> | undefined,
): UpstreamTls | undefined {
  if (!tls) return undefined;
  const ca = tls.ca_cert ? files?.get(tls.ca_cert) : undefined;
  const cert = tls.client_cert ? files?.get(tls.client_cert) : undefined;
  const key = tls.client_key ? files?.get(tls.client_key) : undefined;
  return Object.freeze({
    insecureSkipVerify: tls.insecure_skip_verify,
    serverName: tls.server_name,
    caCerts: ca === undefined ? undefined : [ca],
    client: cert !== undefined && key !== undefined ? { cert, key } : undefined,
  });
}

// The gRPC health checking protocol (grpc.health.v1.Health/Check) for active health checks of
// gRPC targets: the request's bytes, and the verdict on an answer. A gRPC message is framed as one
// flag byte (compressed or not), a 4-byte big-endian length and the protobuf bytes; the call's
// status comes in `grpc-status` (trailers, or the head of a trailers-only answer).

/** The method's path. */
export const GRPC_HEALTH_PATH = "/grpc.health.v1.Health/Check";

/** ServingStatus values of HealthCheckResponse. */
const SERVING_STATUS = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"];

/** The framed HealthCheckRequest for `service` ("" asks about the server as a whole). */
export function grpcHealthRequest(service: string): Uint8Array<ArrayBuffer> {
  const name = new TextEncoder().encode(service);
  const msg: number[] = [];
  if (name.length > 0) {
    msg.push(0x0a); // field 1, length-delimited
    for (let n = name.length;; n >>>= 7) {
      if (n < 0x80) {
        msg.push(n);
        break;
      }
      msg.push((n & 0x7f) | 0x80);
    }
    msg.push(...name);
  }
  const out = new Uint8Array(5 + msg.length);
  new DataView(out.buffer).setUint32(1, msg.length);
  out.set(msg, 5);
  return out;
}

/** What a probe makes of an answer: healthy or not, and why. */
export interface GrpcHealthVerdict {
  ok: boolean;
  reason: string;
}

/**
 * The verdict on an answer to Health/Check: `status` the HTTP status, `grpcStatus` and
 * `grpcMessage` from the trailers (or the head of a trailers-only answer), `body` its bytes.
 */
export function grpcHealthVerdict(
  o: { status: number; grpcStatus: string | null; grpcMessage: string | null; body: Uint8Array },
): GrpcHealthVerdict {
  if (o.status !== 200) return { ok: false, reason: `status ${o.status}` };
  if (o.grpcStatus === null) return { ok: false, reason: "no grpc-status in the answer" };
  if (o.grpcStatus !== "0") {
    const why = o.grpcStatus === "12"
      ? " (no grpc.health.v1 service)"
      : o.grpcStatus === "5"
      ? " (service unknown)"
      : "";
    const msg = o.grpcMessage ? `: ${safeText(o.grpcMessage)}` : "";
    return { ok: false, reason: `gRPC status ${safeText(o.grpcStatus)}${why}${msg}` };
  }
  const serving = servingStatus(o.body);
  if (serving === null) return { ok: false, reason: "malformed HealthCheckResponse" };
  const name = SERVING_STATUS[serving] ?? `status ${serving}`;
  return { ok: serving === 1, reason: name };
}

/** The ServingStatus of a framed HealthCheckResponse, or null when it is not one. */
function servingStatus(body: Uint8Array): number | null {
  // One uncompressed message (no grpc-accept-encoding was offered, so none may be compressed).
  if (body.length < 5 || body[0] !== 0) return null;
  const len = new DataView(body.buffer, body.byteOffset, body.byteLength).getUint32(1);
  if (body.length !== 5 + len) return null;
  const at = { i: 5 };
  const end = 5 + len;
  let status = 0; // proto3: a field left out is its default
  while (at.i < end) {
    const key = varint(body, at, end);
    if (key === null) return null;
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      const v = varint(body, at, end);
      if (v === null) return null;
      if (field === 1) status = v;
    } else if (wire === 2) {
      const n = varint(body, at, end);
      if (n === null || at.i + n > end) return null;
      at.i += n;
    } else if (wire === 1 || wire === 5) {
      at.i += wire === 1 ? 8 : 4;
      if (at.i > end) return null;
    } else return null;
  }
  return status;
}

function varint(b: Uint8Array, at: { i: number }, end: number): number | null {
  let v = 0;
  for (let shift = 0; shift < 49; shift += 7) {
    if (at.i >= end) return null;
    const byte = b[at.i++];
    v += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return v;
  }
  return null;
}

/** Text from the upstream, cut short and without control characters, for a log line. */
function safeText(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.slice(0, 200).replace(/[\x00-\x1f\x7f]/g, "?");
}

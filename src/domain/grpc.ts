// gRPC over HTTP/2 as a proxy sees it (grpc/doc/PROTOCOL-HTTP2.md): which answers are native gRPC,
// the `grpc-timeout` request field (a call's deadline) read and written, and the status fields
// Prox ends a call with when it fails the call itself.

/**
 * A native gRPC content type: `application/grpc` or `application/grpc+proto`, `+json`… (Envoy's
 * hasGrpcContentType). gRPC-Web (`application/grpc-web…`) is not: its status goes in the body.
 */
export function isGrpcType(contentType: string | null): boolean {
  if (contentType === null || contentType.length < 16) return false;
  if (contentType.slice(0, 16).toLowerCase() !== "application/grpc") return false;
  const next = contentType.charCodeAt(16);
  // The end, `+suffix`, or parameters (`;`, maybe after spaces).
  return Number.isNaN(next) || next === 0x2b || next === 0x3b || next === 0x20 || next === 0x09;
}

/** Milliseconds per `grpc-timeout` unit (TimeoutUnit: Hour, Minute, Second, milli, micro, nano). */
const UNIT_MS: Record<string, number> = {
  H: 3_600_000,
  M: 60_000,
  S: 1_000,
  m: 1,
  u: 1e-3,
  n: 1e-6,
};

/** TimeoutValue is a positive integer of at most 8 ASCII digits, then one TimeoutUnit. */
const GRPC_TIMEOUT = /^([0-9]{1,8})([HMSmun])$/;

/**
 * A `grpc-timeout` value (`100m`, `5S`, `2500000u`) in milliseconds, fractional below one (`500u`:
 * 0.5), or undefined when malformed (nine digits, a sign, spaces, an unknown unit): such a field
 * is ignored, as Envoy ignores it (Grpc::Common::getGrpcTimeout). `0` reads as 0: a deadline that
 * has passed, as gRPC's own servers read it (Envoy alone takes 0 for none).
 */
export function parseGrpcTimeout(value: string): number | undefined {
  const m = GRPC_TIMEOUT.exec(value);
  return m ? Number(m[1]) * UNIT_MS[m[2]] : undefined;
}

/** The largest TimeoutValue (8 digits). */
const MAX_VALUE = 99_999_999;

/**
 * `ms` as a `grpc-timeout` value in the finest unit whose value fits 8 digits, rounded down, so
 * that the field never says more time than is left (grpc-go picks the unit the same way, though
 * it rounds up). At most 99999999H; below one nanosecond, `0n` (the deadline has passed).
 */
export function formatGrpcTimeout(ms: number): string {
  if (!(ms > 0)) return "0n";
  for (const unit of ["n", "u", "m", "S", "M"]) {
    const v = Math.floor(ms / UNIT_MS[unit]);
    if (v <= MAX_VALUE) return `${v}${unit}`;
  }
  return `${Math.min(Math.floor(ms / UNIT_MS.H), MAX_VALUE)}H`;
}

/** gRPC's DEADLINE_EXCEEDED (grpc/doc/statuscodes.md). */
export const DEADLINE_EXCEEDED = 4;

/**
 * `grpc-status` and `grpc-message` fields (a trailers-only head, or trailers): the message
 * percent-encoded as gRPC wants it (printable ASCII but `%` as is), at most 1 KiB of it before
 * encoding (grpc-js refuses heads over 8 KiB), cut on a character, not inside one.
 */
export function grpcStatusFields(status: number, message: string): [string, string][] {
  const text = message.length > 1024 ? [...message].slice(0, 1024).join("") : message;
  return [
    ["grpc-status", String(status)],
    ["grpc-message", text.replace(/[^\x20-\x24\x26-\x7e]/gu, pctEncode)],
  ];
}

const encoder = new TextEncoder();

function pctEncode(c: string): string {
  return Array.from(encoder.encode(c), (b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`)
    .join("");
}

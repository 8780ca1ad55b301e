// Deno's OpenTelemetry (OTEL_DENO=true: spans for Deno.serve and fetch, exported over OTLP) and
// Prox's own HTTP/1.1 upstream client: without this, the upstream's spans would hang off the
// client's span, with Prox's server span beside them instead of between.

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
 * active) the client's context goes on as it came.
 */
export function carryTraceContext(
  headers: Pick<Headers, "delete" | "set">,
  source: (() => [string, string][]) | undefined,
): void {
  if (!source) return;
  const fields = source();
  if (fields.length === 0) return;
  headers.delete("tracestate");
  for (const [k, v] of fields) headers.set(k, v);
}

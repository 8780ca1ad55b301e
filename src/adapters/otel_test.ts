import assert from "node:assert/strict";
import type { TracerProvider } from "@opentelemetry/api";
import { otlpTracesEndpoint, scrubbedUrl, serverSpans } from "./otel.ts";

Deno.test("scrubbedUrl redacts credentials in the query for a span's url.full, and nothing else", () => {
  assert.equal(scrubbedUrl("http://x/a"), "http://x/a");
  assert.equal(
    scrubbedUrl("http://x/a?x=1&access_token=abc&X-Goog-Signature=zz&b=2#frag"),
    "http://x/a?x=1&access_token=REDACTED&X-Goog-Signature=REDACTED&b=2#frag",
  );
  // Names as sent (percent-encoded, +), and parameters without a value.
  assert.equal(
    scrubbedUrl("http://x/?%61ccess_token=s&flag"),
    "http://x/?%61ccess_token=REDACTED&flag",
  );
  assert.equal(scrubbedUrl("http://x/?api+key=1&page=2"), "http://x/?api+key=REDACTED&page=2");
  assert.equal(scrubbedUrl("http://x/?code=oauth&state=s"), "http://x/?code=REDACTED&state=s");
});

/** A tracer provider that keeps what each span was started with and given. */
function recordingProvider() {
  const spans: { name: string; attributes: Record<string, unknown> }[] = [];
  const provider = {
    getTracer: () => ({
      startSpan: () => {
        throw new Error("not used");
      },
      startActiveSpan(
        name: string,
        o: { attributes: Record<string, unknown> },
        _ctx: unknown,
        fn: (span: unknown) => unknown,
      ) {
        const s = { name, attributes: { ...o.attributes } };
        spans.push(s);
        return fn({
          setAttribute: (k: string, v: unknown) => s.attributes[k] = v,
          setStatus() {},
          end() {},
        });
      },
    }),
  };
  return { spans, provider };
}

Deno.test("serverSpans gives Prox's own server spans the HTTP semantic conventions' attributes", async () => {
  const api = await import("@opentelemetry/api");
  const { spans, provider } = recordingProvider();
  api.trace.setGlobalTracerProvider(provider as unknown as TracerProvider);
  try {
    const wrap = (await serverSpans())(() => Promise.resolve(new Response("x")), "3");
    const info = {
      remoteAddr: { hostname: "192.0.2.9", port: 40000 },
      localPort: 8443,
      protocol: "h3",
      tls: true,
    } as const;
    await wrap(new Request("https://api.example.com:8443/v1/a%20b?page=2&access_token=s"), info);
    assert.equal(spans[0].name, "GET");
    assert.deepEqual(spans[0].attributes, {
      "http.request.method": "GET",
      "url.full": "https://api.example.com:8443/v1/a%20b?page=2&access_token=REDACTED",
      "url.scheme": "https",
      "url.path": "/v1/a%20b",
      "url.query": "page=2&access_token=REDACTED",
      "server.address": "api.example.com",
      "server.port": 8443,
      "client.address": "192.0.2.9",
      "network.protocol.name": "http",
      "network.protocol.version": "3",
      "http.response.status_code": 200,
    });
    // A method the conventions do not know: `_OTHER`, the span named "HTTP" (a client's made-up
    // methods must not become span names), the method as sent kept in its own attribute.
    await wrap(new Request("https://x/", { method: "PURGE" }), info);
    assert.equal(spans[1].name, "HTTP");
    assert.equal(spans[1].attributes["http.request.method"], "_OTHER");
    assert.equal(spans[1].attributes["http.request.method_original"], "PURGE");
    assert.equal(spans[1].attributes["server.port"], 443);
    assert.equal(spans[1].attributes["url.query"], undefined);
    assert.equal(spans[1].attributes["error.type"], undefined);
    // A 5xx answer: error.type is its status code.
    await (await serverSpans())(() => Promise.resolve(new Response("", { status: 502 })))(
      new Request("http://x/"),
      info,
    );
    assert.equal(spans[2].attributes["error.type"], "502");
    // Behind accept_proxy_protocol one engine serves HTTP/1.1 and HTTP/2: the version is the
    // request's own (the span had none).
    const relay = (await serverSpans())(() => Promise.resolve(new Response("")));
    await relay(new Request("http://x/"), { ...info, protocol: "h2c" });
    await relay(new Request("http://x/"), { ...info, protocol: "http/1.1" });
    await relay(new Request("http://x/"), { ...info, protocol: "http/1.1", http10: true });
    assert.deepEqual(
      spans.slice(3).map((s) => s.attributes["network.protocol.version"]),
      ["2", "1.1", "1.0"],
    );
  } finally {
    api.trace.disable();
  }
});

Deno.test("otlpTracesEndpoint finds where Deno's exporter sends spans, as the OTLP variables say", () => {
  const env = (vars: Record<string, string>) => (k: string) => vars[k];
  assert.equal(otlpTracesEndpoint(env({})), "http://localhost:4318/v1/traces");
  assert.equal(
    otlpTracesEndpoint(env({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:4318/" })),
    "http://otel:4318/v1/traces",
  );
  assert.equal(
    otlpTracesEndpoint(env({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:4318",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://tempo:4318/custom",
    })),
    "http://tempo:4318/custom",
  );
  assert.equal(
    otlpTracesEndpoint(env({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })),
    "http://localhost:4317",
  );
  assert.equal(
    otlpTracesEndpoint(env({
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel:4317",
    })),
    "http://otel:4317",
  );
  assert.equal(otlpTracesEndpoint(env({ OTEL_TRACES_EXPORTER: "none" })), null);
});

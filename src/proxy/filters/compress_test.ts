import assert from "node:assert/strict";
import { loadConfigText } from "../../config/load.ts";
import { buildSnapshot } from "../snapshot.ts";
import { createHandler } from "../pipeline.ts";
import { ProxyError } from "../../domain/errors.ts";
import { noopMetrics, silentLogger } from "../../ports.ts";
import type { AccessRecord, ClientInfo, CompressionEngine } from "../../ports.ts";

const info: ClientInfo = {
  remoteAddr: { hostname: "192.0.2.7", port: 4000 },
  localPort: 80,
  protocol: "http/1.1",
  tls: false,
};

/** An engine that "compresses" by prefixing each chunk with `>`; it records its life. */
function fakeEngines() {
  const log: string[] = [];
  const make = (coding: string): CompressionEngine => ({
    write(chunk, emit) {
      log.push(`write ${chunk.byteLength}`);
      emit(new Uint8Array([62, ...chunk]));
    },
    end(emit) {
      log.push("end");
      emit(new TextEncoder().encode(`<${coding}`));
    },
    close() {
      log.push("close");
    },
  });
  return { log, make };
}

function handlerFor(
  body: () => ReadableStream<Uint8Array> | null,
  yaml = 'routes:\n  /: { type: proxy, target: "http://10.0.0.1", compress: { min_length: 0 } }\n',
  fields: Record<string, string> = {},
  status = 200,
) {
  const { config, issues } = loadConfigText(`listen_addr: "127.0.0.1:0"\n${yaml}`, {
    file: "t.yaml",
    env: { exists: () => true },
  });
  assert.ok(config, JSON.stringify(issues));
  const snapshot = buildSnapshot(config, { version: 1 });
  const engines = fakeEngines();
  const records: AccessRecord[] = [];
  const handler = createHandler({
    snapshot: () => snapshot,
    upstream: {
      send: () =>
        Promise.resolve(
          new Response(body(), {
            status,
            headers: { "content-type": "text/plain", etag: '"e"', ...fields },
          }),
        ),
      close: () => Promise.resolve(),
    },
    files: { stat: () => Promise.resolve(null), open: () => Promise.resolve(null) },
    clock: { now: () => 1_700_000_000_000, monotonic: () => 0 },
    logger: silentLogger,
    metrics: noopMetrics,
    access: (r) => records.push(r),
    compressor: engines.make,
  });
  // The access line is written once the response is delivered: `delivered()` says when.
  let delivered = () => {};
  const completed = new Promise<void>((r) => delivered = r);
  const get = (ae = "gzip", path = "/a", method = "GET") =>
    handler(new Request(`http://x${path}`, { method, headers: { "accept-encoding": ae } }), {
      ...info,
      completed,
    });
  return { get, engines, records, delivered: () => delivered() };
}

const chunks = (...parts: string[]) => () =>
  ReadableStream.from(parts.map((p) => new TextEncoder().encode(p)));

Deno.test("compression: chunk by chunk through the engine, bytes counted for the access log", async () => {
  const { get, engines, records, delivered } = handlerFor(chunks("ab", "", "cd"));
  const res = await get();
  assert.equal(res.headers.get("content-encoding"), "gzip");
  assert.equal(res.headers.get("etag"), 'W/"e"');
  assert.equal(await res.text(), ">ab>cd<gzip");
  assert.deepEqual(engines.log, ["write 2", "write 2", "end"]);
  delivered();
  // The access line is written in a then() of `completed`.
  for (let i = 0; i < 10 && records.length === 0; i++) await Promise.resolve();
  assert.equal(records[0].bytesOut, 11);
  assert.equal(records[0].incomplete, undefined);
});

Deno.test("compression: a large chunk (a cache hit's whole body) goes through the engine in 64 KiB pieces, each read by the client before the next", async () => {
  // One 8 MiB chunk took 130-240 ms of the event loop in one engine call (every other request
  // waited), and all its output was queued at once, whatever the client's pace.
  const big = new Uint8Array(200 * 1024).map((_, i) => i % 251);
  const { get, engines } = handlerFor(() => ReadableStream.from([big]));
  const reader = (await get()).body!.getReader();
  const first = await reader.read();
  assert.equal(first.value!.byteLength, 1 + 65536);
  assert.deepEqual(engines.log, ["write 65536"]);
  const parts = [first.value!.subarray(1)];
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    parts.push(r.value[0] === 62 ? r.value.subarray(1) : new Uint8Array(0));
  }
  assert.deepEqual(engines.log, ["write 65536", "write 65536", "write 65536", "write 8192", "end"]);
  // The pieces in order: the bytes are the chunk's.
  assert.deepEqual(new Uint8Array(await new Blob(parts).arrayBuffer()), big);
});

Deno.test("compression: a client that leaves cancels the upstream body and frees the engine", async () => {
  let cancelled: unknown = null;
  const { get, engines } = handlerFor(() =>
    new ReadableStream<Uint8Array>({
      pull: (c) => c.enqueue(new Uint8Array(10)),
      cancel: (why) => void (cancelled = why ?? "cancelled"),
    })
  );
  const reader = (await get()).body!.getReader();
  await reader.read();
  await reader.cancel("gone");
  assert.equal(cancelled, "gone");
  assert.equal(engines.log.at(-1), "close");
});

Deno.test("compression: an upstream body that fails ends the response with it and frees the engine", async () => {
  const { get, engines } = handlerFor(() =>
    new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(3));
        c.error(new ProxyError("upstream_reset", "upstream reset"));
      },
    })
  );
  const res = await get();
  const err = await res.text().catch((e) => e);
  assert.match(String(err), /upstream reset/);
  // Tagged with its request, as the upstream's own counter would have done.
  assert.equal((err as ProxyError).request?.route, "/");
  assert.match((err as ProxyError).request?.requestId ?? "", /^[0-9a-f]{8}-[0-9a-z]{6}$/);
  assert.equal(engines.log.at(-1), "close");
});

Deno.test("compression: no engine for a client that accepts none; the answer varies", async () => {
  const { get, engines } = handlerFor(chunks("plain"));
  const res = await get("identity");
  assert.equal(res.headers.get("vary"), "Accept-Encoding");
  assert.equal(res.headers.get("content-encoding"), null);
  assert.equal(await res.text(), "plain");
  assert.deepEqual(engines.log, []);
});

Deno.test("compression: a top-level compress applies to routes without their own", async () => {
  const { get } = handlerFor(
    chunks("x".repeat(2000)),
    `compress: { algorithms: [br] }
routes:
  /: { type: proxy, target: "http://10.0.0.1" }
  /own: { type: proxy, target: "http://10.0.0.1", compress: { algorithms: [zstd] } }
  /off: { type: proxy, target: "http://10.0.0.1", compress: false }
`,
  );
  const enc = async (path: string) => {
    const res = await get("zstd, br", path);
    await res.body?.cancel();
    return res.headers.get("content-encoding");
  };
  assert.equal(await enc("/"), "br");
  assert.equal(await enc("/own/x"), "zstd");
  assert.equal(await enc("/off/x"), null);
});

Deno.test("compression: the upstream's digests of the identity bytes are not sent with the encoded ones", async () => {
  // RFC 9530 §2-3: Content-Digest is of the content as sent, Repr-Digest of the representation
  // with its content coding; Digest (RFC 3230) and Content-MD5 (RFC 1864) likewise.
  const digests = {
    "content-digest": "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
    "repr-digest": "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:",
    "digest": "SHA-256=RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=",
    "content-md5": "Q2hlY2sgSW50ZWdyaXR5IQ==",
  };
  const yaml =
    'routes:\n  /: { type: proxy, target: "http://10.0.0.1", compress: { min_length: 0 } }\n';
  const { get } = handlerFor(chunks("ab"), yaml, digests);
  const res = await get();
  assert.equal(res.headers.get("content-encoding"), "gzip");
  for (const name of Object.keys(digests)) assert.equal(res.headers.get(name), null, name);
  await res.body?.cancel();
  // Sent as it is, the answer keeps them.
  const plain = await get("identity");
  for (const [name, v] of Object.entries(digests)) assert.equal(plain.headers.get(name), v, name);
  await plain.body?.cancel();
});

Deno.test("compression: a 205 has no content, also for HEAD (was a 500: a Response refuses one)", async () => {
  // RFC 9110 §15.3.6: a 205 carries no content, so it gets no coding and no Vary.
  const yaml =
    'routes:\n  /: { type: proxy, target: "http://10.0.0.1", compress: { min_length: 0 } }\n';
  const { get, engines } = handlerFor(() => null, yaml, {}, 205);
  for (const method of ["GET", "HEAD"]) {
    const res = await get("gzip", "/a", method);
    assert.equal(res.status, 205, method);
    assert.equal(res.headers.get("content-encoding"), null, method);
    assert.equal(res.headers.get("vary"), null, method);
    assert.equal(res.body, null, method);
  }
  assert.deepEqual(engines.log, []);
});

// An HTTP/1.1 upstream's chunked trailer fields (RFC 9112 §7.1.2) go on to clients that take them,
// as an HTTP/2 upstream's do: after the body over HTTP/2, in the last chunk to an HTTP/1.1 client
// that sent `TE: trailers`; fields a trailer must not hold, and malformed lines, left out.
import assert from "node:assert/strict";
import { interopTest, run } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";

// Prox's own engines answer these (PROX_H1_ENGINE=deno runs the suite on Deno.serve).
onProxEngines();

/** An upstream that answers every request with a chunked body and trailers, raw. */
function chunkedUpstream() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const answer = new TextEncoder().encode(
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n" +
      "trailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc \r\ncontent-length: 99\r\n" +
      "bad name: x\r\nx-ctl: a\x01b\r\nx-empty:\r\n\r\n",
  );
  const serving = (async () => {
    for await (const conn of listener) {
      (async () => {
        const buf = new Uint8Array(16384);
        let text = "";
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            text += new TextDecoder().decode(buf.subarray(0, n));
            while (text.includes("\r\n\r\n")) {
              text = text.slice(text.indexOf("\r\n\r\n") + 4);
              await conn.write(answer);
            }
          }
        } catch { /* closed */ }
        try {
          conn.close();
        } catch { /* already */ }
      })();
    }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    async [Symbol.asyncDispose]() {
      listener.close();
      await serving.catch(() => {});
    },
  };
}

interopTest(
  "an HTTP/1.1 upstream's trailers reach HTTP/2 clients after the body, and HTTP/1.1 clients that take them",
  ["curl"],
  async () => {
    await using up = chunkedUpstream();
    await using prox = await startProxy(
      `health_check: { enabled: false }\nroutes:\n  "/": { type: proxy, target: "${up.url}" }\n`,
    );
    // HTTP/2 (h2c): curl writes the trailers after the body on the head's output (here the same).
    const h2 = await run("curl", [
      "-sS",
      "--http2-prior-knowledge",
      "-D",
      "-",
      `http://127.0.0.1:${prox.port}/`,
    ]);
    assert.equal(h2.code, 0, h2.stderr);
    assert.match(h2.stdout, /\r\n\r\nhellox-checksum: abc\r\nx-empty: \r\n$/);

    // HTTP/1.1 with TE: trailers: the last chunk carries them; without it, a bare last chunk.
    const raw = async (te: boolean) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
      try {
        await conn.write(new TextEncoder().encode(
          `GET / HTTP/1.1\r\nHost: a\r\n${te ? "TE: trailers\r\n" : ""}Connection: close\r\n\r\n`,
        ));
        let out = "";
        const buf = new Uint8Array(16384);
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) return out;
          out += new TextDecoder().decode(buf.subarray(0, n));
        }
      } finally {
        conn.close();
      }
    };
    const withTe = await raw(true);
    assert.match(withTe, /\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\nx-empty: \r\n\r\n$/);
    const without = await raw(false);
    assert.match(without, /\r\n5\r\nhello\r\n0\r\n\r\n$/);
  },
);

import assert from "node:assert/strict";
import { decodeBase64Segments, readWebText } from "./grpc_web.ts";
import { ProxyError } from "../../domain/errors.ts";

const ascii = (s: string) => new TextEncoder().encode(s);
const stream = (chunks: Uint8Array[]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const chunk of chunks) c.enqueue(chunk);
      c.close();
    },
  });

Deno.test("decodeBase64Segments: padded pieces one after another, white space, an unpadded end", () => {
  const dec = (s: string) => new TextDecoder().decode(decodeBase64Segments(ascii(s)));
  assert.equal(dec("aGk="), "hi");
  assert.equal(dec("aGk=aGVsbG8="), "hihello");
  assert.equal(dec("aA==aGk=aGV5"), "hhihey");
  assert.equal(dec(" aGV5\r\naGk\t="), "heyhi");
  assert.equal(dec("aGk"), "hi");
  assert.equal(dec(""), "");
  for (const bad of ["a", "aGk==", "a===", "aG=k", "aGk=!", "aGVsbG8=a", "aGk-", "=aGk"]) {
    assert.throws(
      () => decodeBase64Segments(ascii(bad)),
      (e) => e instanceof ProxyError && e.kind === "bad_request",
      bad,
    );
  }
  const all = Uint8Array.from({ length: 256 * 3 }, (_, i) => i & 0xff);
  let bin = "";
  for (const b of all) bin += String.fromCharCode(b);
  assert.deepEqual(decodeBase64Segments(ascii(btoa(bin))), all);
});

Deno.test("readWebText reads 4 MiB in chunks in a few ms, not a character at a time", async () => {
  const chunk = ascii("QUFB".repeat(16 * 1024)); // 64 KiB
  const chunks = Array.from({ length: 64 }, () => chunk);
  const t0 = performance.now();
  const text = await readWebText(stream(chunks), 4 << 20, 0);
  const ms = performance.now() - t0;
  assert.equal(text.byteLength, 4 << 20);
  // A string built a character at a time: about 400 ms and 130 MB of heap for this.
  assert.ok(ms < 100, `took ${ms.toFixed(0)} ms`);
  await assert.rejects(
    () => readWebText(stream(chunks), (4 << 20) - 1, 0),
    (e) => e instanceof ProxyError && e.kind === "body_too_large",
  );
});

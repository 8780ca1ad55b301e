import assert from "node:assert/strict";
import { startRelay } from "./websocket_relay.ts";

Deno.test("startRelay: a TMPDIR too long for a Unix socket path falls back to /tmp and leaves nothing", async () => {
  const base = await Deno.makeTempDir();
  // 108 bytes is all a Unix socket path may take: this one is longer with the relay's own part.
  const long = `${base}/${"d".repeat(100)}`;
  await Deno.mkdir(long);
  const saved = Deno.env.get("TMPDIR");
  Deno.env.set("TMPDIR", long);
  const upstream = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (upstream.addr as Deno.NetAddr).port;
  const seen = (async () => {
    const c = await upstream.accept();
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    await c.write(
      new TextEncoder().encode(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
      ),
    );
    c.close();
    return text;
  })();
  try {
    const relay = await startRelay(new URL(`ws://127.0.0.1:${port}/`), {
      proxyHeader: new TextEncoder().encode("PROXY UNKNOWN\r\n"),
      connectTimeout: 2_000,
    });
    try {
      const res = await fetch(`http://127.0.0.1:${port}/a%2Fb?x=1`, { client: relay.client });
      assert.equal(await res.text(), "ok");
    } finally {
      relay.close();
      relay.client.close();
    }
    assert.match(await seen, /^PROXY UNKNOWN\r\nGET \/a%2Fb\?x=1 HTTP\/1\.1\r\n/);
    assert.deepEqual([...Deno.readDirSync(long)], [], "no relay directory left in TMPDIR");
  } finally {
    if (saved === undefined) Deno.env.delete("TMPDIR");
    else Deno.env.set("TMPDIR", saved);
    upstream.close();
    await Deno.remove(base, { recursive: true });
  }
});

// Upstream responses at the edges of HTTP/1.1 framing (RFC 9112 §4–§7), relayed to a real client:
// a raw upstream writes every byte, fetch and a raw socket read what Prox makes of them.
import assert from "node:assert/strict";
import { rawServer, readRequest } from "../_upstream_peers.ts";
import { startProxy } from "./_proxy.ts";

/** A raw upstream answering `GET /NAME` with `responses[NAME]` on a kept-open connection. */
function upstream(responses: Record<string, string>) {
  let conns = 0;
  const server = rawServer(async (c) => {
    conns++;
    for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
      const name = head.slice(head.indexOf("/") + 1, head.indexOf(" HTTP/"));
      await c.write(Uint8Array.from(responses[name], (ch) => ch.charCodeAt(0)));
    }
  });
  return { server, conns: () => conns };
}

async function proxyTo(url: string) {
  return await startProxy(`
health_check: { enabled: false }
routes:
  "/": { type: proxy, target: "${url}", retries: { attempts: 0 } }
`);
}

/** The raw response head Prox sends for one request on a fresh connection. */
async function rawHead(port: number, request: string): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(new TextEncoder().encode(request));
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const n = await c.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.slice(0, text.indexOf("\r\n\r\n")).toLowerCase();
  } finally {
    c.close();
  }
}

Deno.test("a response with Transfer-Encoding and Content-Length reaches the client whole", async () => {
  const up = upstream({
    both: "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n" +
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
  });
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  for (let i = 0; i < 2; i++) {
    const res = await fetch(`${prox.url}/both`);
    // The stated length (3) would have cut the decoded body to "hel" (RFC 9112 §6.3).
    assert.equal(res.headers.get("content-length"), null);
    assert.equal(await res.text(), "hello world");
  }
  assert.equal(up.conns(), 2, "a connection that sent such a response is not reused");
});

Deno.test("HEAD without an upstream length claims none; a 205 passes without content", async () => {
  const up = upstream({
    chunked: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n",
    sized: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
    reset: "HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n\r\n",
  });
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  const head = (path: string) =>
    rawHead(prox.port, `HEAD /${path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n`);
  const chunked = await head("chunked");
  assert.match(chunked, /^http\/1\.1 200 /);
  // "content-length: 0" would tell the client the GET body is empty (RFC 9110 §9.3.2).
  assert.doesNotMatch(chunked, /content-length/);
  assert.match(chunked, /content-type: text\/plain/);
  assert.match(await head("sized"), /content-length: 1234/);
  // A 205 used to fail as 502: the Fetch API refuses a Response body with it.
  const reset = await fetch(`${prox.url}/reset`);
  assert.equal(reset.status, 205);
  assert.equal(await reset.text(), "");
});

Deno.test("malformed upstream framing is refused, not guessed at", async () => {
  const up = upstream({
    fold:
      "HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    gzip:
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n",
    status: "HTTP/1.1 2001 OK\r\nContent-Length: 2\r\n\r\nok",
    crlf: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\n0\r\n\r\n",
    word: "HTTP/1.1 200 OK\r\nX-Word: voil\xc3\xa0\r\nContent-Length: 2\r\n\r\nok",
  });
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  for (const path of ["fold", "gzip", "status"]) {
    const res = await fetch(`${prox.url}/${path}`);
    assert.equal(res.status, 502, path);
    await res.body?.cancel();
  }
  // Chunk data not followed by CRLF: the head went out, so the body ends in an error.
  const crlf = await fetch(`${prox.url}/crlf`);
  assert.equal(crlf.status, 200);
  await assert.rejects(crlf.text());
  // A value's last byte is kept even when it is 0xA0 (the end of "à" in UTF-8).
  const word = await fetch(`${prox.url}/word`);
  assert.deepEqual(
    Uint8Array.from(word.headers.get("x-word")!, (ch) => ch.charCodeAt(0)),
    new TextEncoder().encode("voilà"),
  );
  await word.body?.cancel();
});

// Upstream responses at the edges of HTTP/1.1 framing (RFC 9112 §4–§7), relayed to a real client:
// a raw upstream writes every byte, fetch and a raw socket read what Prox makes of them.
import assert from "node:assert/strict";
import { rawServer, readRequest, writeAll } from "../_upstream_peers.ts";
import { startProxy } from "./_proxy.ts";

/** A raw upstream answering `GET /NAME` with `responses[NAME]` on a kept-open connection. */
function upstream(responses: Record<string, string>) {
  let conns = 0;
  const server = rawServer(async (c) => {
    conns++;
    for (let head = await readRequest(c); head !== null; head = await readRequest(c)) {
      const name = head.slice(head.indexOf("/") + 1, head.indexOf(" HTTP/"));
      await writeAll(c, Uint8Array.from(responses[name], (ch) => ch.charCodeAt(0)));
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
  // Nor on a response without a body: the length would describe a body the GET would not have.
  const head = await rawHead(
    prox.port,
    "HEAD /both HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
  );
  assert.match(head, /^http\/1\.1 200 /);
  assert.doesNotMatch(head, /content-length/);
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

Deno.test("a framing field with bytes besides digits, tokens and SP/HTAB is refused, not trimmed", async () => {
  // JavaScript's trim() also strips NBSP (0xA0, obs-text read as Latin-1), VT, FF…: "2\xa0" was
  // taken as a Content-Length of 2 and sent on as it came, "chunked\xa0" as chunked. Neither is
  // valid (RFC 9110 §8.6: 1*DIGIT; RFC 9112 §7: a coding is a token), and a proxy must answer an
  // invalid Content-Length with 502 (RFC 9112 §6.3).
  const up = upstream({
    cl: "HTTP/1.1 200 OK\r\nContent-Length: 2\xa0\r\n\r\nok",
    list: "HTTP/1.1 200 OK\r\nContent-Length: 2,\xa02\r\n\r\nok",
    te: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\xa0\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    good: "HTTP/1.1 200 OK\r\nContent-Length: 2 , 2\r\n\r\nok",
  });
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  for (const path of ["cl", "list", "te"]) {
    const res = await fetch(`${prox.url}/${path}`);
    assert.equal(res.status, 502, path);
    await res.body?.cancel();
  }
  // A list of equal values with OWS around the commas is still one length (RFC 9110 §5.6.1).
  const good = await fetch(`${prox.url}/good`);
  assert.equal(good.headers.get("content-length"), "2");
  assert.equal(await good.text(), "ok");
});

Deno.test("chunk size lines are held to their grammar and trailers to a size", async () => {
  const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  // 80 KiB of trailer fields: more than the 64 KiB a head or a request's trailers may take.
  const field = "x-t: " + "a".repeat(1017) + "\r\n";
  const trailers = field.repeat(80);
  const up = upstream({
    // "2 5" is no chunk size (and "25" would be 0x25): it was read as 2, the rest ignored.
    space: chunked + "2 5\r\nok\r\n0\r\n\r\n",
    cr: chunked + "2\r5\r\nok\r\n0\r\n\r\n",
    nul: chunked + "2;a\x00b\r\nok\r\n0\r\n\r\n",
    big: chunked + "2\r\nok\r\n0\r\n" + trailers + "\r\n",
    // What the grammar allows: BWS, extensions with quoted strings, leading zeros, a few trailers.
    good: chunked +
      '02 ;a=1; b="x;\\"y" \r\nok\r\n0;z\r\nx-sum: 1\r\n' + field.repeat(60) + "\r\n",
  });
  await using _up = up.server;
  await using prox = await proxyTo(up.server.url);
  for (const path of ["space", "cr", "nul", "big"]) {
    const res = await fetch(`${prox.url}/${path}`);
    // The head went out before the body showed the fault: the body ends in an error.
    assert.equal(res.status, 200, path);
    await assert.rejects(res.text(), path);
  }
  const good = await fetch(`${prox.url}/good`);
  assert.equal(await good.text(), "ok");
});

// The fixed corpus of the differential test of the two HTTP/1.1 engines (_h1_diff.ts): variants
// of the requests the engine serves itself, the odd ones at its edges (which it relays), and one
// request for each way the recording upstream can answer (_h1_diff_upstream.ts). Random inputs
// built from these are in _h1_diff_random.ts.
import type { Input } from "./_h1_diff.ts";
import { ANSWER_MODES } from "./_h1_diff_upstream.ts";

/** A request head (Host first unless `host` is null) and body. */
export function req(
  method: string,
  target: string,
  fields: string[] = [],
  o: { host?: string | null; body?: string; version?: string } = {},
): string {
  const host = o.host === undefined ? "a.test" : o.host;
  let s = `${method} ${target} ${o.version ?? "HTTP/1.1"}\r\n`;
  if (host !== null) s += `Host: ${host}\r\n`;
  for (const f of fields) s += f + "\r\n";
  return s + "\r\n" + (o.body ?? "");
}

const one = (name: string, text: string): Input => ({ name, writes: [text] });

/** The fixed corpus: each case names what it tries. */
export function corpus(): Input[] {
  const out: Input[] = [];
  // Methods, with and without bodies.
  for (const m of ["GET", "HEAD", "DELETE", "OPTIONS", "FOO", "M-SEARCH", "get", "head", "Get"]) {
    out.push(one(`method ${m}`, req(m, "/m")));
  }
  for (const m of ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "post", "FOO"]) {
    out.push(
      one(`method ${m} with a body`, req(m, "/m", ["Content-Length: 5"], { body: "hello" })),
    );
  }
  out.push(one("POST without a body", req("POST", "/m")));
  out.push(one("POST with Content-Length 0", req("POST", "/m", ["Content-Length: 0"])));
  out.push(one("GET with Content-Length 0", req("GET", "/m", ["Content-Length: 0"])));
  out.push(one("HEAD with Content-Length 0", req("HEAD", "/m", ["Content-Length: 0"])));
  out.push(one("get with a body", req("get", "/m", ["Content-Length: 2"], { body: "hi" })));
  out.push(one("GET with a body", req("GET", "/m", ["Content-Length: 2"], { body: "hi" })));

  // Targets.
  const targets = [
    "/",
    "/a/b?c=d&e",
    "/%7Euser",
    "/%2e%2e/x",
    "//double//slash",
    "/a/../b",
    "/a/./b",
    "/a%2Fb",
    "/caf%C3%A9",
    "/?",
    "/??x",
    "/#frag",
    "/a#b?c",
    "/a\\b",
    "/a\\..\\b",
    "/<x>",
    '/"q"',
    "/{x}",
    "/a|b",
    "/a^b",
    "/a`b",
    "/a;b",
    "/api/..;/x",
    "/x?a=<b>",
    '/x?a="b"',
    "/x?q=a\\b",
    "/x?q={}",
    "/x?q=|^`",
    "/x?a#b",
    "/%",
    "/%zz",
    "/%00",
    "/a%20b",
    "/a+b",
    "/~!$&'()*+,;=:@",
    "/x?~!$&'()*+,;=:@/?",
    "/" + "x".repeat(8000),
    "/q?" + "y".repeat(60_000),
    "/old/x?y=1",
    "/files/a.txt",
    "/files/../a.txt",
    "/files/missing",
  ];
  for (const t of targets) out.push(one(`target ${t.slice(0, 40)}`, req("GET", t)));
  out.push(one("asterisk target", req("OPTIONS", "*")));
  // Only OPTIONS takes `*` (RFC 9112 §3.2.4); methods are case-sensitive (RFC 9110 §9.1), so
  // `options *` is refused as `GET *` is, and the connection after it closes on both engines.
  for (const m of ["GET", "HEAD", "FOO", "options", "Options"]) {
    out.push(one(`asterisk target with ${m}`, req(m, "*") + req("GET", "/m")));
  }
  out.push(one("absolute-form", req("GET", "http://b.test/x")));
  out.push(
    one("absolute-form with another Host", req("GET", "http://b.test/x", [], { host: "a.test" })),
  );
  out.push(one("authority-form CONNECT", req("CONNECT", "a.test:443")));
  out.push(one("TRACE", req("TRACE", "/t")));

  // Hosts.
  const hosts = [
    "b.test",
    "B.TEST",
    "b.test.",
    "b.test:8080",
    "b.test:",
    "b.test:99999",
    "[::1]",
    "[::1]:80",
    "[::1",
    "127.0.0.1",
    "127.0.0.1:0",
    "",
    "a b",
    "a@b.test",
    "a/b",
    "a?b",
    "a#b",
    "a:b:c",
    "a_b",
    "a%2eb",
    "xn--bcher-kva.example",
    "b\xfccher.example",
    '"b.test"',
    "b.test,c.test",
    "*",
  ];
  for (const h of hosts) out.push(one(`host "${h}"`, req("GET", "/h", [], { host: h })));
  out.push(one("no Host", req("GET", "/h", [], { host: null })));
  out.push(one("two Hosts", req("GET", "/h", ["Host: b.test"])));
  out.push(one("two equal Hosts", req("GET", "/h", ["Host: a.test"])));
  out.push(one("Host late", req("GET", "/h", ["X-A: 1", "Host: b.test"], { host: null })));

  // Fields.
  const fieldCases: [string, string[]][] = [
    ["duplicate fields", ["X-A: 1", "X-B: 2", "X-A: 3"]],
    ["empty value", ["X-E:", "X-F: "]],
    ["tab in value", ["X-T: a\tb"]],
    ["obs-text value", ["X-O: caf\xe9 \xff"]],
    ["DEL in value", ["X-D: a\x7fb"]],
    ["NUL in value", ["X-N: a\x00b"]],
    ["CTL in value", ["X-C: a\x01b"]],
    ["spaces around value", ["X-S:    spaced out   "]],
    ["no space after colon", ["X-S:tight"]],
    ["space before colon", ["X-S : v"]],
    ["tab before colon", ["X-S\t: v"]],
    ["obs-fold", ["X-S: a", " b"]],
    ["obs-fold tab", ["X-S: a", "\tb"]],
    ["non-ASCII name", ["X-\xe9: v"]],
    ["empty name", [": v"]],
    ["name with slash", ["X/Y: v"]],
    ["Connection names a field", ["Connection: x-a", "X-A: 1", "X-B: 2"]],
    ["Connection names Host-ish fields", ["Connection: x-forwarded-for, cookie", "Cookie: a=1"]],
    ["Connection close", ["Connection: close"]],
    ["Connection Close upper", ["Connection: CLOSE"]],
    ["Connection keep-alive", ["Connection: keep-alive"]],
    ["Connection close in a list", ["Connection: keep-alive, close"]],
    ["Connection closed (not close)", ["Connection: closed"]],
    ["two Connection fields", ["Connection: x-a", "Connection: close", "X-A: 1"]],
    ["Connection upgrade without Upgrade", ["Connection: upgrade"]],
    ["TE trailers", ["TE: trailers", "Connection: TE"]],
    ["TE gzip", ["TE: gzip"]],
    ["Keep-Alive field", ["Keep-Alive: timeout=5"]],
    ["Proxy-Connection", ["Proxy-Connection: close"]],
    ["Proxy-Authorization", ["Proxy-Authorization: Basic eDp5"]],
    ["Trailer field", ["Trailer: x-t"]],
    ["Upgrade websocket", ["Connection: Upgrade", "Upgrade: websocket"]],
    ["Upgrade h2c", [
      "Connection: Upgrade, HTTP2-Settings",
      "Upgrade: h2c",
      "HTTP2-Settings: AAMAAABkAAQAAP__",
    ]],
    ["Expect 100-continue no body", ["Expect: 100-continue"]],
    ["Expect other", ["Expect: tea"]],
    ["X-Forwarded-For", ["X-Forwarded-For: 1.2.3.4"]],
    ["X-Forwarded-Host and Proto", ["X-Forwarded-Host: evil.test", "X-Forwarded-Proto: https"]],
    ["X-Real-IP", ["X-Real-IP: 1.2.3.4"]],
    ["X-Request-Id", ["X-Request-Id: mine-1"]],
    ["Forwarded", ["Forwarded: for=1.2.3.4"]],
    ["Via", ["Via: 1.1 other"]],
    ["two Cookies", ["Cookie: a=1", "Cookie: b=2"]],
    ["Cookie and cookie", ["Cookie: a=1", "cookie: b=2"]],
    ["two Set-Cookie in a request", ["Set-Cookie: a=1", "Set-Cookie: b=2"]],
    ["Accept-Encoding", ["Accept-Encoding: gzip, br"]],
    ["Range", ["Range: bytes=0-3"]],
    ["If-None-Match", ["If-None-Match: *"]],
    ["Authorization", ["Authorization: Bearer x"]],
    ["mixed-case names", ["X-MiXeD: 1", "CONTENT-TYPE: text/plain", "uSeR-aGeNt: me"]],
    ["Content-Type only", ["Content-Type: text/plain"]],
    ["127 fields", Array.from({ length: 127 }, (_, i) => `X-F${i}: ${i}`)],
    ["128 fields", Array.from({ length: 128 }, (_, i) => `X-F${i}: ${i}`)],
    ["long value", ["X-L: " + "v".repeat(20_000)]],
    ["huge head", Array.from({ length: 30 }, (_, i) => `X-H${i}: ${"h".repeat(2500)}`)],
  ];
  for (const [name, fields] of fieldCases) out.push(one(name, req("GET", "/f", fields)));
  const lengths = [
    "+5",
    " 5 ",
    "05",
    "5, 5",
    "5,5",
    "0x5",
    "5.0",
    "-5",
    "99999999999999999999",
    "",
    "5 5",
  ];
  for (const l of lengths) {
    out.push(
      one(`Content-Length "${l}"`, req("POST", "/cl", [`Content-Length: ${l}`], { body: "hello" })),
    );
  }
  out.push(
    one(
      "two Content-Lengths equal",
      req("POST", "/cl", ["Content-Length: 5", "Content-Length: 5"], { body: "hello" }),
    ),
  );
  out.push(
    one(
      "two Content-Lengths differ",
      req("POST", "/cl", ["Content-Length: 5", "Content-Length: 6"], { body: "hello!" }),
    ),
  );
  out.push(
    one(
      "Content-Length 65536",
      req("POST", "/cl", ["Content-Length: 65536"], { body: "z".repeat(65536) }),
    ),
  );
  out.push(
    one(
      "Content-Length 65537",
      req("POST", "/cl", ["Content-Length: 65537"], { body: "z".repeat(65537) }),
    ),
  );
  out.push(
    one(
      "Content-Length short of the body",
      req("POST", "/cl", ["Content-Length: 3"], { body: "hello" }),
    ),
  );
  out.push(
    one(
      "Content-Length with Expect",
      req("POST", "/cl", ["Content-Length: 5", "Expect: 100-continue"], { body: "hello" }),
    ),
  );
  const codings = [
    "chunked",
    "Chunked",
    " chunked",
    "chunked, chunked",
    "gzip, chunked",
    "gzip",
    "identity",
    "chunked\x0b",
  ];
  for (const te of codings) {
    out.push(
      one(
        `Transfer-Encoding "${te}"`,
        req("POST", "/te", [`Transfer-Encoding: ${te}`], { body: "5\r\nhello\r\n0\r\n\r\n" }),
      ),
    );
  }
  // Chunked bodies the engine decodes itself (chunked.ts), each with a request pipelined behind
  // it: where the body ends decides where the next request begins.
  const bodies: [string, string][] = [
    ["extensions", '5;a=b;c="d e"\r\nhello\r\n0;z\r\n\r\n'],
    ["space before an extension", "5 ;a\r\nhello\r\n0\r\n\r\n"],
    ["leading zeros, uppercase hex", "0000A\r\nhelloworld\r\n000\r\n\r\n"],
    ["trailer fields", "5\r\nhello\r\n0\r\nX-T: 1\r\nContent-Length: 9\r\n\r\n"],
    [
      "40 KiB of trailer fields",
      `5\r\nhello\r\n0\r\n${`X-T: ${"t".repeat(1000)}\r\n`.repeat(40)}\r\n`,
    ],
    ["a trailer line without a colon", "5\r\nhello\r\n0\r\nX-T\r\n\r\n"],
    ["a trailer name that is not a token", "5\r\nhello\r\n0\r\nX T: 1\r\n\r\n"],
    ["data longer than its size", "5\r\nhelloXX\r\n0\r\n\r\n"],
    ["data shorter than its size", "7\r\nhello\r\n0\r\n\r\n"],
    ["a bare LF after the size", "5\nhello\r\n0\r\n\r\n"],
    ["a size that is not hex", "5g\r\nhello\r\n0\r\n\r\n"],
    ["no final CRLF", "5\r\nhello\r\n0\r\n"],
  ];
  for (const [name, body] of bodies) {
    out.push(
      one(
        `chunked body: ${name}`,
        req("POST", "/te", ["Transfer-Encoding: chunked"], { body }) + req("GET", "/after"),
      ),
    );
  }
  out.push(
    one(
      "TE and CL",
      req("POST", "/te", ["Transfer-Encoding: chunked", "Content-Length: 3"], {
        body: "5\r\nhello\r\n0\r\n\r\n",
      }),
    ),
  );
  out.push(
    one(
      "CL and TE",
      req("POST", "/te", ["Content-Length: 3", "Transfer-Encoding: chunked"], {
        body: "5\r\nhello\r\n0\r\n\r\n",
      }),
    ),
  );

  // Versions and line ends.
  out.push(one("HTTP/1.0", req("GET", "/v", [], { version: "HTTP/1.0" })));
  out.push(
    one(
      "HTTP/1.0 keep-alive",
      req("GET", "/v", ["Connection: keep-alive"], { version: "HTTP/1.0" }),
    ),
  );
  out.push(one("HTTP/1.0 without Host", req("GET", "/v", [], { version: "HTTP/1.0", host: null })));
  out.push(
    one("without Host, through a proxy", req("GET", "/v", ["Via: 1.1 other"], { host: null })),
  );
  // A head the engine relays (a bare LF), without Host, and one on a connection relayed earlier.
  out.push(one("without Host, relayed", "GET /v HTTP/1.1\r\nX-A: 1\nX-B: 2\r\n\r\n"));
  out.push(
    one(
      "without Host, after a relayed one",
      "GET /v HTTP/1.1\r\nHost: a.test\r\nX-A: 1\nX-B: 2\r\n\r\nGET /w HTTP/1.1\r\n\r\n",
    ),
  );
  // HTTP/1.0 with Host is the engine's own: keep-alive as asked, no chunks, no 100.
  const v10 = { version: "HTTP/1.0" };
  const ka = "Connection: keep-alive";
  out.push(
    one(
      "HTTP/1.0 keep-alive, pipelined",
      req("GET", "/v1", [ka], v10) + req("HEAD", "/v2", [ka], v10) + req("GET", "/v3", [], v10) +
        req("GET", "/never", [ka], v10),
    ),
  );
  for (const answer of ["chunked", "trailers", "close", "http10close", "204", "304", "empty"]) {
    out.push(
      one(
        `HTTP/1.0 keep-alive, upstream answer ${answer}`,
        req("GET", "/a", [ka, `X-Answer: ${answer}`], v10) + req("GET", "/after", [ka], v10),
      ),
    );
  }
  out.push(one("HTTP/1.0 HEAD, chunked answer", req("HEAD", "/h", ["X-Answer: headchunked"], v10)));
  out.push(
    one(
      "HTTP/1.0 POST with a body, keep-alive",
      req("POST", "/p", [ka, "Content-Length: 5"], { ...v10, body: "hello" }) +
        req("GET", "/after", [], v10),
    ),
  );
  out.push(
    one(
      "HTTP/1.0 Connection: keep-alive, close",
      req("GET", "/v", ["Connection: Keep-Alive, close"], v10) + req("GET", "/never", [], v10),
    ),
  );
  out.push(
    one(
      "HTTP/1.0 Expect: 100-continue",
      req("PUT", "/e", ["Expect: 100-continue", "Content-Length: 2"], { ...v10, body: "hi" }),
    ),
  );
  out.push(one("HTTP/1.0 Keep-Alive field only", req("GET", "/v", ["Keep-Alive: timeout=5"], v10)));
  out.push(one("HTTP/1.2", req("GET", "/v", [], { version: "HTTP/1.2" })));
  out.push(one("HTTP/2.0", req("GET", "/v", [], { version: "HTTP/2.0" })));
  out.push(one("http/1.1 lowercase", req("GET", "/v", [], { version: "http/1.1" })));
  out.push(one("bare LF", req("GET", "/v", ["X-A: 1"]).replaceAll("\r\n", "\n")));
  out.push(
    one("bare LF in one field", "GET /v HTTP/1.1\r\nHost: a.test\r\nX-A: 1\nX-B: 2\r\n\r\n"),
  );
  out.push(one("bare CR", "GET /v HTTP/1.1\r\nHost: a.test\r\nX-A: 1\rX-B: 2\r\n\r\n"));
  out.push(one("two spaces after method", "GET  /v HTTP/1.1\r\nHost: a.test\r\n\r\n"));
  out.push(one("tab separator", "GET\t/v HTTP/1.1\r\nHost: a.test\r\n\r\n"));
  out.push(one("trailing space on request line", "GET /v HTTP/1.1 \r\nHost: a.test\r\n\r\n"));
  out.push(one("leading CRLF", "\r\nGET /v HTTP/1.1\r\nHost: a.test\r\n\r\n"));
  out.push(one("leading CRLFs", "\r\n\r\n\r\nGET /v HTTP/1.1\r\nHost: a.test\r\n\r\n"));
  out.push(one("leading space", " GET /v HTTP/1.1\r\nHost: a.test\r\n\r\n"));
  out.push(one("garbage", "HELLO\r\n\r\n"));
  out.push(one("NUL first", "\x00GET /v HTTP/1.1\r\nHost: a.test\r\n\r\n"));

  // Pipelining, splitting, pauses.
  const pipeline = req("GET", "/p1") + req("HEAD", "/p2") +
    req("POST", "/p3", ["Content-Length: 5"], { body: "hello" }) +
    req("GET", "/p4", ["X-Answer: chunked"]) +
    req("GET", "/p5", ["Connection: close"]);
  out.push(one("pipelined, one write", pipeline));
  out.push({ name: "pipelined, byte by byte", writes: [...pipeline] });
  out.push({
    name: "head then body after a pause",
    writes: [req("POST", "/late", ["Content-Length: 5"]), "hello"],
    pauseMs: 30,
  });
  out.push(
    one(
      "pipelined after a relayed one",
      req("GET", "/r", ["Transfer-Encoding: chunked"], { body: "0\r\n\r\n" }) +
        req("GET", "/after"),
    ),
  );
  out.push(
    one("pipelined with a bad one", req("GET", "/ok") + "BAD\r\n\r\n" + req("GET", "/never")),
  );
  out.push(
    one("pipelined with a bare LF one", req("GET", "/ok") + "GET /lf HTTP/1.1\nHost: a.test\n\n"),
  );
  out.push(
    one(
      "pipelined, Connection close first",
      req("GET", "/c", ["Connection: close"]) + req("GET", "/never"),
    ),
  );

  // Bodies the engine streams (larger than 64 KiB, or still on their way), and early answers.
  const big = "B".repeat(200_000);
  out.push({
    name: "streamed body in three writes",
    writes: [
      req("POST", "/sb", ["Content-Length: 200000"], { body: big.slice(0, 1000) }),
      big.slice(1000, 150_000),
      big.slice(150_000) + req("GET", "/after"),
    ],
    pauseMs: 10,
  });
  out.push({
    name: "body in ten pieces, then a request",
    writes: [
      req("PUT", "/sb", ["Content-Length: 100"]),
      ...Array.from({ length: 10 }, (_, i) => "0123456789" + (i === 9 ? req("GET", "/after") : "")),
    ],
    pauseMs: 5,
  });
  out.push(
    one(
      "large body, upstream down",
      req("POST", "/dead", ["Content-Length: 200000"], { body: big }) + req("GET", "/after"),
    ),
  );
  out.push(
    one(
      "large body over the route's limit",
      req("POST", "/small", ["Content-Length: 200000"], { body: big }) + req("GET", "/after"),
    ),
  );
  out.push({
    name: "body over the route's limit, late",
    writes: [
      req("POST", "/small", ["Content-Length: 20"]),
      "0123456789",
      "0123456789" + req("GET", "/after"),
    ],
    pauseMs: 10,
  });
  out.push(
    one(
      "large body to a redirect",
      req("POST", "/old/x", ["Content-Length: 200000"], { body: big }) + req("GET", "/after"),
    ),
  );
  out.push(
    one(
      "large body, answer early",
      req("POST", "/sb", ["Content-Length: 200000", "X-Answer: 418"], { body: big }) +
        req("GET", "/after"),
    ),
  );

  // Answers (the upstream's way of answering), for GET and HEAD.
  for (const mode of ANSWER_MODES) {
    out.push(one(`answer ${mode}`, req("GET", `/ans/${mode}`, [`X-Answer: ${mode}`])));
    out.push(one(`answer ${mode} to HEAD`, req("HEAD", `/ans/${mode}`, [`X-Answer: ${mode}`])));
    out.push(
      one(
        `answer ${mode}, close`,
        req("GET", `/ans/${mode}`, [`X-Answer: ${mode}`, "Connection: close"]),
      ),
    );
  }
  // Prox's own answers and the routes that make a Response of their own.
  out.push(one("upstream down", req("GET", "/dead")));
  out.push(one("upstream down, HEAD", req("HEAD", "/dead")));
  out.push(one("compressed", req("GET", "/gz", ["Accept-Encoding: gzip"])));
  out.push(
    one("compressed chunked", req("GET", "/gz", ["Accept-Encoding: gzip", "X-Answer: chunked"])),
  );
  out.push(one("compressed HEAD", req("HEAD", "/gz", ["Accept-Encoding: gzip", "X-Answer: head"])));
  out.push(
    one(
      "CORS preflight",
      req("OPTIONS", "/cors", [
        "Origin: https://app.test",
        "Access-Control-Request-Method: PUT",
        "Access-Control-Request-Headers: x-a",
      ]),
    ),
  );
  out.push(one("CORS GET", req("GET", "/cors", ["Origin: https://app.test"])));
  out.push(one("CORS refused", req("GET", "/cors", ["Origin: https://evil.test"])));
  out.push(
    one(
      "body over the route's limit",
      req("POST", "/small", ["Content-Length: 5"], { body: "hello" }),
    ),
  );
  out.push(
    one(
      "body over the limit, pipelined",
      req("POST", "/small", ["Content-Length: 5"], { body: "hello" }) + req("GET", "/after"),
    ),
  );
  out.push(
    one("body at the route's limit", req("POST", "/small", ["Content-Length: 3"], { body: "abc" })),
  );
  for (const kb of [31, 32, 33, 40]) {
    out.push(
      one(`head of ${kb} KiB`, req("GET", "/big-head", [`X-Big: ${"b".repeat(kb * 1024 - 60)}`])),
    );
    out.push(
      one(
        `head of ${kb} KiB in fields`,
        req(
          "GET",
          "/big-head",
          Array.from({ length: kb }, (_, i) => `X-B${i}: ${"b".repeat(1010)}`),
        ),
      ),
    );
  }
  out.push(one("static HEAD", req("HEAD", "/files/a.txt")));
  out.push(one("static range", req("GET", "/files/a.txt", ["Range: bytes=2-5"])));
  out.push(one("static bad range", req("GET", "/files/a.txt", ["Range: bytes=99-"])));
  out.push(one("static POST", req("POST", "/files/a.txt", ["Content-Length: 1"], { body: "x" })));
  return out;
}

/**
 * Clients that end their sending side after their requests (a half-close) and wait for the
 * answers: not in the corpus, as either engine takes the end of the stream for the client
 * leaving, and what came before is a matter of timing (README "Prox's own HTTP/1.1 engine").
 */
export function halfCloses(): Input[] {
  const out: Input[] = [];
  for (const mode of ["echo", "slow", "slowchunked", "big", "close"]) {
    out.push({
      name: `half-close, answer ${mode}`,
      writes: [req("GET", "/hc", [`X-Answer: ${mode}`])],
      halfClose: true,
    });
  }
  out.push({
    name: "half-close, POST",
    writes: [req("POST", "/hc", ["Content-Length: 5", "X-Answer: slow"], { body: "hello" })],
    halfClose: true,
  });
  out.push({
    name: "half-close, pipelined",
    writes: [
      req("GET", "/hc1", ["X-Answer: slow"]) + req("HEAD", "/hc2") +
      req("GET", "/hc3", ["X-Answer: slowchunked"]),
    ],
    halfClose: true,
  });
  out.push({ name: "half-close, upstream down", writes: [req("GET", "/dead")], halfClose: true });
  out.push({ name: "half-close, static", writes: [req("GET", "/files/a.txt")], halfClose: true });

  return out;
}

import assert from "node:assert/strict";
import { readLines, replayCommand, reportText } from "./replay_cli.ts";
import { ReplayTally } from "../proxy/replay_tally.ts";
import { formatAccessJson } from "./log_json.ts";

function streamOf(...chunks: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return ReadableStream.from(chunks.map((c) => enc.encode(c)));
}

async function collect(s: ReadableStream<Uint8Array>): Promise<(string | null)[]> {
  const out: (string | null)[] = [];
  for await (const l of readLines(s)) out.push(l);
  return out;
}

Deno.test("readLines: lines split across chunks, a last line without newline, multi-byte text", async () => {
  const euro = new TextEncoder().encode("€");
  const s = new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(new TextEncoder().encode("a\nb"));
      c.enqueue(euro.slice(0, 1)); // a character split between chunks
      c.enqueue(euro.slice(1));
      c.enqueue(new TextEncoder().encode("c\n\nlast"));
      c.close();
    },
  });
  assert.deepEqual(await collect(s), ["a", "b€c", "", "last"]);
});

Deno.test("readLines: an access line Prox writes for a request head within its 64 KiB is read whole", async () => {
  // A long URL with the Referer echoing it, and a User-Agent of bytes past ASCII (the C1 range is
  // written \u0085, six bytes for one): a head of ~60 KiB, an access line of ~127 KiB, which
  // replay skipped as "longer than 65536 bytes".
  const path = `/search/${"q".repeat(20_000)}`;
  const line = formatAccessJson({
    time: 0,
    requestId: "r",
    clientIp: "192.0.2.1",
    method: "GET",
    host: "example.com",
    path,
    query: "",
    status: 200,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 1,
    route: "/",
    upstream: "http://10.0.0.1:8080",
    upstreamStatus: 200,
    upstreamMs: 1,
    protocol: "http/1.1",
    tls: false,
    retries: 0,
    error: null,
    userAgent: "\x85".repeat(15_000),
    referer: `http://example.com${path}`,
  });
  assert.ok(line.length > 2 * 64 * 1024 - 2000, `line of ${line.length}`);
  const [read] = await collect(streamOf(line.slice(0, 50_000), line.slice(50_000), "\n"));
  assert.ok(read === line, `read ${read === null ? "null (skipped)" : read.length + " chars"}`);
});

Deno.test("readLines: a line past 1 MiB is given as null, and reading goes on after it", async () => {
  const big = "x".repeat(1100 * 1024);
  assert.deepEqual(
    await collect(streamOf("a\n", big.slice(0, 600_000), big.slice(600_000), "\nb\n")),
    [
      "a",
      null,
      "b",
    ],
  );
  assert.deepEqual(await collect(streamOf(big)), [null]);
});

Deno.test("reportText: counts, groups and skipped lines in words that agree with the numbers", () => {
  const t = new ReplayTally();
  t.add({
    from: "/a: upstream http://x",
    to: "(no route): 404 Not found",
    sample: "GET http://h/a",
  }, {
    notFound: true,
    doubts: [],
  });
  t.add(null, { notFound: false, doubts: [["/b", "basic_auth: …"]] });
  t.skip("log:3", "not JSON");
  const text = reportText(t, { config: "c.yaml", against: null, files: ["log"] });
  assert.match(
    text,
    /^Replayed 2 requests from log against c\.yaml, compared with the logged outcomes$/m,
  );
  assert.match(text, /^ {2}1 now gets 404: no route matches$/m);
  assert.match(
    text,
    /^ {2}\/a: upstream http:\/\/x {2}-> {2}\(no route\): 404 Not found {2}\(1 request\)$/m,
  );
  assert.match(text, /^ {6}GET http:\/\/h\/a$/m);
  assert.match(text, /^ {2}\/b \(1 request\): basic_auth: …$/m);
  assert.match(text, /^Skipped 1 line that is not a request\n {2}log:3: not JSON$/m);
  t.skip("log:4", "a log line", true);
  assert.match(
    reportText(t, { config: "c.yaml", against: "d.yaml", files: ["log"] }),
    /compared with d\.yaml[^]*^Skipped 2 lines that are not requests \(1 of them Prox's own log lines\)$/m,
  );
});

Deno.test("replayCommand reads a .gz of several gzip members, as zcat does", async () => {
  // `cat access.log.2.gz access.log.3.gz > week.gz` (or bgzip, pigz -i) makes one gzip file of
  // several members (RFC 1952 §2.2); DecompressionStream stops at the first and failed on the
  // rest ("failed to write whole buffer"), so the log could not be replayed.
  const dir = await Deno.makeTempDir({ prefix: "prox-replay-" });
  try {
    await Deno.writeTextFile(
      `${dir}/c.yaml`,
      'listen_addr: "127.0.0.1:8080"\nroutes: { "/": { type: proxy, target: "http://10.0.0.1:8080" } }\n',
    );
    const line = (path: string) =>
      JSON.stringify({
        method: "GET",
        host: "example.com",
        path,
        query: "",
        status: 200,
        route: "/",
        upstream: "http://10.0.0.1:8080",
      }) + "\n";
    const gzip = (text: string) =>
      new Response(
        new Blob([text]).stream().pipeThrough(new CompressionStream("gzip")),
      ).bytes();
    const members = [await gzip(line("/a") + line("/b")), await gzip(line("/c"))];
    await Deno.writeFile(`${dir}/week.gz`, new Uint8Array(await new Blob(members).arrayBuffer()));
    const out: string[] = [];
    const err: string[] = [];
    const code = await replayCommand([`${dir}/week.gz`], {
      config: `${dir}/c.yaml`,
      format: "text",
      failOnChange: false,
      out: (s) => out.push(s),
      err: (s) => err.push(s),
    });
    assert.equal(code, 0, err.join("\n"));
    assert.match(out.join("\n"), /^Replayed 3 requests from /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

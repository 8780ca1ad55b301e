// The raw-socket clients `bench/soak.ts --engine` sends to Prox's own HTTP/1.1 engine: what a
// fetch() client never does, and what decides between the engine serving a connection and
// relaying it (README "Prox's own HTTP/1.1 engine"). Each opens one connection, says its piece,
// reads what comes back (or leaves on purpose) and closes; a stuck one is closed after 10 s.

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rnd = (n: number) => Math.floor(Math.random() * n);
const H = "Host: localhost\r\n";

type Say = (text: string | Uint8Array) => Promise<void>;
type Read = (until?: RegExp) => Promise<string>;

/** One kind of client: what it sends and reads; the count it reports under its name. */
const KINDS: Record<string, (say: Say, read: Read) => Promise<void>> = {
  // Served: three requests in one write; the last one closes.
  async pipelined(say, read) {
    await say(
      `GET /p/pipe${rnd(1e6)} HTTP/1.1\r\n${H}\r\nGET /s/f${rnd(20)}.txt HTTP/1.1\r\n${H}\r\n` +
        `GET /lb/pipe HTTP/1.1\r\n${H}Connection: close\r\n\r\n`,
    );
    const got = await read();
    if (answers(got) !== 3) throw new Error("answers missing");
  },
  // Served: two requests one after the other on a keep-alive connection, then goes.
  async keepAlive(say, read) {
    await say(`GET /s/f${rnd(20)}.txt HTTP/1.1\r\n${H}\r\n`);
    await read(/\r\n\r\n/);
    await say(
      `POST /body/ka HTTP/1.1\r\n${H}Content-Length: 9\r\nConnection: close\r\n\r\n{"a":"b"}`,
    );
    if (!/replaced for/.test(await read())) throw new Error("no answer");
  },
  // Served, the client leaving while its request waits for a slow upstream.
  async leavesWhileWaiting(say) {
    await say(`GET /lc/slow?x=${rnd(1e6)} HTTP/1.1\r\n${H}\r\n`);
    await sleep(50 + rnd(100));
  },
  // Served, the client leaving mid-answer (1 MiB from the upstream).
  async leavesMidAnswer(say, read) {
    await say(`GET /p/big HTTP/1.1\r\n${H}\r\n`);
    await read(/\r\n\r\n/);
  },
  // The engine's: a body that comes after a pause (streamed).
  async lateBody(say, read) {
    await say(`POST /body/late HTTP/1.1\r\n${H}Content-Length: 20\r\nConnection: close\r\n\r\n`);
    await sleep(100 + rnd(300));
    await say("x".repeat(20));
    await read();
  },
  // The engine's: a chunked body, decoded as it comes.
  async chunked(say, read) {
    await say(`POST /p/chunked HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
    await sleep(rnd(100));
    await say(
      "6\r\n world\r\n0\r\n\r\nGET /p/after HTTP/1.1\r\n" + H + "Connection: close\r\n\r\n",
    );
    const got = await read();
    if (answers(got) !== 2) throw new Error("answers missing");
  },
  // The engine's: a body over 64 KiB (streamed), after a served request on the same connection.
  async largeBody(say, read) {
    await say(`GET /s/f${rnd(20)}.txt HTTP/1.1\r\n${H}\r\n`);
    await read(/\r\n\r\n/);
    const n = 65_536 + rnd(200_000);
    await say(`POST /p/large HTTP/1.1\r\n${H}Content-Length: ${n}\r\nConnection: close\r\n\r\n`);
    await say(new Uint8Array(n));
    await read();
  },
  // The engine's: Expect: 100-continue, the body sent after the interim answer.
  async expect(say, read) {
    await say(
      `POST /p/expect HTTP/1.1\r\n${H}Content-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    );
    await read(/^HTTP\/1\.1 \d{3}/);
    await say("0123456789");
    await read();
  },
  // The engine's: HTTP/1.0, closed after one answer or kept alive for a second.
  async http10(say, read) {
    await say(`GET /s/f${rnd(20)}.txt HTTP/1.0\r\n${H}\r\n`);
    await read();
  },
  async http10KeepAlive(say, read) {
    const ka = "Connection: keep-alive\r\n";
    await say(`GET /s/f${rnd(20)}.txt HTTP/1.0\r\n${H}${ka}\r\n`);
    const head = await read(/\r\n\r\n/);
    // As an HTTP/1.0 client does: another request only on a connection the answer kept (a drain
    // or an answer of unknown length closes it), after the whole answer.
    if (!/\r\nconnection: keep-alive\r\n/i.test(head)) return;
    const len = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(head)?.[1] ?? 0);
    const had = head.length - head.indexOf("\r\n\r\n") - 4;
    if (had < len) await read(new RegExp(`^[^]{${len - had}}`));
    await say(`GET /p/ka HTTP/1.0\r\n${H}\r\n`);
    await read();
  },
  // Relayed: HTTP/1.0 without Host.
  async http10NoHost(say, read) {
    await say(`GET /p/nohost HTTP/1.0\r\n\r\n`);
    await read();
  },
  // The engine's: the client leaving mid-body of a large upload.
  async leavesMidBody(say) {
    await say(`POST /p/gone HTTP/1.1\r\n${H}Content-Length: 100000\r\n\r\n`);
    await say(new Uint8Array(rnd(60_000)));
    await sleep(rnd(200));
  },
  // Neither: the client leaving mid-head.
  async leavesMidHead(say) {
    await say(`GET /p/half HTTP/1.1\r\n${H}X-Half: `);
    await sleep(rnd(300));
  },
  // Served: a head sent a few bytes at a time over about a second.
  async slowHead(say, read) {
    const head = `GET /p/slow-head${rnd(1e6)} HTTP/1.1\r\n${H}X-A: b\r\nConnection: close\r\n\r\n`;
    for (let i = 0; i < head.length; i += 6) {
      await say(head.slice(i, i + 6));
      await sleep(60);
    }
    await read();
  },
  // Relayed: a WebSocket upgrade and one echoed text frame, then the client goes.
  async websocket(say, read) {
    await say(
      `GET /ws/raw HTTP/1.1\r\n${H}Upgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    await read(/\r\n\r\n/);
    // A masked text frame "hi" (mask 0): the upstream echoes it.
    await say(new Uint8Array([0x81, 0x82, 0, 0, 0, 0, 0x68, 0x69]));
    await read(/hi/);
  },
  // Relayed: a bad head (a line ending in a bare LF) gets Deno.serve's answer.
  async oddHead(say, read) {
    await say(`GET /p/odd HTTP/1.1\nHost: localhost\r\nConnection: close\r\n\r\n`);
    await read();
  },
};

/** Names of the kinds, for counting. */
export const ENGINE_KINDS = Object.keys(KINDS);

/**
 * Runs one kind (a random one unless named) against the engine on `port`; returns its name, with
 * " failed" and why when it did not get what it expected.
 */
export async function engineClient(port: number, kind?: string): Promise<string> {
  const name = kind ?? ENGINE_KINDS[rnd(ENGINE_KINDS.length)];
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => closeQuietly(c), 10_000);
  const say: Say = async (text) => {
    const bytes = typeof text === "string" ? enc.encode(text) : text;
    for (let off = 0; off < bytes.byteLength;) off += await c.write(bytes.subarray(off));
  };
  let got = "";
  const buf = new Uint8Array(65536);
  const dec = new TextDecoder("latin1");
  const read: Read = async (until) => {
    while (!until?.test(got)) {
      const n = await c.read(buf);
      if (n === null) {
        if (until) throw new Error("closed early");
        break;
      }
      got += dec.decode(buf.subarray(0, n));
    }
    const all = got;
    got = "";
    return all;
  };
  try {
    await KINDS[name](say, read);
    return name;
  } catch (err) {
    return `${name} failed (${(err as Error).message})`;
  } finally {
    clearTimeout(timer);
    closeQuietly(c);
  }
}

/** Status lines in what came back (a body without a final newline runs into the next one). */
function answers(got: string): number {
  return got.match(/HTTP\/1\.1 \d{3} /g)?.length ?? 0;
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* closed by the timer */ }
}

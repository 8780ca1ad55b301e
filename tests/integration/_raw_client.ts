// A raw HTTP/1.1 client for tests that must send bytes no real client would (odd framing,
// pipelining, half heads) and read what comes back as it came.
import { waitFor } from "../_harness.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Reads from `c` until the peer closes (or the read fails) or `until` matches what came so far;
 * `prefix` is what was read before. Returns all of it.
 */
export async function readFrom(c: Deno.Conn, until?: RegExp, prefix = ""): Promise<string> {
  let out = prefix;
  const buf = new Uint8Array(65536);
  while (!until?.test(out)) {
    const n = await c.read(buf).catch(() => null);
    if (n === null) break;
    out += dec.decode(buf.subarray(0, n));
  }
  return out;
}

/**
 * Writes `text` on a new connection to `port` and reads until the server closes it or `until`
 * matches (or, given `timeoutMs`, until that long passed: the socket is closed then).
 */
export async function rawExchange(
  port: number,
  text: string,
  until?: RegExp,
  timeoutMs?: number,
): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => c.close(), timeoutMs);
  try {
    await c.write(enc.encode(text));
    return await readFrom(c, until);
  } finally {
    clearTimeout(timer);
    try {
      c.close();
    } catch { /* closed by the timer */ }
  }
}

/** Waits until connections to `port` are refused (a listener that stopped accepting). */
export async function untilRefused(port: number): Promise<void> {
  await waitFor(async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return false;
    } catch {
      return true;
    }
  }, { what: "the listener to stop accepting" });
}

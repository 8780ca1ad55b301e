import assert from "node:assert/strict";
import { HeaderList } from "../domain/header_list.ts";
import { RAW_BODY, RELEASE } from "../ports.ts";
import type { RawBodied, Releasable } from "../ports.ts";
import { WireResponse } from "./wire_response.ts";

const enc = new TextEncoder();

function make(text: string | null) {
  const h = new HeaderList();
  h.append("Content-Type", "text/plain");
  h.append("Set-Cookie", "a=1");
  h.append("set-cookie", "b=2");
  return new WireResponse(text === null ? null : enc.encode(text), 200, "OK", h);
}

Deno.test("WireResponse hands out its bytes as they came until its body is asked for", async () => {
  const res = make("hello");
  const raw = (res as unknown as RawBodied)[RAW_BODY];
  assert.equal(new TextDecoder().decode(raw), "hello");
  assert.equal(res.bodyUsed, false);
  // A rule or a retry that asks for the body gets a stream, and the bytes are no longer offered.
  const body = res.body!;
  assert.equal((res as unknown as RawBodied)[RAW_BODY], undefined);
  assert.equal(res.body, body);
  assert.equal(await new Response(body).text(), "hello");
  assert.equal(res.bodyUsed, true);
  assert.equal(make(null).body, null);
  assert.equal(await make(null).text(), "");
});

Deno.test("WireResponse has the Response fields the pipeline reads, and clones apart", async () => {
  const res = make("data");
  assert.equal(res.ok, true);
  assert.equal(res.headers.get("content-type"), "text/plain");
  assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
  // Header rules edit the fields in place; a Fetch Headers copy takes them all.
  res.headers.set("x-rule", "1");
  assert.equal(new Headers(res.headers).get("x-rule"), "1");
  assert.throws(() => res.headers.set("x-bad", "a\r\nb"), TypeError);
  const copy = res.clone();
  copy.headers.delete("x-rule");
  assert.equal(res.headers.get("x-rule"), "1");
  assert.equal(await copy.text(), "data");
  assert.equal(await res.text(), "data");
  // Cloned after the body became a stream: both read it whole.
  const streamed = make("tee");
  void streamed.body;
  const twin = streamed.clone();
  assert.deepEqual(await Promise.all([streamed.text(), twin.text()]), ["tee", "tee"]);
});

Deno.test("WireResponse gives its buffer back once written (RELEASE), never after its body was handed on", async () => {
  const given: ArrayBuffer[] = [];
  const lent = (text: string) => {
    const bytes = enc.encode(text);
    return new WireResponse(bytes, 200, "OK", new HeaderList(), undefined, 0, (b) => given.push(b));
  };
  // Written as it came: the buffer goes back, and the answer holds nothing any more.
  const written = lent("one");
  const raw = (written as unknown as RawBodied)[RAW_BODY]!;
  (written as unknown as Releasable)[RELEASE]!();
  assert.deepEqual(given, [raw.buffer]);
  assert.equal((written as unknown as RawBodied)[RAW_BODY], undefined);
  (written as unknown as Releasable)[RELEASE]!(); // once only
  assert.equal(given.length, 1);
  // Asked for as a stream (a rule, the cache): its reader owns the bytes, which are not reused.
  const streamed = lent("two");
  const body = streamed.body!;
  (streamed as unknown as Releasable)[RELEASE]!();
  assert.equal(given.length, 1);
  assert.equal(await new Response(body).text(), "two");
  // A clone copies; the original may still go back, the copy never does.
  const original = lent("three");
  const copy = original.clone();
  (original as unknown as Releasable)[RELEASE]!();
  (copy as unknown as Releasable)[RELEASE]!();
  assert.equal(given.length, 2);
  assert.equal(await copy.text(), "three");
});

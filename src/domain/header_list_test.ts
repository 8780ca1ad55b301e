import assert from "node:assert/strict";
import { HeaderList, setKnown } from "./header_list.ts";

/** A HeaderList holding `fields` as given (duplicates as separate fields). */
function listOf(fields: [string, string][]): HeaderList {
  const h = new HeaderList();
  for (const [k, v] of fields) h.append(k, v);
  return h;
}

Deno.test("HeaderList keeps fields in order, names lowercase, duplicates as separate fields", () => {
  const h = new HeaderList();
  h.append("X-One", "1");
  h.append("accept", "*/*");
  h.append("x-one", "2");
  assert.deepEqual([...h], [["x-one", "1"], ["accept", "*/*"], ["x-one", "2"]]);
  assert.equal(h.get("X-ONE"), "1, 2");
  assert.equal(h.get("missing"), null);
  assert.equal(h.has("Accept"), true);
  assert.equal(h.size, 3);
});

Deno.test("HeaderList.set replaces the first field in place and drops later duplicates", () => {
  const h = HeaderList.from(listOf([["a", "1"], ["b", "2"], ["a", "3"], ["c", "4"]]));
  h.set("A", "x");
  assert.deepEqual([...h], [["a", "x"], ["b", "2"], ["c", "4"]]);
  h.set("d", "5");
  assert.deepEqual([...h].at(-1), ["d", "5"]);
  h.delete("B");
  assert.deepEqual([...h].map(([k]) => k), ["a", "c", "d"]);
});

Deno.test("setKnown sets without checks on a HeaderList and through set on Headers", () => {
  const h = HeaderList.from(listOf([["via", "1.1 a"], ["x", "1"], ["via", "1.1 b"]]));
  setKnown(h, "via", "1.1 a, 1.1 b, 1.1 prox");
  setKnown(h, "x-new", "y");
  assert.deepEqual([...h], [["via", "1.1 a, 1.1 b, 1.1 prox"], ["x", "1"], ["x-new", "y"]]);
  const fetchHeaders = new Headers([["Via", "1.1 a"]]);
  setKnown(fetchHeaders, "via", "1.1 prox");
  assert.deepEqual([...fetchHeaders], [["via", "1.1 prox"]]);
  // Headers still checks what it is given.
  assert.throws(() => setKnown(new Headers(), "x", "a\nb"), TypeError);
});

Deno.test("HeaderList.delete removes every field of a name, and nothing when it is absent", () => {
  const h = HeaderList.from(listOf([["a", "1"], ["b", "2"], ["a", "3"], ["c", "4"], ["a", "5"]]));
  h.delete("missing");
  assert.equal(h.size, 5);
  h.delete("A");
  assert.deepEqual([...h], [["b", "2"], ["c", "4"]]);
  h.set("c", "x");
  assert.deepEqual([...h], [["b", "2"], ["c", "x"]]);
});

Deno.test("HeaderList.from skips the names given", () => {
  const src = new Headers({ connection: "close", te: "trailers", accept: "*/*" });
  const h = HeaderList.from(src, new Set(["connection", "te"]));
  assert.deepEqual([...h], [["accept", "*/*"]]);
  // From a HeaderList: duplicates stay separate fields, in order.
  const twice = HeaderList.from(listOf([["x", "1"], ["te", "t"], ["x", "2"]]), new Set(["te"]));
  assert.deepEqual([...twice], [["x", "1"], ["x", "2"]]);
});

Deno.test("HeaderList rejects what Headers rejects and trims values as Headers does", () => {
  const h = new HeaderList();
  assert.throws(() => h.set("bad name", "v"), TypeError);
  assert.throws(() => h.set("", "v"), TypeError);
  assert.throws(() => h.append("x", "a\r\nb"), TypeError);
  assert.throws(() => h.append("x", "nul\0"), TypeError);
  assert.throws(() => h.append("x", "snow \u2603"), TypeError);
  h.set("x", " \tpadded value\t ");
  assert.equal(h.get("x"), "padded value");
  h.set("latin1", "caf\u00e9");
  assert.equal(h.get("latin1"), "caf\u00e9");
  // The same inputs through Headers, so the two stay in agreement.
  const w = new Headers();
  assert.throws(() => w.set("bad name", "v"), TypeError);
  assert.throws(() => w.append("x", "a\r\nb"), TypeError);
  w.set("x", " \tpadded value\t ");
  assert.equal(w.get("x"), h.get("x"));
});

Deno.test("HeaderList converts to Headers and is accepted where HeadersInit is", () => {
  const h = HeaderList.from(listOf([["a", "1"], ["set-cookie", "x=1"], ["set-cookie", "y=2"]]));
  const w = h.toHeaders();
  assert.equal(w.get("a"), "1");
  assert.deepEqual(w.getSetCookie(), ["x=1", "y=2"]);
  const r = new Request("http://example.test/", { headers: h });
  assert.deepEqual(r.headers.getSetCookie(), ["x=1", "y=2"]);
});

Deno.test("HeaderList finds names capitalized anywhere, and adopts a parser's arrays as they are", () => {
  const names = ["content-type", "x-request-id"];
  const values = ["text/plain", "abc"];
  const h = HeaderList.adopt(names, values);
  assert.equal(h.get("Content-Type"), "text/plain");
  assert.equal(h.get("x-Request-ID"), "abc");
  assert.equal(h.has("X-REQUEST-Iq"), false);
  h.delete("CONTENT-type");
  assert.deepEqual([...h], [["x-request-id", "abc"]]);
  // Taken, not copied: the list works on the arrays it was given.
  assert.deepEqual(names, ["x-request-id"]);
});

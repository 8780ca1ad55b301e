import assert from "node:assert/strict";
import { HeaderList } from "../../domain/header_list.ts";
import { RAW_BODY } from "../../ports.ts";
import { WireRequest } from "./wire_request.ts";

function post(body: string, type: string) {
  const h = new HeaderList();
  h.appendChecked("content-type", type);
  const never = new AbortController().signal;
  return new WireRequest("POST", "http://a/f", h, () => never, new TextEncoder().encode(body));
}

Deno.test("WireRequest offers its body as it came, then as a stream, and reads forms by its type", async () => {
  const req = post("a=1&b=2", "application/x-www-form-urlencoded");
  assert.equal(new TextDecoder().decode(req[RAW_BODY]), "a=1&b=2");
  const copy = req.clone();
  assert.equal((await req.formData()).get("b"), "2");
  // Asked for as a stream, the bytes are no longer offered (whoever asked reads them).
  assert.equal(req[RAW_BODY], undefined);
  assert.equal(req.bodyUsed, true);
  // The clone made before keeps its own bytes and fields.
  assert.equal(await copy.text(), "a=1&b=2");
  assert.equal(copy.headers.get("content-type"), "application/x-www-form-urlencoded");
  const empty = new WireRequest(
    "GET",
    "http://a/",
    new HeaderList(),
    () => new AbortController().signal,
  );
  assert.equal(empty.body, null);
  assert.equal(await empty.text(), "");
});

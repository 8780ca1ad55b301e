import assert from "node:assert/strict";
import { basicChallenge, parseBasicAuthorization } from "./basic_auth.ts";

const b64 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));

Deno.test("parseBasicAuthorization reads user and password; the user ends at the first colon", () => {
  assert.deepEqual(parseBasicAuthorization(`Basic ${b64("alice:a:b")}`), {
    kind: "basic",
    user: "alice",
    password: "a:b",
  });
  assert.deepEqual(parseBasicAuthorization(`bAsIc  ${b64("a:")}`), {
    kind: "basic",
    user: "a",
    password: "",
  });
});

Deno.test("parseBasicAuthorization decodes UTF-8 and compares users in NFC (RFC 7617 §2.1)", () => {
  const c = parseBasicAuthorization(`Basic ${b64("jose\u0301:ñ")}`);
  assert.deepEqual(c, { kind: "basic", user: "jos\u00e9", password: "ñ" });
});

Deno.test("parseBasicAuthorization: other schemes are none, broken Basic is malformed", () => {
  assert.deepEqual(parseBasicAuthorization(null), { kind: "none" });
  assert.deepEqual(parseBasicAuthorization("Bearer abc"), { kind: "none" });
  assert.deepEqual(parseBasicAuthorization("Basicx abc"), { kind: "none" });
  for (const bad of ["Basic", "Basic !!", `Basic ${b64("no-colon")}`, "Basic /w==", "Basic a b"]) {
    assert.deepEqual(parseBasicAuthorization(bad), { kind: "malformed" }, bad);
  }
});

Deno.test("basicChallenge quotes the realm and asks for UTF-8", () => {
  assert.equal(basicChallenge("Staff"), 'Basic realm="Staff", charset="UTF-8"');
  assert.equal(basicChallenge('a "b" \\ c'), 'Basic realm="a \\"b\\" \\\\ c", charset="UTF-8"');
});

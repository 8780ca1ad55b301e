import assert from "node:assert/strict";
import { compileTemplate, expand, REQUEST_PLACEHOLDERS } from "./placeholders.ts";

const env = (n: string) => n === "REGION" ? "eu-1" : undefined;
const values = (n: string) => ({ client_ip: "10.0.0.1", route: "/api", method: "GET" })[n] ?? "";

Deno.test("compileTemplate expands placeholders anywhere in the string", () => {
  const r = compileTemplate("ip={client_ip}; route={route}{method}!", {
    allowed: REQUEST_PLACEHOLDERS,
    env,
  });
  assert.ok(r.ok);
  assert.equal(r.template.constant, false);
  assert.equal(expand(r.template, values), "ip=10.0.0.1; route=/apiGET!");
});

Deno.test("compileTemplate resolves {env.NAME} at load time into a constant", () => {
  const r = compileTemplate("region {env.REGION}", { allowed: REQUEST_PLACEHOLDERS, env });
  assert.ok(r.ok);
  assert.equal(r.template.constant, true);
  assert.equal(expand(r.template, () => "unused"), "region eu-1");
});

Deno.test("compileTemplate reports unset variables and keeps unknown names as text", () => {
  const r = compileTemplate("{clinet_ip} {env.NOPE} {upstream}", {
    allowed: REQUEST_PLACEHOLDERS,
    env,
  });
  assert.deepEqual(r, { ok: false, unknown: ["env.NOPE"] });
  // The seed sent "/users/{id}" as it is: so does Prox (validate warns).
  const kept = compileTemplate("/users/{id} for {client_ip}", {
    allowed: REQUEST_PLACEHOLDERS,
    env,
  });
  assert.ok(kept.ok);
  assert.deepEqual(kept.literal, ["id"]);
  assert.equal(
    expand(kept.template, (n) => n === "client_ip" ? "1.2.3.4" : "?"),
    "/users/{id} for 1.2.3.4",
  );
});

Deno.test("compileTemplate leaves text that is not a placeholder alone", () => {
  const r = compileTemplate('{"json": true} and { spaced }', {
    allowed: REQUEST_PLACEHOLDERS,
    env,
  });
  assert.ok(r.ok);
  assert.equal(expand(r.template, values), '{"json": true} and { spaced }');
});

import assert from "node:assert/strict";
import { jsonSchema } from "./json_schema.ts";

Deno.test("jsonSchema describes the required keys, route types and hover text", () => {
  const s = jsonSchema() as {
    required: string[];
    properties: Record<
      string,
      { description?: string; additionalProperties?: { oneOf: unknown[] } }
    >;
    additionalProperties: boolean;
  };
  assert.deepEqual(s.required.toSorted(), ["listen_addr", "routes"]);
  assert.equal(s.additionalProperties, false);
  assert.deepEqual((s as { patternProperties?: unknown }).patternProperties, { "^x-": {} });
  assert.match(s.properties.listen_addr.description!, /IP:PORT/);
  const routeTypes = s.properties.routes.additionalProperties!.oneOf.map((o) =>
    (o as { properties: { type: { const: string } } }).properties.type.const
  );
  assert.deepEqual(routeTypes, [
    "proxy",
    "load_balance",
    "static",
    "redirect",
    "websocket",
    "respond",
  ]);
  const proxy = s.properties.routes.additionalProperties!.oneOf[0] as {
    properties: Record<string, { description?: string }>;
  };
  assert.match(proxy.properties.cache.description!, /response cache \(RFC 9111\)/);
});

Deno.test("jsonSchema gives mirror keys their own hover text", () => {
  type Node = { description?: string; properties: Record<string, Node> };
  const s = jsonSchema() as { properties: { routes: { additionalProperties: { oneOf: Node[] } } } };
  for (const route of s.properties.routes.additionalProperties.oneOf.slice(0, 2)) {
    const mirror = route.properties.mirror;
    assert.match(mirror.description!, /shadow upstream/);
    assert.match(mirror.properties.target.description!, /^Shadow upstream URL/);
    assert.match(mirror.properties.preserve_host.description!, /to the mirror/);
  }
});

Deno.test("jsonSchema gives ip_access and basic_auth hover text on every route type", () => {
  type Node = { description?: string; properties: Record<string, Node> };
  const s = jsonSchema() as {
    properties: { ip_access: Node; routes: { additionalProperties: { oneOf: Node[] } } };
  };
  assert.match(s.properties.ip_access.description!, /most specific entry wins/);
  for (const route of s.properties.routes.additionalProperties.oneOf) {
    assert.match(route.properties.ip_access.properties.allow.description!, /let in/);
    const auth = route.properties.basic_auth;
    assert.match(auth.description!, /HTTP Basic/);
    assert.match(auth.properties.users.description!, /bcrypt/);
  }
});

Deno.test("jsonSchema gives match hover text on every route type, and route keys their #name", () => {
  type Node = { description?: string; properties: Record<string, Node> };
  const s = jsonSchema() as {
    properties: { routes: Node & { additionalProperties: { oneOf: Node[] } } };
  };
  assert.match(s.properties.routes.description!, /\/api#canary/);
  for (const route of s.properties.routes.additionalProperties.oneOf) {
    assert.match(route.properties.match.description!, /^Conditional route/);
  }
});

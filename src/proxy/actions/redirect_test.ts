import assert from "node:assert/strict";
import { redirectLocation } from "./redirect.ts";
import type { RedirectRouteConfig } from "../../config/schema.ts";

const route = (target: string): RedirectRouteConfig => ({
  type: "redirect",
  target,
  status_code: 307,
  exact: false,
  keep_query: true,
});

Deno.test("redirectLocation: a target's empty query (a bare ?) adds no & before the client's", () => {
  const at = (target: string, query: string) =>
    redirectLocation(route(target), { path: "/r/x", prefix: "/r", query });
  assert.equal(at("https://t.example/p?", "?b=2"), "https://t.example/p/x?b=2");
  assert.equal(at("/p?#top", "?b=2"), "/p/x?b=2#top");
  // As before: a target's query first, then the client's; either alone as it is.
  assert.equal(at("https://t.example/p?a=1", "?b=2"), "https://t.example/p/x?a=1&b=2");
  assert.equal(at("https://t.example/p?", ""), "https://t.example/p/x?");
  assert.equal(at("https://t.example/p", "?b=2"), "https://t.example/p/x?b=2");
});

import assert from "node:assert/strict";
import { compileRouteRules } from "./rules.ts";
import type { RouteRulesSpec, RuleProblem } from "./rules.ts";

function problems(spec: RouteRulesSpec): string[] {
  const out: RuleProblem[] = [];
  compileRouteRules(spec, { env: () => undefined, problems: out });
  return out.filter((p) => !p.warning).map((p) => `${p.path.join(".")}: ${p.message}`);
}

Deno.test("compileRouteRules refuses rules that set framing or connection fields", () => {
  const got = problems({
    request_headers: {
      set: { "Transfer-Encoding": "chunked", "X-Ok": "1" },
      add: { "Content-Length": "0" },
      append: { Connection: "close" },
    },
    response_headers: { set: { "content-length": "1", Upgrade: "h2c", "Keep-Alive": "5" } },
  });
  assert.equal(got.length, 6, got.join("\n"));
  assert.match(
    got[0],
    /^request_headers\.add\.Content-Length: Header "Content-Length" cannot be set/,
  );
  assert.ok(got.some((p) => p.startsWith("request_headers.set.Transfer-Encoding: ")));
  assert.ok(got.some((p) => p.startsWith("request_headers.append.Connection: ")));
  assert.ok(got.some((p) => p.startsWith("response_headers.set.Upgrade: ")));
  // Removing them is harmless (Prox drops them anyway).
  assert.deepEqual(problems({ request_headers: { remove: ["Connection", "Content-Length"] } }), []);
});

Deno.test("compileRouteRules refuses removing Host from the upstream request only", () => {
  assert.deepEqual(problems({ request_headers: { remove: ["HOST"] } }), [
    "request_headers.remove.0: Host cannot be removed from the upstream request",
  ]);
  assert.deepEqual(problems({ response_headers: { remove: ["Host"] } }), []);
  assert.deepEqual(problems({ request_headers: { set: { Host: "backend.internal" } } }), []);
});

Deno.test("compileRouteRules refuses control characters in header values, also from {env.NAME}", () => {
  const env = (n: string) =>
    ({ BELL: "a\u0007b", NL: "a\nb", OK: "a\tb" } as Record<string, string>)[n];
  const out: RuleProblem[] = [];
  compileRouteRules({
    response_headers: {
      set: { "X-A": "x\u0001y", "X-B": "{env.BELL}", "X-C": "{env.NL}", "X-D": "{env.OK}" },
    },
  }, { env, problems: out });
  assert.deepEqual(out.map((p) => p.path.join(".")), [
    "response_headers.set.X-A",
    "response_headers.set.X-B",
    "response_headers.set.X-C",
  ]);
  assert.match(out[0].message, /contains a control character/);
});

Deno.test("compileRouteRules loads the Rust Prox's body rules: set_text wins over set_json", () => {
  const out: RuleProblem[] = [];
  const rules = compileRouteRules({
    response_body: { set_text: "t", set_json: { a: 1 } },
    request_body: { condition: { method_is: "POST" } },
  }, { env: () => undefined, problems: out });
  assert.deepEqual(out.map((p) => [p.path.join("."), p.warning]), [
    ["request_body", true],
    ["response_body.set_json", true],
  ]);
  assert.equal(rules.responseBody?.body.kind, "text");
  assert.equal(rules.requestBody, undefined);
});

Deno.test("compileRouteRules warns about a method_is that is no method (a comma list in one string)", () => {
  const out: RuleProblem[] = [];
  compileRouteRules({ request_headers: { condition: { method_is: "GET, POST" } } }, {
    env: () => undefined,
    problems: out,
  });
  assert.deepEqual(out.map((p) => [p.path.join("."), p.message, p.warning]), [
    [
      "request_headers.condition.method_is",
      '"GET, POST" is no method: the condition never holds',
      true,
    ],
  ]);
  assert.deepEqual(
    problems({ request_headers: { condition: { method_is: ["get", "POST"] } } }),
    [],
  );
});

Deno.test("compileRouteRules refuses a content_type a header cannot carry", () => {
  assert.deepEqual(
    problems({
      response_body: { set_text: "x", content_type: "text/plain; charset=€" },
      request_body: { content_type: "text/plain\u0001" },
    }),
    [
      'request_body.content_type: Header value for "Content-Type" contains a control character (CR, LF, NUL, …)',
      'response_body.content_type: Header value for "Content-Type" has characters a header cannot carry (beyond Latin-1)',
    ],
  );
});

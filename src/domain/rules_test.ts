import assert from "node:assert/strict";
import { compileMatch, compileRouteRules } from "./rules.ts";
import type { RouteRulesSpec, RuleProblem } from "./rules.ts";

function problems(spec: RouteRulesSpec): string[] {
  const out: RuleProblem[] = [];
  compileRouteRules(spec, { env: () => undefined, problems: out });
  return out.filter((p) => !p.warning).map((p) => `${p.path.join(".")}: ${p.message}`);
}

Deno.test("compileRouteRules refuses rules that set framing fields", () => {
  const got = problems({
    request_headers: {
      set: { "Transfer-Encoding": "chunked", "X-Ok": "1" },
      add: { "Content-Length": "0" },
    },
    response_headers: { set: { "content-length": "1" } },
  });
  assert.equal(got.length, 3, got.join("\n"));
  assert.match(
    got[0],
    /^request_headers\.add\.Content-Length: Header "Content-Length" cannot be set/,
  );
  assert.ok(got.some((p) => p.startsWith("request_headers.set.Transfer-Encoding: ")));
  assert.ok(got.some((p) => p.startsWith("response_headers.set.content-length: ")));
  // Removing them is harmless (Prox drops them anyway).
  assert.deepEqual(problems({ request_headers: { remove: ["Connection", "Content-Length"] } }), []);
});

Deno.test("compileRouteRules ignores, with warnings, the Rust Prox rules that did nothing", () => {
  // Connection fields (Connection: keep-alive upstream), Host removed (the seed wrote it back)
  // and invalid names (the seed skipped them): its configs load, the rest of each rule applies.
  const out: RuleProblem[] = [];
  const rules = compileRouteRules({
    request_headers: {
      add: { Connection: "keep-alive", "X Bad": "v", "X-Ok": "1" },
      append: { "Keep-Alive": "timeout=5", Expect: "100-continue" },
      remove: ["HOST", "Referer", "Bad:Name"],
    },
    response_headers: { set: { Upgrade: "h2c", TE: "trailers", "X-Served": "1" } },
  }, { env: () => undefined, problems: out });
  assert.ok(out.every((p) => p.warning), JSON.stringify(out));
  assert.deepEqual(out.map((p) => p.path.join(".")), [
    "request_headers.add.Connection",
    "request_headers.add.X Bad",
    "request_headers.append.Keep-Alive",
    "request_headers.append.Expect",
    "request_headers.remove.0",
    "request_headers.remove.2",
    "response_headers.set.Upgrade",
    "response_headers.set.TE",
  ]);
  assert.match(out[0].message, /Header "Connection" is ignored/);
  assert.match(out[4].message, /Host cannot be removed from the upstream request/);
  assert.deepEqual(rules.requestHeaders?.set.map(([n]) => n), ["x-ok"]);
  assert.deepEqual(rules.requestHeaders?.append, []);
  assert.deepEqual(rules.requestHeaders?.remove, ["referer"]);
  assert.deepEqual(rules.responseHeaders?.set.map(([n]) => n), ["x-served"]);
  assert.match(out[3].message, /Header "Expect" is ignored on the upstream request/);
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

Deno.test("compileRouteRules warns when content_type names a charset the UTF-8 body is not in", () => {
  const warnings = (spec: RouteRulesSpec) => {
    const out: RuleProblem[] = [];
    compileRouteRules(spec, { env: () => undefined, problems: out });
    return out.map((p) => `${p.path.join(".")}: ${p.message}`);
  };
  assert.deepEqual(
    warnings({
      response_body: { set_text: "Café", content_type: "text/html; Charset=ISO-8859-1" },
    }),
    [
      "response_body.content_type: The body is sent as UTF-8, so charset=ISO-8859-1 mislabels its " +
      "characters beyond ASCII",
    ],
  );
  assert.equal(
    warnings({
      request_body: { set_json: { n: "é" }, content_type: 'text/plain;charset="latin1"' },
    })
      .length,
    1,
  );
  assert.deepEqual(
    warnings({
      response_body: { set_text: "Cafe", content_type: "text/html; charset=iso-8859-1" },
    }),
    [],
  );
  assert.deepEqual(
    warnings({ response_body: { set_text: "Café", content_type: "text/html; charset=UTF-8" } }),
    [],
  );
});

Deno.test("compileRouteRules says a broken regex never held in the Rust Prox only for its own keys", () => {
  const out: RuleProblem[] = [];
  compileRouteRules({
    request_headers: {
      condition: { path_matches: "(", query_has: { name: "q", value_matches: "(" } },
    },
    response_headers: { condition: { response_has_header: { name: "X Y", value_matches: "[" } } },
  }, { env: () => undefined, problems: out });
  assert.deepEqual(out.map((p) => [p.path.join("."), p.hint?.startsWith("Fix it or remove")]), [
    ["request_headers.condition.path_matches", true],
    ["request_headers.condition.query_has.value_matches", false],
    ["response_headers.condition.response_has_header.value_matches", false],
    ["response_headers.condition", false],
  ]);
  assert.equal(out[1].hint, "Fix the regular expression or remove the condition");
});

Deno.test("compileRouteRules warns that has_header on a response rule reads the response", () => {
  const warnings = (spec: RouteRulesSpec) => {
    const out: RuleProblem[] = [];
    compileRouteRules(spec, { env: () => undefined, problems: out });
    return out.filter((p) => p.warning).map((p) => p.path.join("."));
  };
  const when = { has_header: { name: "X-Debug" } };
  assert.deepEqual(warnings({ response_body: { condition: when, set_text: "x" } }), [
    "response_body.condition.has_header",
  ]);
  assert.deepEqual(warnings({ response_headers: { condition: when, set: { A: "1" } } }), [
    "response_headers.condition.has_header",
  ]);
  assert.deepEqual(warnings({ request_body: { condition: when, set_text: "x" } }), []);
  assert.deepEqual(
    warnings({
      response_body: { condition: { response_has_header: when.has_header }, set_text: "x" },
    }),
    [],
  );
});

Deno.test("compileRouteRules warns about one header set twice in different case", () => {
  const out: RuleProblem[] = [];
  compileRouteRules({
    request_headers: {
      add: { "X-Api-Key": "one", "x-api-key": "two" },
      set: { "X-API-KEY": "three" },
      append: { "x-api-key": "four" },
    },
  }, { env: () => undefined, problems: out });
  // Silently, the last one was sent.
  assert.deepEqual(out.map((p) => [p.warning, p.path.join("."), p.message]), [
    [
      true,
      "request_headers.add.x-api-key",
      'Header "x-api-key" is set twice (also as add.X-Api-Key; names ignore case): this value wins',
    ],
    [
      true,
      "request_headers.set.X-API-KEY",
      'Header "X-API-KEY" is set twice (also as add.X-Api-Key; names ignore case): this value wins',
    ],
  ]);
});

Deno.test("compileRouteRules says {env.NAME} takes no shell syntax ({env.X:-d}, ${X})", () => {
  const out: RuleProblem[] = [];
  compileRouteRules({
    request_headers: {
      add: { "X-A": "{env.NOPE:-fallback}", "X-B": "${NOPE}", "X-C": "${NOPE:-fallback}" },
    },
  }, { env: () => undefined, problems: out });
  // {env.NOPE:-fallback} was sent as it is without a word.
  assert.deepEqual(out.map((p) => [p.warning, p.message, p.hint]), [
    [
      true,
      "{env.NOPE:-fallback} is no placeholder: sent as it is",
      "{env.NAME} takes no default or other syntax: write {env.NOPE} and set NOPE",
    ],
    [
      true,
      "{NOPE} is no placeholder: sent as it is",
      "For an environment variable write {env.NOPE}",
    ],
    // ${NOPE:-fallback} too went out as it is without a word.
    [
      true,
      "{NOPE:-fallback} is no placeholder: sent as it is",
      "For an environment variable write {env.NOPE} (it takes no default) and set NOPE",
    ],
  ]);
});

Deno.test("compileRouteRules ignores, with a warning, an append of Host to the upstream request", () => {
  // Appended, it went out as a second Host field beside Prox's: RFC 9112 §3.2 has the upstream
  // answer 400, and a chain of servers may each take another one of the two.
  const out: RuleProblem[] = [];
  const rules = compileRouteRules({
    request_headers: { append: { host: "other.example", "X-Ok": "1" } },
    response_headers: { append: { Host: "kept" } },
  }, { env: () => undefined, problems: out });
  assert.deepEqual(out.map((p) => [p.warning, p.path.join(".")]), [
    [true, "request_headers.append.host"],
  ]);
  assert.match(out[0].message, /Host has one value/);
  assert.deepEqual(rules.requestHeaders?.append.map(([n]) => n), ["x-ok"]);
  assert.deepEqual(rules.requestHeaders?.fixed?.append, [["x-ok", "1"]]);
  assert.deepEqual(rules.responseHeaders?.append.map(([n]) => n), ["host"]);
});

Deno.test("compileMatch and request rules warn that has_header on X-Forwarded-For reads what the client wrote", () => {
  // `match: { has_header: { name: X-Forwarded-For, value_matches: "^10\\." } }` took any client
  // that sent "X-Forwarded-For: 10.1.1.1" (the condition reads the field as it came; only the
  // upstream gets it replaced): client_ip is the address Prox resolved.
  const out: RuleProblem[] = [];
  compileMatch([{ method_is: "GET" }, {
    has_header: { name: "X-Forwarded-For", value_matches: "^10\\." },
  }], out);
  compileRouteRules({
    request_headers: { condition: { has_header: { name: "x-real-ip" } }, set: { "X-A": "1" } },
    // On a response rule has_header reads the upstream's answer: no such warning.
    response_headers: {
      condition: { response_has_header: { name: "Forwarded" } },
      set: { "X-B": "1" },
    },
  }, { env: () => undefined, problems: out });
  assert.deepEqual(out.map((p) => [p.path.join("."), p.warning, p.message]), [
    [
      "match.1.has_header",
      true,
      "has_header reads X-Forwarded-For as the client sent it: any client can write an address there",
    ],
    [
      "request_headers.condition.has_header",
      true,
      "has_header reads x-real-ip as the client sent it: any client can write an address there",
    ],
  ]);
  assert.match(out[0].hint ?? "", /client_ip/);
});

Deno.test("compileMatch warns of a path_matches character that request paths carry percent-encoded", () => {
  // `^/café` never held: paths are matched as they arrive, `/caf%C3%A9`, so a conditional route
  // fenced by it took nothing and every such request went to the route beside it.
  const out: RuleProblem[] = [];
  compileMatch({ path_matches: "^/café(/|$)" }, out);
  compileMatch({ path_matches: "^/caf%C3%A9(/|$)" }, out);
  assert.deepEqual(out.map((p) => [p.path.join("."), p.warning, p.message, p.hint]), [[
    "match.path_matches",
    true,
    'path_matches holds "é", which request paths carry percent-encoded as UTF-8 (%C3%A9): the ' +
    "regex never matches it there",
    "Write %C3%A9 for é (escapes in upper case, as paths are matched)",
  ]]);
});

Deno.test("compileRouteRules: a replace rule refuses an empty find, the request side and a whole-body setter beside it", () => {
  assert.deepEqual(
    problems({
      response_body: { replace: [{ find: "a", replace: "b" }, { find: "", replace: "x" }] },
    }),
    ["response_body.replace.1.find: find is empty: there is nothing to look for"],
  );
  assert.deepEqual(
    problems({ response_body: { replace: [{ find: "é".repeat(513), replace: "b" }] } }),
    ["response_body.replace.0.find: find is over 1024 bytes"],
  );
  assert.deepEqual(
    problems({ response_body: { replace: [{ find: "é".repeat(512), replace: "b" }] } }),
    [],
  );
  assert.deepEqual(problems({ request_body: { replace: [{ find: "a", replace: "b" }] } }), [
    "request_body.replace: replace works on response bodies only",
  ]);
  assert.deepEqual(
    problems({ response_body: { set_text: "t", replace: [{ find: "a", replace: "b" }] } }),
    [
      "response_body.set_text: set_text and replace cannot be combined: one replaces the whole " +
      "body, the other strings in it",
    ],
  );
  assert.deepEqual(problems({ response_body: { set_text: "t", once: true, types: ["text/*"] } }), [
    "response_body.once: once applies only with replace",
    "response_body.types: types applies only with replace",
  ]);
  const out: RuleProblem[] = [];
  const rules = compileRouteRules({
    response_body: {
      replace: [{ find: "é", replace: "{host}" }, { find: "b", replace: "c" }],
      types: ["text/*"],
    },
  }, { env: () => undefined, problems: out });
  assert.deepEqual(out, []);
  const body = rules.responseBody!.body;
  assert.equal(body.kind, "replace");
  if (body.kind !== "replace") return;
  assert.deepEqual([...body.pairs[0].find], [0xc3, 0xa9]);
  assert.equal(body.pairs[0].bytes, null);
  assert.deepEqual([...body.pairs[1].bytes!], [0x63]);
  assert.ok(body.types("text/css") && !body.types("application/json"));
  assert.equal(rules.responseBody!.contentType, "");
});

Deno.test("compileRouteRules: response_lacks_header is for response rules and takes field names", () => {
  assert.deepEqual(
    problems({
      request_headers: { set: { "X-A": "1" }, condition: { response_lacks_header: "Etag" } },
      response_headers: {
        set: { "Cache-Control": "max-age=60" },
        condition: { response_lacks_header: ["Cache-Control", "bad name"] },
      },
    }),
    [
      "request_headers.condition.response_lacks_header: response_lacks_header can only be used " +
      "on response rules",
      'response_headers.condition.response_lacks_header: Invalid header name "bad name"',
    ].toSorted(),
  );
});

Deno.test("compileMatch refuses response conditions and names every request condition in the fix", () => {
  // The hint left out client_ip, which a route's match takes (the office network to staging).
  const out: RuleProblem[] = [];
  compileMatch({ status_is: "2xx", response_lacks_header: "Cache-Control" }, out);
  assert.deepEqual(out.map((p) => p.path.join(".")), [
    "match.status_is",
    "match.response_lacks_header",
  ]);
  for (const p of out) {
    assert.equal(
      p.hint,
      "Match on the request: method_is, has_header, query_has, path_matches, client_ip",
    );
  }
});

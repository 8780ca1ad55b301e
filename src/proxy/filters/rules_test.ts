import assert from "node:assert/strict";
import { applyHeaderRules, ruleBody } from "./rules.ts";
import { compileBodyRule, compileHeaderRules } from "../../domain/rules.ts";
import { HeaderList } from "../../domain/header_list.ts";
import type { Logger } from "../../ports.ts";

Deno.test("applyHeaderRules skips a value holding a control character after expansion", () => {
  const rules = compileHeaderRules({ set: { "X-T": "a{method}b", "X-U": "fine" } }, {
    side: "response",
    env: () => undefined,
    problems: [],
  });
  const warned: string[] = [];
  const logger = { warn: (msg: string) => warned.push(msg) } as unknown as Logger;
  const headers = new Headers();
  applyHeaderRules(rules, headers, { values: () => "\u0001", logger, requestId: "r" });
  assert.equal(headers.get("x-t"), null);
  assert.equal(headers.get("x-u"), "fine");
  assert.equal(warned.length, 1);
});

Deno.test("header rules of fixed text apply as compiled; a placeholder or condition is kept for each message", () => {
  const compile = (spec: Parameters<typeof compileHeaderRules>[0]) =>
    compileHeaderRules(spec, {
      side: "request",
      env: (n) => n === "E" ? "env" : undefined,
      problems: [],
    });
  const fixed = compile({
    add: { "X-A": "1", "X-Env": "{env.E}" },
    append: { "X-B": "2" },
    remove: ["x-c"],
  });
  assert.deepEqual(fixed.fixed, { set: [["x-a", "1"], ["x-env", "env"]], append: [["x-b", "2"]] });
  assert.equal(fixed.always, true);
  const h = new Headers({ "x-c": "gone", "x-a": "old", "x-b": "first" });
  const never = () => {
    throw new Error("fixed rules expand nothing");
  };
  applyHeaderRules(fixed, h, { values: never, logger: {} as Logger, requestId: "r" });
  assert.deepEqual([...h], [["x-a", "1"], ["x-b", "first, 2"], ["x-env", "env"]]);

  const list = HeaderList.adopt(["x-c", "x-b"], ["gone", "first"]);
  applyHeaderRules(
    compile({ add: { "X-A": " padded\t" }, append: { "X-B": "2" }, remove: ["x-c"] }),
    list,
    {
      values: never,
      logger: {} as Logger,
      requestId: "r",
    },
  );
  assert.deepEqual([...list], [["x-b", "first"], ["x-a", "padded"], ["x-b", "2"]]);

  const templated = compile({ set: { "X-A": "{method}" } });
  assert.equal(templated.fixed, null);
  const h2 = new Headers();
  applyHeaderRules(templated, h2, { values: () => "GET", logger: {} as Logger, requestId: "r" });
  assert.equal(h2.get("x-a"), "GET");

  const conditional = compile({ set: { "X-A": "1" }, condition: { method_is: "POST" } });
  assert.equal(conditional.always, false);
  assert.equal(
    conditional.when({ method: "GET", path: "/", query: "", headers: new Headers() }),
    false,
  );
});

Deno.test("ruleBody escapes placeholder values for the body's content type, as error pages do", () => {
  const body = (set_text: string, content_type?: string) => {
    const rule = compileBodyRule({ set_text, content_type }, {
      side: "response",
      env: () => undefined,
      problems: [],
    })!;
    const values = (n: string) => n === "query" ? `q=<script>alert("1")</script>&'x'` : "";
    return new TextDecoder().decode(ruleBody(rule, values)!);
  };
  // A client's query reflected into an HTML answer must not run as script (reflected XSS).
  assert.equal(
    body("<p>{query}</p>", "text/html; charset=utf-8"),
    "<p>q=&lt;script&gt;alert(&quot;1&quot;)&lt;/script&gt;&amp;&#39;x&#39;</p>",
  );
  // Nor end a JSON string and add members of its own.
  assert.deepEqual(JSON.parse(body('{"q":"{query}"}', "application/json")), {
    q: `q=<script>alert("1")</script>&'x'`,
  });
  // Plain text (the default) is sent as it is; the config's own text is never escaped.
  assert.equal(body("<{query}>"), `<q=<script>alert("1")</script>&'x'>`);
});

Deno.test("ruleBody: a set_json body holds no `<`, `>` or `&`, so a placeholder adds no markup served as HTML", () => {
  const body = (set_json: unknown, content_type?: string) => {
    const rule = compileBodyRule({ set_json, content_type }, {
      side: "response",
      env: () => undefined,
      problems: [],
    })!;
    const values = (n: string) => n === "query" ? `</script><img src=x onerror=alert(1)>&amp;` : "";
    return new TextDecoder().decode(ruleBody(rule, values)!);
  };
  for (const type of ["text/html; charset=utf-8", "application/json", undefined]) {
    const text = body({ q: "{query}", "<b>": ["a\u2028b"] }, type);
    // The same JSON value, written as Go's encoding/json writes it (\u003c, \u003e, \u0026).
    assert.deepEqual(JSON.parse(text), {
      q: `</script><img src=x onerror=alert(1)>&amp;`,
      "<b>": ["a\u2028b"],
    });
    assert.doesNotMatch(text, /[<>&\u2028\u2029]/, text);
  }
});

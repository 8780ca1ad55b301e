import assert from "node:assert/strict";
import {
  compilePages,
  escapeFor,
  escapeValue,
  lookupPage,
  negotiatePage,
  pageSelector,
  renderPage,
} from "./error_pages.ts";
import type { PageProblem, PageSpec } from "./error_pages.ts";

function table(spec: Record<string, PageSpec | PageSpec[]>, files: Record<string, string> = {}) {
  const problems: PageProblem[] = [];
  const t = compilePages(spec, { read: (f) => files[f], env: () => undefined, problems });
  return { t, problems };
}

Deno.test("pageSelector takes codes, classes, ranges and lists of error statuses only", () => {
  assert.deepEqual(pageSelector("404"), [[404, 404]]);
  assert.deepEqual(pageSelector("5xx"), [[500, 599]]);
  assert.deepEqual(pageSelector("502, 504"), [[502, 502], [504, 504]]);
  assert.deepEqual(pageSelector("500-504"), [[500, 504]]);
  assert.match(pageSelector("3xx") as string, /no error status/);
  assert.match(pageSelector("5yy") as string, /Invalid status/);
});

Deno.test("lookupPage prefers the narrowest key, then the first written", () => {
  const { t } = table({
    "5xx": { body: "class" },
    "500-504": { body: "range" },
    "502": { body: "code" },
    "4xx": { body: "first" },
    "400-499": { body: "second" },
  });
  const page = (s: number) => lookupPage(t, s)?.variants[0].template.parts[0];
  assert.equal(page(502), "code");
  assert.equal(page(503), "range");
  assert.equal(page(550), "class");
  assert.equal(page(404), "first");
  assert.equal(lookupPage(t, 200), undefined);
});

Deno.test("negotiatePage follows Accept's most specific range, the first on a tie", () => {
  const { t } = table({
    "5xx": [{ file: "p.html" }, { file: "p.json" }],
  }, { "p.html": "<p>", "p.json": "{}" });
  const v = t[0].variants;
  const pick = (accept: string | null) => negotiatePage(v, accept).media;
  assert.equal(pick(null), "text/html");
  assert.equal(pick("application/json"), "application/json");
  assert.equal(pick("text/html;q=0.5, application/*"), "application/json");
  assert.equal(pick("*/*"), "text/html");
  assert.equal(pick("image/png"), "text/html"); // none acceptable: still a page
  assert.equal(pick("application/json;q=0, */*"), "text/html");
});

Deno.test("renderPage escapes values for HTML and JSON pages, not for text", () => {
  const { t, problems } = table({
    "404": [{ body: "<b>{uri_path}</b>", content_type: "text/html" }, {
      body: '{"p":"{uri_path}"}',
      content_type: "application/json",
    }, { body: "{uri_path}" }],
  });
  assert.deepEqual(problems, []);
  const values = () => `</b>"'&\\`;
  const [html, json, text] = t[0].variants;
  assert.equal(renderPage(html, values), "<b>&lt;/b&gt;&quot;&#39;&amp;\\</b>");
  assert.deepEqual(JSON.parse(renderPage(json, values)), { p: `</b>"'&\\` });
  assert.equal(renderPage(text, values), `</b>"'&\\`);
  assert.equal(escapeValue("a<b", "json"), "a\\u003cb");
});

Deno.test("a page of another type (script, style sheet) gets its values percent-encoded", () => {
  assert.equal(escapeFor("application/javascript"), "url");
  assert.equal(escapeFor("text/css; charset=utf-8"), "url");
  assert.equal(escapeFor("text/plain; charset=utf-8"), "none");
  // A quote, backslash, backtick or angle bracket cannot end a string or an element.
  assert.equal(escapeValue(`/a'b"c\\d\`e<f>é`, "url"), "/a%27b%22c%5Cd%60e%3Cf%3E%C3%A9");
  assert.equal(escapeValue("/x?a=1&b=2 c", "url"), "/x?a=1&b=2 c");
});

Deno.test("compilePages reports what it leaves out, at the entry's path", () => {
  const { t, problems } = table({
    "404": "page.bin",
    "500": { file: "x.html", body: "y" },
    "503": { body: "{stauts}" },
    "504": { body: "x", content_type: "text/html\r\nx-evil: 1" },
  }, { "page.bin": "?" });
  assert.deepEqual(t.map((e) => e.key), ["503"]);
  assert.deepEqual(problems.map((p) => [p.path, p.warning ?? false]), [
    [["404"], false],
    [["500"], false],
    [["503", "body"], true],
    [["504", "content_type"], false],
  ]);
  assert.equal(problems[2].hint, "Did you mean {status}?");
});

Deno.test("a page's own content_type gets charset=utf-8 when a text type names none", () => {
  const { t, problems } = table({
    "404": { body: "Seite fehlt – {status}", content_type: "text/html" },
    "410": { body: "<x/>", content_type: "application/atom+xml" },
    "429": { body: "{}", content_type: "application/json" },
    "500": { body: "Fehler – ü", content_type: "text/plain; charset=iso-8859-1" },
    "503": { body: "a", content_type: "Text/HTML;Charset=UTF-8" },
  });
  const type = (k: string) => t.find((e) => e.key === k)!.variants[0].type;
  assert.equal(type("404"), "text/html; charset=utf-8");
  assert.equal(type("410"), "application/atom+xml; charset=utf-8");
  assert.equal(type("429"), "application/json"); // JSON has no charset parameter (RFC 8259)
  assert.equal(type("503"), "Text/HTML;Charset=UTF-8");
  // The page goes out as UTF-8 whatever the type says: a warning, the type as written.
  assert.equal(type("500"), "text/plain; charset=iso-8859-1");
  assert.deepEqual(problems.map((p) => [p.path, p.warning ?? false]), [
    [["500", "content_type"], true],
  ]);
});

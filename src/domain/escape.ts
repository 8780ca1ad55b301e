// Escaping a value inserted into a body of a given media type: error pages, directory listings,
// and the placeholders of set_text and respond bodies. Pure.

/**
 * How inserted values are escaped: for HTML or XML, inside a JSON string, not at all (plain
 * text), or percent-encoded beyond a safe set for any other type (a script or style sheet, where
 * a quote or `<` could end a string or an element).
 */
export type PageEscape = "html" | "json" | "none" | "url";

/** The escaping a media type needs. */
export function escapeFor(type: string): PageEscape {
  const t = type.toLowerCase();
  if (t.includes("html") || t.includes("xml")) return "html";
  if (t.includes("json")) return "json";
  return t.split(";")[0].trim() === "text/plain" ? "none" : "url";
}

/** What the "url" escaping leaves as it is: no quote, backslash, backtick, `<` or `>`. */
const URL_UNSAFE = /[^A-Za-z0-9 ._~:/?#@!$&()*+,;=%-]/gu;
const utf8 = new TextEncoder();

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** `value` made safe to insert into a page of the given escaping. */
export function escapeValue(value: string, mode: PageEscape): string {
  switch (mode) {
    case "html":
      return value.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
    case "json":
      return JSON.stringify(value).slice(1, -1).replace(/</g, "\\u003c");
    case "url":
      return value.replace(URL_UNSAFE, (c) => {
        let out = "";
        for (const b of utf8.encode(c)) out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
        return out;
      });
    case "none":
      return value;
  }
}

/**
 * JSON text with `<`, `>`, `&`, U+2028 and U+2029 written as `\uXXXX` (as Go's encoding/json does):
 * the same JSON value, but no markup when served as HTML or embedded in a `<script>` element.
 * These characters only occur inside JSON strings, where the escape means the same character.
 */
export function htmlSafeJson(json: string): string {
  return json.replace(
    /[<>&\u2028\u2029]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"),
  );
}

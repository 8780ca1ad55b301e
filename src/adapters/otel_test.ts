import assert from "node:assert/strict";
import { scrubbedUrl } from "./otel.ts";

Deno.test("scrubbedUrl redacts credentials in the query for a span's url.full, and nothing else", () => {
  assert.equal(scrubbedUrl("http://x/a"), "http://x/a");
  assert.equal(
    scrubbedUrl("http://x/a?x=1&access_token=abc&X-Goog-Signature=zz&b=2#frag"),
    "http://x/a?x=1&access_token=REDACTED&X-Goog-Signature=REDACTED&b=2#frag",
  );
  // Names as sent (percent-encoded, +), and parameters without a value.
  assert.equal(
    scrubbedUrl("http://x/?%61ccess_token=s&flag"),
    "http://x/?%61ccess_token=REDACTED&flag",
  );
  assert.equal(scrubbedUrl("http://x/?api+key=1&page=2"), "http://x/?api+key=REDACTED&page=2");
  assert.equal(scrubbedUrl("http://x/?code=oauth&state=s"), "http://x/?code=REDACTED&state=s");
});

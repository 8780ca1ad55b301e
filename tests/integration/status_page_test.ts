// The admin status page in headless Chromium (Debian `chromium`): the DOM after its script ran
// shows the routes and upstreams of the running Prox, and the page keeps refreshing from /status
// with the Basic credentials the browser was given.
import assert from "node:assert/strict";
import { chromiumDumpDom, interopTest } from "../_harness.ts";
import { startObserved } from "./_observed.ts";

async function dumpDom(url: string): Promise<string> {
  // A 6 s virtual time budget lets the page's 5 s refresh timer fire before the DOM is dumped.
  const out = await chromiumDumpDom(url, { budgetMs: 6000 });
  assert.equal(out.code, 0, out.stderr.slice(-2000));
  return out.stdout;
}

interopTest(
  "status page renders routes and upstreams in headless Chromium",
  ["chromium"],
  async () => {
    await using p = await startObserved();
    await p.traffic(1);
    const port = p.server.admin!.port;
    const dom = await dumpDom(`http://admin:${p.token}@127.0.0.1:${port}/`);
    // Rendered by the page's script (the embedded JSON has no table markup).
    assert.match(dom, /<tr class="row"><td><code>\/api<\/code><\/td><td>proxy<\/td>/);
    assert.match(dom, /<td><code>\/lb<\/code><\/td><td>load_balance<\/td>/);
    assert.match(
      dom,
      new RegExp(`<td><code>${p.upstream.url}</code></td><td><span class="up">up</span></td>`),
    );
    assert.match(dom, /<td>\/limited<\/td><td>1<\/td>/);
    assert.match(dom, /config v1 · ready/);
    // The periodic refresh from /status succeeded with the browser's credentials.
    assert.match(dom, /<p id="updated" class="meta">Updated [^<]+<\/p>/);
    assert.match(dom, /<body data-refreshes="[1-9]\d*">/);

    // Without credentials the page is refused.
    const denied = await dumpDom(`http://127.0.0.1:${port}/`);
    assert.doesNotMatch(denied, /<title>Prox status<\/title>/);
  },
);

// The admin status page in headless Chromium (Debian `chromium`): the DOM after its script ran
// shows the routes and upstreams of the running Prox, and the page keeps refreshing from /status
// with the Basic credentials the browser was given.
import assert from "node:assert/strict";
import { chromiumDumpDom, interopTest, startUpstream } from "../_harness.ts";
import { startObserved } from "./_observed.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

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
    // The target's connection pool after the traffic: kept-alive connections, opened since start.
    assert.match(dom, /<td>\d+ busy, \d+ idle; [1-9]\d* opened, \d+ reused<\/td>/);
    assert.match(dom, /config v1 · ready/);
    // The periodic refresh from /status succeeded with the browser's credentials.
    assert.match(dom, /<p id="updated" class="meta">Updated [^<]+<\/p>/);
    assert.match(dom, /<body data-refreshes="[1-9]\d*">/);

    // Without credentials the page is refused.
    const denied = await dumpDom(`http://127.0.0.1:${port}/`);
    assert.doesNotMatch(denied, /<title>Prox status<\/title>/);
  },
);

interopTest(
  "status page shows a target's slow start after a reload added it",
  ["chromium"],
  async () => {
    await using a = await startUpstream(() => new Response("a"));
    await using b = await startUpstream(() => new Response("b"));
    const dir = await Deno.makeTempDir({ prefix: "prox-status-page-" });
    const file = `${dir}/prox.yaml`;
    const config = (targets: string[]) =>
      `listen_addr: "127.0.0.1:0"
admin: { listen_addr: "127.0.0.1:0", token: t0ken }
health_check: { enabled: false }
routes:
  "/lb": { type: load_balance, targets: ${JSON.stringify(targets)}, slow_start: 1h }
`;
    await Deno.writeTextFile(file, config([a.url]));
    const server = await startServer({ path: file }, { logger: silentLogger });
    try {
      await Deno.writeTextFile(file, config([a.url, b.url]));
      assert.ok((await server.reload()).ok);
      const dom = await dumpDom(`http://admin:t0ken@127.0.0.1:${server.admin!.port}/`);
      assert.match(dom, /\(slow start on \/lb: 10 % of its weight\)/);
      assert.equal(dom.match(/slow start on \/lb/g)?.length, 1, "a (kept) does not ramp");
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

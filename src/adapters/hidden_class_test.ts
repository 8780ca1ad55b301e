// Fields that hold clock readings must not change the hidden class of their objects when the
// first reading comes (see NO_TIME in upstream_h1_conn.ts): V8 would throw away every optimized
// function that saw the old class. A child Deno with natives syntax compares the class of an
// object made first with one whose fields took clock readings afterwards, through the same code
// paths the proxy uses.
import assert from "node:assert/strict";
import { run } from "../../tests/_harness.ts";

const PROBE = `
import { H1Connection } from "${import.meta.resolve("./upstream_h1_conn.ts")}";
const sameMap = new Function("a", "b", "return %HaveSameMap(a, b)");
const transport = {
  read: () => new Promise<number>(() => {}),
  write: (p: Uint8Array) => Promise.resolve(p.length),
  close() {},
};
const result: Record<string, boolean> = {};
// The pool parks a connection UNSTAMPED (-1); its sweep stamps performance.now() later.
const first = new H1Connection(transport, "a");
const later = new H1Connection(transport, "b");
later.park(-1, () => {});
later.idleSince = performance.now();
result.idleSince = sameMap(first, later);
// The watchdog's ticker takes its own clock reading for an armed connection.
const armed = new H1Connection(transport, "c");
armed.armHeader(60_000);
armed.check(performance.now());
armed.disarm();
result.watchdog = sameMap(new H1Connection(transport, "d"), armed) && sameMap(first, armed);
console.log(JSON.stringify(result));
Deno.exit(0);
`;

Deno.test("clock readings keep the hidden class of upstream connections", async () => {
  const out = await run(Deno.execPath(), [
    "eval",
    "--ext=ts",
    "--v8-flags=--allow-natives-syntax",
    PROBE,
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(JSON.parse(out.stdout), { idleSince: true, watchdog: true });
});

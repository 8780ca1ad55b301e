import assert from "node:assert/strict";
import { adminUrl, topCommand } from "./top_cli.ts";

Deno.test("adminUrl reaches a wildcard admin address on loopback and brackets IPv6", () => {
  assert.equal(adminUrl("127.0.0.1:9090"), "http://127.0.0.1:9090");
  assert.equal(adminUrl("0.0.0.0:9090"), "http://127.0.0.1:9090");
  assert.equal(adminUrl("[::]:9090"), "http://[::1]:9090");
  assert.equal(adminUrl("[::1]:9091"), "http://[::1]:9091");
  assert.equal(adminUrl("nonsense"), null);
});

Deno.test("topCommand says when -c names a config that does not load or has no admin", async () => {
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    const errs: string[] = [];
    const run = () =>
      topCommand({
        config: file,
        once: true,
        format: "text",
        out: () => {},
        err: (s) => errs.push(s),
      });
    await Deno.writeTextFile(file, "routes: [unclosed\n");
    assert.equal(await run(), 1);
    assert.match(errs.pop()!, /does not load \(prox validate -c .*\.yaml\)/);
    await Deno.writeTextFile(file, 'listen_addr: "127.0.0.1:8080"\nroutes: {}\n');
    assert.equal(await run(), 1);
    assert.match(errs.pop()!, /has no admin listener; to enable one, add `admin: \{ listen_addr/);
  } finally {
    await Deno.remove(file);
  }
});

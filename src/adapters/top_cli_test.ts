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

Deno.test("topCommand reports an admin listener whose answers stall mid-body, and does not crash", async () => {
  // Heads at once, then bodies that never end (a stuck Prox, a proxy in between): the timeout
  // aborted the body reads, and a rejection nobody handled ended `prox top` with a stack trace.
  const enc = new TextEncoder();
  const stalled: ReadableStreamDefaultController<Uint8Array>[] = [];
  await using admin = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () =>
      new Response(
        new ReadableStream({
          start(c) {
            c.enqueue(enc.encode('prox_build_info{version="1"} 1\n'));
            stalled.push(c);
          },
        }),
      ),
  );
  const errs: string[] = [];
  const code = await topCommand({
    admin: `127.0.0.1:${admin.addr.port}`,
    once: true,
    format: "json",
    timeoutMs: 300,
    out: () => {},
    err: (s) => errs.push(s),
  });
  for (const c of stalled) {
    try {
      c.close();
    } catch { /* cancelled */ }
  }
  assert.equal(code, 1);
  assert.match(
    errs.join("\n"),
    /^error: Cannot read http:\/\/127\.0\.0\.1:\d+\/\w+: no answer in 0\.3s/,
  );
});

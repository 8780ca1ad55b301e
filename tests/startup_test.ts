// Start-up cost: what every `prox serve` and `prox validate` loads before it reads the config.
// Packages only some configs need are imported on first use; these tests keep them out of the
// static import graph (as `deno info` resolves it) and keep the Huffman table off the import.
import assert from "node:assert/strict";
import { ROOT, run } from "./_harness.ts";

interface InfoDependency {
  code?: { specifier: string };
  isDynamic?: boolean;
}
interface InfoModule {
  specifier: string;
  dependencies?: InfoDependency[];
}

/** The modules `deno run mod.ts` evaluates before main() runs: static, non-type-only imports. */
async function staticGraph(): Promise<Set<string>> {
  const out = await run(Deno.execPath(), ["info", "--json", "mod.ts"], { cwd: ROOT });
  assert.equal(out.code, 0, out.stderr);
  const info = JSON.parse(out.stdout) as { roots: string[]; modules: InfoModule[] };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const todo = [...info.roots];
  for (let spec = todo.pop(); spec !== undefined; spec = todo.pop()) {
    if (seen.has(spec)) continue;
    seen.add(spec);
    for (const dep of bySpecifier.get(spec)?.dependencies ?? []) {
      if (dep.code && !dep.isDynamic) todo.push(dep.code.specifier);
    }
  }
  return seen;
}

Deno.test("mod.ts loads acme-client, ioredis, OpenTelemetry, Hono and prom-client's index only on use", async () => {
  const graph = [...await staticGraph()];
  assert.ok(graph.some((s) => s.endsWith("/src/server.ts")), "the graph reaches server.ts");
  // Hono serves only the admin listener (src/adapters/admin_follow.ts loads it with the first).
  for (const pkg of ["acme-client", "ioredis", "@opentelemetry/api", "hono"]) {
    assert.deepEqual(graph.filter((s) => new RegExp(`^npm:/?${pkg}@[^/]*$`).test(s)), [], pkg);
  }
  // The index pulls the push gateway (node:http), Summary and the default metrics in; the
  // classes Prox uses come from their own files (src/adapters/prom_classes.ts).
  assert.deepEqual(graph.filter((s) => /^npm:\/?prom-client@[^/]*$/.test(s)), []);
  assert.ok(graph.some((s) => s.includes("prom-client@") && s.endsWith("/lib/counter.js")));
});

Deno.test("huffmanDecode builds its table on first use, not when the module loads", async () => {
  const url = new URL("../src/adapters/h3/huffman.ts", import.meta.url).href;
  const code = `import { huffmanDecode, huffmanTableBuilt } from "${url}";
    const before = huffmanTableBuilt();
    const text = new TextDecoder().decode(huffmanDecode(new Uint8Array([0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff])));
    console.log(JSON.stringify([before, text, huffmanTableBuilt()]));`;
  const out = await run(Deno.execPath(), ["eval", code], { cwd: ROOT });
  assert.equal(out.code, 0, out.stderr);
  // RFC 7541 C.4.1: "www.example.com".
  assert.deepEqual(JSON.parse(out.stdout), [false, "www.example.com", true]);
});

Deno.test("parseConfig compiles no code: zod's eval fast path costs start-up, not saves it", async () => {
  const url = new URL("../src/config/parse.ts", import.meta.url).href;
  const text = await Deno.readTextFile(`${ROOT}/config.yaml`);
  const code = `import { parseConfig } from "${url}";
    const original = globalThis.Function;
    let compiled = 0;
    globalThis.Function = new Proxy(original, {
      construct: (target, args) => (compiled++, Reflect.construct(target, args)),
      apply: (target, self, args) => (compiled++, Reflect.apply(target, self, args)),
    });
    const result = parseConfig(${JSON.stringify(text)});
    globalThis.Function = original;
    console.log(JSON.stringify([Boolean(result.config), compiled]));`;
  const out = await run(Deno.execPath(), ["eval", code], { cwd: ROOT });
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(JSON.parse(out.stdout), [true, 0]);
});

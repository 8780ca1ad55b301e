// The dependency rules of the house plan, checked by scanning imports and Deno.* uses.
import assert from "node:assert/strict";
import { ROOT } from "./_harness.ts";

function* walk(dir: string): Generator<string> {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* walk(p);
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) yield p;
  }
}

function imports(src: string): string[] {
  return [...src.matchAll(/(?:import|export)[^"']*?from\s*["']([^"']+)["']/g)].map((m) => m[1]);
}

const rel = (p: string) => p.slice(ROOT.length + 1);

Deno.test("domain/ imports nothing outside domain/ and uses no Deno, fetch, timers or clocks", () => {
  for (const file of walk(`${ROOT}/src/domain`)) {
    const src = Deno.readTextFileSync(file);
    for (const spec of imports(src)) {
      assert.ok(spec.startsWith("./"), `${rel(file)} imports ${spec}`);
    }
    const code = src.replace(/\/\/.*$/gm, "");
    for (
      const banned of [
        "Deno.",
        "fetch(",
        "setTimeout",
        "setInterval",
        "Date.now",
        // The clock read as a Date (parseHttpDate placed two-digit years by it).
        "new Date()",
        "Math.random",
      ]
    ) {
      assert.ok(!code.includes(banned), `${rel(file)} uses ${banned}`);
    }
  }
});

Deno.test("config/ is pure and imports only domain/, zod and yaml", () => {
  for (const file of walk(`${ROOT}/src/config`)) {
    const src = Deno.readTextFileSync(file);
    for (const spec of imports(src)) {
      const ok = spec.startsWith("./") || spec.startsWith("../domain/") || spec === "zod" ||
        spec === "yaml";
      assert.ok(ok, `${rel(file)} imports ${spec}`);
    }
    assert.ok(!src.replace(/\/\/.*$/gm, "").includes("Deno."), `${rel(file)} uses Deno`);
  }
});

Deno.test("proxy/ never touches Deno or adapters/", () => {
  for (const file of walk(`${ROOT}/src/proxy`)) {
    const src = Deno.readTextFileSync(file);
    for (const spec of imports(src)) {
      assert.ok(!spec.includes("adapters/"), `${rel(file)} imports ${spec}`);
      assert.ok(!spec.includes("server.ts"), `${rel(file)} imports ${spec}`);
    }
    assert.ok(!src.replace(/\/\/.*$/gm, "").includes("Deno."), `${rel(file)} uses Deno`);
  }
});

Deno.test("every Web Worker module is named with --include in make compile (compile does not follow new Worker)", () => {
  const makefile = Deno.readTextFileSync(`${ROOT}/Makefile`);
  const flags = /^COMPILE_FLAGS := (.+)$/m.exec(makefile)![1];
  const workers: string[] = [];
  for (const file of walk(`${ROOT}/src`)) {
    const src = Deno.readTextFileSync(file);
    for (const m of src.matchAll(/new URL\("(\.[^"]+)", import\.meta\.url\)/g)) {
      if (!/new Worker\(/.test(src)) continue;
      const dir = rel(file).replace(/[^/]+$/, "");
      workers.push(new URL(m[1], `file:///${dir}`).pathname.slice(1));
    }
  }
  assert.ok(workers.length > 0, "the config worker is found");
  for (const w of workers) assert.ok(flags.includes(`--include ${w}`), `${w} in COMPILE_FLAGS`);
});

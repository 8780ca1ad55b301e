// Start-up cost: what every `prox serve` and `prox validate` does before it reads the config.
import assert from "node:assert/strict";
import { ROOT, run } from "./_harness.ts";

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

import assert from "node:assert/strict";
import { loadConfigText } from "./load.ts";

const BASE = `listen_addr: "127.0.0.1:8443"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "http://127.0.0.1:3000" } }
`;

/** The warnings `prox validate` gives for BASE plus `yaml`. */
const warnings = (yaml: string) =>
  loadConfigText(BASE + yaml, { file: "c.yaml", env: { exists: () => true } }).issues
    .filter((i) => i.severity === "warning").map((i) => `${i.path}: ${i.message}`);

Deno.test("validateConfig: Prox's engines serve TLS listeners too, and honour the HTTP/2 keys", () => {
  const tls = "tls: { cert_path: c.pem, key_path: k.pem }\n";
  const h2 = "http2_enabled: false, http2_max_frame_size: 32768, http2_max_concurrent_streams: 50";
  // On the engines (the default, or asked for) the HTTP/2 keys apply: no warning.
  assert.deepEqual(warnings(`${tls}protocols: { http1_engine: prox }\n`), []);
  assert.deepEqual(warnings(`${tls}protocols: { ${h2} }\n`), []);
  assert.deepEqual(warnings(`${tls}protocols: { http1_idle_timeout: 10m }\n`), []);
  // On Deno.serve they do not, and each says so.
  const onDeno = warnings(`${tls}protocols: { http1_engine: deno, ${h2} }\n`).join("\n");
  assert.match(onDeno, /http2_enabled: false has no effect with http1_engine: deno/);
  assert.match(onDeno, /http2_max_frame_size has no effect with http1_engine: deno/);
  assert.match(onDeno, /http2_max_concurrent_streams has no effect with http1_engine: deno/);
  assert.equal(onDeno.split("\n").length, 3, onDeno);
});

Deno.test("validateConfig warns about http1_idle_timeout where the engine does not serve", () => {
  const said = warnings("protocols: { http1_engine: deno, http1_idle_timeout: 10m }\n");
  assert.equal(said.length, 1);
  assert.match(said[0], /^protocols\.http1_idle_timeout: http1_idle_timeout has no effect here/);
  assert.deepEqual(warnings("protocols: { http1_idle_timeout: 10m }\n"), []);
});

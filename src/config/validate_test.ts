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

Deno.test("validateConfig warns about http1_engine: prox on a TLS listener only when written", () => {
  const tls = "tls: { cert_path: c.pem, key_path: k.pem }\n";
  const said = warnings(`${tls}protocols: { http1_engine: prox }\n`);
  assert.equal(said.length, 1);
  assert.match(said[0], /^protocols\.http1_engine: http1_engine: prox has no effect .* with TLS/);
  // The engine is the default: a TLS config that does not name it loads without a word about it.
  assert.deepEqual(warnings(tls), []);
  assert.deepEqual(warnings(`${tls}protocols: { websocket_enabled: true }\n`), []);
  assert.deepEqual(warnings(`${tls}protocols: { http1_engine: deno }\n`), []);
  // Without TLS the engine serves: nothing to warn about either way.
  assert.deepEqual(warnings("protocols: { http1_engine: prox }\n"), []);
});

Deno.test("validateConfig warns about http1_idle_timeout where the engine does not serve", () => {
  const tls = "tls: { cert_path: c.pem, key_path: k.pem }\n";
  const onTls = warnings(`${tls}protocols: { http1_idle_timeout: 10m }\n`);
  assert.equal(onTls.length, 1);
  assert.match(onTls[0], /^protocols\.http1_idle_timeout: http1_idle_timeout has no effect here/);
  assert.equal(
    warnings("protocols: { http1_engine: deno, http1_idle_timeout: 10m }\n").length,
    1,
  );
  assert.deepEqual(warnings("protocols: { http1_idle_timeout: 10m }\n"), []);
  assert.deepEqual(warnings(tls), []);
});

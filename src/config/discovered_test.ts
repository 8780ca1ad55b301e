import assert from "node:assert/strict";
import { discoveredHost, srvDomain, targetFor, withDiscovered } from "./discovered.ts";
import { loadConfigText } from "./load.ts";

Deno.test("targetFor: the address in place of the name, the scheme, port and path kept", () => {
  assert.equal(targetFor("http://app:8080", "10.0.0.5"), "http://10.0.0.5:8080");
  assert.equal(targetFor("https://App.internal/v1/", "fd00::5"), "https://[fd00::5]/v1/");
  assert.equal(
    targetFor("http://app.svc.cluster.local:80/x?", "10.1.2.3"),
    "http://10.1.2.3:80/x?",
  );
});

Deno.test("withDiscovered: discover routes get the addresses found, others stay as they were", () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes:
  /api: { type: load_balance, discover: { dns: "http://app:8080" } }
  /web: { type: load_balance, targets: ["http://10.9.9.9"] }
  /: { type: static, root: . }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const before = withDiscovered(config, new Map());
  const api = before.routes["/api"];
  assert.equal(api.type === "load_balance" && api.targets.length, 0);
  const after = withDiscovered(
    config,
    new Map([["/api", [{ address: "10.0.0.2" }, { address: "::1" }]]]),
  );
  const a = after.routes["/api"];
  assert.deepEqual(a.type === "load_balance" && a.targets, [
    "http://10.0.0.2:8080",
    "http://[::1]:8080",
  ]);
  assert.equal(after.routes["/web"], config.routes["/web"]);
  assert.equal(discoveredHost(a), "app:8080");
  assert.equal(discoveredHost(after.routes["/web"]), undefined);
  // The config as loaded is left alone (reloads compare against it).
  const orig = config.routes["/api"];
  assert.equal(orig.type === "load_balance" && orig.targets.length, 0);
});

Deno.test("withDiscovered: SRV records give each address its port, weight and rank", () => {
  const { config, issues } = loadConfigText(
    `listen_addr: "127.0.0.1:0"
routes:
  /: { type: load_balance, discover: { srv: "_web._tcp.api.service.consul", scheme: https } }
`,
    { file: "t.yaml", env: { exists: () => true } },
  );
  assert.ok(config, JSON.stringify(issues));
  const after = withDiscovered(
    config,
    new Map([["/", [
      { address: "10.0.0.2", port: 8080, weight: 10, backup: false },
      { address: "fd00::3", port: 8081, weight: 1, backup: true },
    ]]]),
  );
  const r = after.routes["/"];
  assert.deepEqual(r.type === "load_balance" && r.targets, [
    { url: "https://10.0.0.2:8080", weight: 10, backup: false },
    { url: "https://[fd00::3]:8081", weight: 1, backup: true },
  ]);
  assert.equal(discoveredHost(r), "api.service.consul");
  assert.equal(srvDomain("_http._tcp.x.example."), "x.example");
});

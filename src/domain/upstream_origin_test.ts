import assert from "node:assert/strict";
import { isUnixTarget, originHost, originName, socketPath, unixOrigin } from "./upstream_origin.ts";

Deno.test("unix targets: the socket path survives the URL, and names and Host are usable", () => {
  for (
    const path of [
      "/run/app.sock",
      "./app.sock",
      "app.sock",
      "/tmp/a b/%41.sock",
      "/tmp/é.sock",
      "/tmp/a#b.sock",
      "/tmp/a?b=%2F.sock",
    ]
  ) {
    const o = unixOrigin(`unix:${path}`);
    assert.equal(o.protocol, "unix:");
    assert.equal(socketPath(o), path);
    assert.equal(originHost(o), "localhost");
    assert.equal(originName(o), `unix:${path}`);
  }
  assert.equal(originName(unixOrigin("unix:/run/app.sock")), "unix:/run/app.sock");
  assert.equal(originName(new URL("https://a.test:8443/x")), "https://a.test:8443");
  assert.equal(originHost(new URL("http://a.test:8080")), "a.test:8080");
  assert.ok(isUnixTarget("unix:/x") && !isUnixTarget("http://unix:/x"));
});

// `make bundle` writes one file that runs with plain `deno run -A dist/prox.js` from a directory
// holding nothing of the repository: no deno.json, no node_modules, no lock file.

import assert from "node:assert/strict";
import { interopTest, requireInterop, ROOT, run, startUpstream, waitFor } from "../_harness.ts";
import { VERSION } from "../../mod.ts";
import { bundleTo, fetchWhenUp, freePort, spawnProx } from "./_bundle.ts";
import { V8_FLAGS } from "./_process.ts";
import { parse } from "yaml";

Deno.test("bundle: the Makefile builds it with the command this test uses", async () => {
  const makefile = await Deno.readTextFile(`${ROOT}/Makefile`);
  assert.match(makefile, /bundle --platform=deno -o dist\/prox\.js mod\.ts/);
});

Deno.test("deno task serve runs with the shipped V8 flags (GC hints, linear-time regex fallback)", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`));
  assert.equal(config.tasks.serve, `deno run -A ${V8_FLAGS} mod.ts serve`);
});

Deno.test("monitoring/docker-compose.yml runs Prox with the shipped V8 flags too (deno task serve)", async () => {
  const compose = parse(await Deno.readTextFile(`${ROOT}/monitoring/docker-compose.yml`)) as {
    services: { prox: { command: string[] } };
  };
  // Was `deno run -A mod.ts serve`: no GC hints, and no linear-time fallback for a hostile regex.
  assert.deepEqual(compose.services.prox.command.slice(0, 2), ["task", "serve"]);
});

Deno.test("bundle: dist/prox.js runs from an empty directory (--version, validate, serve, welcome page)", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "prox-bundle-" });
  try {
    const bundle = `${tmp}/dist/prox.js`;
    await bundleTo(bundle);

    const empty = `${tmp}/empty`;
    await Deno.mkdir(empty);
    const v = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", bundle, "--version"],
      cwd: empty,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(v.code, 0, new TextDecoder().decode(v.stderr));
    assert.equal(new TextDecoder().decode(v.stdout).trim(), `prox ${VERSION}`);
    assert.deepEqual([...Deno.readDirSync(empty)], [], "running the bundle wrote files");

    const site = `${tmp}/site`;
    await Deno.mkdir(`${site}/www`, { recursive: true });
    await Deno.writeTextFile(`${site}/www/index.html`, "<p>served by the bundle</p>");
    const port = freePort();
    await using echo = await startUpstream((req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo ${e.data}`);
      return response;
    });
    await Deno.writeTextFile(
      `${site}/config.yaml`,
      `listen_addr: "127.0.0.1:${port}"\nroutes:\n  "/":\n    type: static\n    root: ./www\n` +
        `  "/ws":\n    type: websocket\n    target: "ws://127.0.0.1:${echo.port}"\n`,
    );
    const val = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", bundle, "validate"],
      cwd: site,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(val.code, 0, new TextDecoder().decode(val.stderr));

    await using prox = spawnProx(Deno.execPath(), ["run", "-A", bundle, "serve"], { cwd: site });
    assert.equal(await fetchWhenUp(`http://127.0.0.1:${port}/`), "<p>served by the bundle</p>");
    // A bare `deno run` has no WebSocketStream (unstable net API): the relay still works.
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    const closed = new Promise((resolve) => ws.onclose = resolve);
    const reply = await new Promise<string>((resolve, reject) => {
      ws.onopen = () => ws.send("hi");
      ws.onmessage = (e) => resolve(String(e.data));
      ws.onerror = () => reject(new Error("WebSocket through the bundle failed"));
    }).finally(() => ws.close());
    await closed;
    assert.equal(reply, "echo hi");
    const out = await prox.stop();
    assert.equal(out.code, 0, out.stderr);

    // HTTP/3 needs the unstable net API too: said once, not retried with an error every 5 s.
    const h3Port = freePort();
    await Deno.writeTextFile(
      `${site}/h3.yaml`,
      `listen_addr: "127.0.0.1:${h3Port}"\n` +
        `tls: { cert_path: "${ROOT}/tests/fixtures/tls/cert.pem", key_path: "${ROOT}/tests/fixtures/tls/key.pem" }\n` +
        `protocols: { http3_enabled: true }\nroutes:\n  "/":\n    type: static\n    root: ./www\n`,
    );
    await using h3 = spawnProx(Deno.execPath(), ["run", "-A", bundle, "serve", "-c", "h3.yaml"], {
      cwd: site,
    });
    await waitFor(async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: h3Port }).catch(() => null);
      conn?.close();
      return conn !== null;
    }, { what: "the TLS listener" });
    const h3Out = await h3.stop();
    assert.equal(h3Out.code, 0, h3Out.stderr);
    const lines = (h3Out.stdout + h3Out.stderr).split("\n");
    assert.equal(lines.filter((l) => l.includes("needs Deno's unstable net API")).length, 1);
    assert.deepEqual(lines.filter((l) => l.includes("Cannot start HTTP/3")), []);

    // No config.yaml: the embedded welcome page (no static/ beside the bundle) is served from
    // memory, so a missing temporary directory (read-only image, no /tmp) is no obstacle.
    await using welcome = spawnProx(Deno.execPath(), ["run", "-A", bundle, "serve"], {
      cwd: empty,
      env: { TMPDIR: `${tmp}/no-such-dir` },
    });
    // Port 3000 is fixed by the embedded config; another program may hold it on this machine.
    const page = await fetchWhenUp("http://127.0.0.1:3000/", 10_000).catch(() => null);
    const w = await welcome.stop();
    if (page === null) assert.match(w.stderr, /Cannot start: Cannot listen on 127\.0\.0\.1:3000/);
    else {
      assert.match(page, /Prox is running/);
      assert.equal(w.code, 0, w.stderr);
    }
    assert.doesNotMatch(w.stderr, /Uncaught/);
    assert.deepEqual([...Deno.readDirSync(empty)], [], "serving the welcome page wrote files");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

const LOW_PORT =
  "bundle: as a non-root user, a port below 1024 fails with how to allow it (exit 1)";
if (Deno.uid() === 0 || requireInterop) {
  interopTest(LOW_PORT, ["setpriv"], async () => {
    if (Deno.uid() !== 0) {
      throw new Error("Cannot run: setpriv needs root (PROX_REQUIRE_INTEROP=1)");
    }
    const tmp = await Deno.makeTempDir({ prefix: "prox-bundle-" });
    try {
      await Deno.chmod(tmp, 0o755);
      await bundleTo(`${tmp}/prox.js`);
      await Deno.writeTextFile(
        `${tmp}/config.yaml`,
        `listen_addr: "127.0.0.1:80"\nadmin: { listen_addr: "127.0.0.1:81" }\n` +
          `routes:\n  "/": { type: redirect, target: "https://example.com/" }\n`,
      );
      const res = await run("setpriv", [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        Deno.execPath(),
        "run",
        "-A",
        `${tmp}/prox.js`,
        "serve",
        "-c",
        `${tmp}/config.yaml`,
      ], { cwd: tmp, env: { DENO_DIR: `${tmp}/deno_dir`, NO_COLOR: "1" }, timeoutMs: 20_000 });
      assert.equal(res.code, 1, res.stderr);
      assert.match(
        res.stderr,
        /Cannot listen on 127\.0\.0\.1:80: Permission denied.* \(ports below 1024 need root or the CAP_NET_BIND_SERVICE capability, e\.g\. `sudo setcap cap_net_bind_service=\+ep prox`; or use a port from 1024 up\)/,
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
} else {
  Deno.test({ name: LOW_PORT, ignore: true, fn() {} });
}

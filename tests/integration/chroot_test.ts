// The FROM-scratch image without a Docker engine: packaging/rootfs.sh (the script the Dockerfile
// runs) assembles the image's file set in an empty temp root, the `deno` binary plus the bundle
// stand in for the compiled executable, and Prox runs inside it under chroot as the image's
// non-root user, serving a request from the host. /proc is mounted in a private mount namespace,
// as a container runtime does; nothing else from the host is visible.

import assert from "node:assert/strict";
import { findTool, interopTest, requireInterop, ROOT, run } from "../_harness.ts";
import { bundleTo, fetchWhenUp, freePort, spawnProx } from "./_bundle.ts";

const NAME =
  "chroot: Prox serves from the FROM-scratch file set (binary, ldd libs, CA roots, config.yaml, static/)";
const isRoot = Deno.uid() === 0;

/** Every path under `dir`, relative, sorted. */
function listTree(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(`${dir}${prefix}`)) {
    const rel = `${prefix}/${e.name}`;
    out.push(rel);
    if (e.isDirectory) out.push(...listTree(dir, rel));
  }
  return out.sort();
}

Deno.test("chroot: the Dockerfile builds FROM scratch with the file set of packaging/rootfs.sh", async () => {
  const docker = await Deno.readTextFile(`${ROOT}/Dockerfile`);
  assert.match(docker, /^FROM scratch$/m);
  assert.match(docker, /make compile TARGETS=/);
  assert.match(docker, /packaging\/rootfs\.sh \/rootfs /);
  assert.match(docker, /^COPY --from=build \/rootfs\/ \/$/m);
  assert.match(docker, /^EXPOSE 3000$/m);
  const script = await Deno.readTextFile(`${ROOT}/packaging/rootfs.sh`);
  assert.match(script, /PROX_LISTEN:-0\.0\.0\.0:3000/);
});

if (isRoot || requireInterop) {
  interopTest(NAME, ["chroot", "unshare", "ldd"], async () => {
    if (!isRoot) throw new Error("Cannot run: chroot needs root (PROX_REQUIRE_INTEROP=1)");
    const tmp = await Deno.makeTempDir({ prefix: "prox-chroot-" });
    try {
      const root = `${tmp}/root`;
      const port = freePort();
      const deno = Deno.realPathSync(Deno.execPath());
      const built = await run("sh", [`${ROOT}/packaging/rootfs.sh`, root, deno, "deno"], {
        env: { PROX_LISTEN: `127.0.0.1:${port}` },
      });
      assert.equal(built.code, 0, built.stderr);
      await bundleTo(`${root}/prox.js`);

      const files = listTree(root);
      assert.ok(
        files.includes("/lib64/ld-linux-x86-64.so.2") || files.some((f) => f.includes("ld-")),
      );
      assert.ok(files.includes("/etc/ssl/certs/ca-certificates.crt"));
      assert.ok(files.includes("/static/index.html"));
      const top = files.filter((f) => f.lastIndexOf("/") === 0);
      const allowed = [
        "/config.yaml",
        "/deno",
        "/etc",
        "/lib",
        "/lib64",
        "/prox.js",
        "/static",
        "/tmp",
        "/usr",
      ];
      assert.deepEqual(
        top.filter((f) => !allowed.includes(f)),
        [],
        "unexpected files in the image",
      );
      assert.match(
        await Deno.readTextFile(`${root}/config.yaml`),
        new RegExp(`listen_addr: "127.0.0.1:${port}"`),
      );

      await Deno.mkdir(`${root}/proc`); // the runtime's mount point, not part of the image
      await using prox = spawnProx("unshare", [
        "--mount",
        `--mount-proc=${root}/proc`,
        findTool("chroot")!, // the child's environment is empty: no PATH
        "--userspec=65532:65532",
        root,
        "/deno",
        "run",
        "-A",
        "/prox.js",
        "serve",
        "--config",
        "/config.yaml",
      ], {
        clearEnv: true,
        env: {
          HOME: "/tmp",
          DENO_DIR: "/tmp/deno",
          NO_COLOR: "1",
          DENO_TLS_CA_STORE: "mozilla,system",
          SSL_CERT_FILE: "/etc/ssl/certs/ca-certificates.crt",
        },
      });
      const body = await fetchWhenUp(`http://127.0.0.1:${port}/`).catch(async (err) => {
        const out = await prox.stop();
        throw new Error(`${err.message}\nProx output:\n${out.stdout}${out.stderr}`);
      });
      const expected = await Deno.readTextFile(`${ROOT}/static/index.html`);
      assert.equal(body, expected);
      const missing = await fetch(`http://127.0.0.1:${port}/no/such/page`);
      assert.equal(missing.status, 404);
      assert.equal(await missing.text(), await Deno.readTextFile(`${ROOT}/static/404.html`));
      const out = await prox.stop();
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout + out.stderr, /Prox listening/);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
} else {
  Deno.test({ name: NAME, ignore: true, fn() {} });
}

import assert from "node:assert/strict";
import {
  ConfigReadError,
  configReadError,
  denoEnv,
  loadSource,
  MAX_CONFIG_BYTES,
  readReferencedFiles,
} from "./config_source.ts";

Deno.test("loadSource refuses a config that is not UTF-8, at the first bad byte", async () => {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    const yaml = (key: number[]) =>
      new Uint8Array([
        ...new TextEncoder().encode('listen_addr: "127.0.0.1:3000"\nroutes:\n  "/caf'),
        ...key,
        ...new TextEncoder().encode('": { type: redirect, target: "/x" }\n'),
      ]);
    // Latin-1 é: before, it became U+FFFD in the route key and the config loaded.
    await Deno.writeFile(path, yaml([0xe9]));
    const bad = await loadSource({ path });
    assert.equal(bad.config, undefined);
    assert.deepEqual(
      bad.issues.map((i) => [i.line, i.col, i.message]),
      [[3, 8, "The config is not UTF-8 text"]],
    );
    // The same key in UTF-8 loads; so does a file that starts with a byte-order mark.
    await Deno.writeFile(path, yaml([0xc3, 0xa9]));
    assert.ok((await loadSource({ path })).config?.routes["/café"]);
    await Deno.writeFile(path, new Uint8Array([0xef, 0xbb, 0xbf, ...yaml([0xc3, 0xa9])]));
    assert.ok((await loadSource({ path })).config);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("denoEnv.certificate says when cert_path and key_path are swapped", () => {
  const dir = new URL("../../tests/fixtures/config/certs/", import.meta.url).pathname;
  const r = denoEnv.certificate(`${dir}key.pem`, `${dir}cert.pem`);
  assert.ok("error" in r);
  // Only "Cannot read a PEM certificate" was said, without a fix.
  assert.equal(
    r.hint,
    `${dir}key.pem holds a private key and ${dir}cert.pem a certificate: swap cert_path and key_path`,
  );
  const plain = denoEnv.certificate(`${dir}empty.pem`, `${dir}key.pem`);
  assert.ok("error" in plain);
  assert.match(plain.hint!, /BEGIN CERTIFICATE/);
});

Deno.test("denoEnv.certificate says a directory named as cert_path or key_path is one, and names the file in it", async () => {
  const dir = new URL("../../tests/fixtures/config/certs/", import.meta.url).pathname;
  // certbot's layout: /etc/letsencrypt/live/<name>/{fullchain,privkey}.pem.
  const live = await Deno.makeTempDir({ prefix: "prox-live-" });
  try {
    await Deno.copyFile(`${dir}cert.pem`, `${live}/fullchain.pem`);
    await Deno.copyFile(`${dir}key.pem`, `${live}/privkey.pem`);
    // Only "Cannot read …: Is a directory (os error 21)" was said, without a fix.
    const key = denoEnv.certificate(`${live}/fullchain.pem`, live);
    assert.ok("error" in key);
    assert.equal(key.field, "key_path");
    assert.equal(key.error, `${live} is a directory, not a file`);
    assert.equal(key.hint, `Name the file itself: ${live}/privkey.pem`);
    const cert = denoEnv.certificate(live, `${live}/privkey.pem`);
    assert.ok("error" in cert);
    assert.equal(cert.field, "cert_path");
    assert.equal(cert.hint, `Name the file itself: ${live}/fullchain.pem`);
    await Deno.remove(`${live}/privkey.pem`);
    const none = denoEnv.certificate(`${live}/fullchain.pem`, `${live}/`);
    assert.ok("error" in none);
    assert.equal(none.hint, "Name the file itself (a PEM private key)");
  } finally {
    await Deno.remove(live, { recursive: true });
  }
});

Deno.test("loadSource says a relative path not found from the working directory is next to the config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-cfgdir-" });
  try {
    await Deno.mkdir(`${dir}/site-beside-config`);
    const path = `${dir}/prox.yaml`;
    await Deno.writeTextFile(
      path,
      'listen_addr: "127.0.0.1:0"\nroutes:\n  /: { type: static, root: ./site-beside-config }\n' +
        "  /b: { type: static, root: ./nowhere-at-all }\n",
    );
    const r = await loadSource({ path });
    assert.deepEqual(r.issues.map((i) => [i.line, i.message, i.hint]), [
      [
        3,
        "Directory not found: ./site-beside-config",
        // It said only that relative paths start from the working directory.
        `./site-beside-config is looked up from the working directory (${Deno.cwd()}), not from ` +
        `the config's; it is there beside the config: write ${dir}/site-beside-config, or start ` +
        `prox in ${dir}`,
      ],
      [
        4,
        "Directory not found: ./nowhere-at-all",
        "Create it or fix the path (relative to the working directory)",
      ],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("denoEnv.certificate says an encrypted key needs decrypting", async () => {
  const dir = new URL("../../tests/fixtures/config/certs/", import.meta.url).pathname;
  const tmp = await Deno.makeTempDir({ prefix: "prox-enc-key-" });
  try {
    await Deno.writeTextFile(
      `${tmp}/enc.pem`,
      "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAh=\n" +
        "-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    const r = denoEnv.certificate(`${dir}cert.pem`, `${tmp}/enc.pem`);
    assert.ok("error" in r);
    assert.match(r.hint!, /^The key is encrypted and Prox has no passphrase: decrypt it/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("loadSource refuses a config over MAX_CONFIG_BYTES: a big file, and /dev/zero that never ends", async () => {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeFile(path, new Uint8Array(MAX_CONFIG_BYTES + 1).fill(0x23)); // "#" comments
    for (const file of [path, "/dev/zero"]) {
      const err = await loadSource({ path: file }).then(() => null, (e) => e);
      assert.ok(err instanceof Error, `${file}: refused`);
      const said = configReadError(file, err);
      assert.ok(said instanceof ConfigReadError, String(said));
      assert.match(said.message, new RegExp(`^Cannot read config "${file}": .*4 MiB`));
      assert.match(said.hint, /4 MiB/);
    }
    // At the cap it is read (a file of comments: the config is empty, not refused).
    await Deno.writeFile(path, new Uint8Array(MAX_CONFIG_BYTES).fill(0x23));
    assert.ok((await loadSource({ path })).issues.length > 0);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("files a config names are read up to 64 MiB: /dev/zero as users_file, cert_path or ca_cert is refused", async () => {
  // validate read /dev/zero as a users_file or certificate forever; serve did as a ca_cert (a
  // pipe, so validate leaves it to start-up).
  const read = denoEnv.readText("/dev/zero");
  assert.ok("error" in read);
  assert.match(read.error, /^Cannot read \/dev\/zero: it gave more than 64 MiB without ending/);
  const pair = denoEnv.certificate("/dev/zero", "/dev/zero");
  assert.ok("error" in pair);
  assert.match(pair.error, /^Cannot read \/dev\/zero: it gave more than 64 MiB without ending/);
  const loaded = await loadSource({
    text: `listen_addr: "127.0.0.1:8080"
health_check: { enabled: false }
routes: { "/": { type: proxy, target: "https://127.0.0.1:9", tls: { ca_cert: /dev/zero } } }
`,
    name: "c.yaml",
  });
  assert.ok(loaded.config, JSON.stringify(loaded.issues));
  await assert.rejects(
    readReferencedFiles(loaded.config),
    /^Error: Cannot read \/dev\/zero: it gave more than 64 MiB without ending/,
  );
});

import assert from "node:assert/strict";
import { openAcmeStore, pairMatches } from "./acme_store.ts";

const TLS = new URL("../../tests/fixtures/tls/", import.meta.url).pathname;
const cert = Deno.readTextFileSync(`${TLS}cert.pem`);
const key = Deno.readTextFileSync(`${TLS}key.pem`);
const caKey = Deno.readTextFileSync(`${TLS}ca.key`);

async function withStore(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "prox-acme-store-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("openAcmeStore writes the pair under stable names, the key 0600, and reads it back", () =>
  withStore(async (dir) => {
    const store = await openAcmeStore(dir, { name: "example.com" });
    assert.equal(await store.readCertificate(), null);
    assert.equal(await store.certificateStamp(), null);
    await store.writeCertificate({ cert, key });
    assert.deepEqual(await store.readCertificate(), { cert, key });
    assert.equal((await Deno.stat(`${dir}/example.com.key`)).mode! & 0o777, 0o600);
    assert.notEqual(await store.certificateStamp(), null);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "challenges",
      "example.com.crt",
      "example.com.key",
    ]);
  }));

Deno.test("openAcmeStore names storage_path and the fix when it cannot create the directory", () =>
  withStore(async (dir) => {
    await Deno.writeTextFile(`${dir}/file`, "");
    await assert.rejects(
      openAcmeStore(`${dir}/file/acme`, { name: "example.com" }),
      new RegExp(
        `^Error: Cannot create the ACME storage "${dir}/file/acme" \\(tls\\.acme\\.storage_path\\): not a directory; point storage_path at a writable directory$`,
      ),
    );
  }));

/**
 * What openAcmeStore says about `dir` when the user it runs as cannot write there. Root writes
 * anywhere: as root, it runs in a subprocess as nobody (setpriv), as an unprivileged Prox would.
 */
async function openAsUnprivileged(dir: string): Promise<string> {
  if (Deno.uid() !== 0) {
    await Deno.chmod(dir, 0o500);
    try {
      return await openAcmeStore(dir, { name: "example.com" }).then(() => "opened", String);
    } finally {
      await Deno.chmod(dir, 0o700);
    }
  }
  const home = await Deno.makeTempDir({ prefix: "prox-acme-nobody-" });
  try {
    await Deno.chmod(home, 0o777);
    // The modules it needs, copied where nobody can read them (the checkout may be in a home
    // directory only root reads).
    for (const f of ["acme_store.ts", "pem_chain.ts"]) {
      await Deno.copyFile(new URL(`./${f}`, import.meta.url), `${home}/${f}`);
      await Deno.chmod(`${home}/${f}`, 0o644);
    }
    const code = `import { openAcmeStore } from ${JSON.stringify(`${home}/acme_store.ts`)};
try { await openAcmeStore(${JSON.stringify(dir)}, { name: "example.com" }); console.log("opened"); }
catch (e) { console.log(String(e)); }`;
    const out = await new Deno.Command("setpriv", {
      args: ["--reuid=65534", "--regid=65534", "--clear-groups", Deno.execPath(), "eval", code],
      env: { DENO_DIR: home, HOME: home, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert.ok(out.success && text, new TextDecoder().decode(out.stderr));
    return text;
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

Deno.test("openAcmeStore refuses at start a storage directory it cannot write (not at renewal, months later)", () =>
  withStore(async (dir) => {
    // As an operator's directory made by root for a Prox that runs as another user.
    await Deno.mkdir(`${dir}/acme/challenges`, { recursive: true });
    await Deno.chmod(dir, 0o755);
    await Deno.chmod(`${dir}/acme`, 0o755);
    assert.equal(
      await openAsUnprivileged(`${dir}/acme`),
      `Error: Cannot write to the ACME storage "${dir}/acme" (tls.acme.storage_path): permission denied; point storage_path at a writable directory`,
    );
    // Nothing left behind by the check in a directory it can write.
    await openAcmeStore(`${dir}/acme`, { name: "example.com" });
    assert.deepEqual([...Deno.readDirSync(`${dir}/acme`)].map((e) => e.name), ["challenges"]);
    assert.deepEqual([...Deno.readDirSync(`${dir}/acme/challenges`)], []);
  }));

Deno.test("openAcmeStore rejects a key that does not belong to the certificate", () =>
  withStore(async (dir) => {
    assert.equal(pairMatches(cert, key), true);
    assert.equal(pairMatches(cert, caKey), false);
    const store = await openAcmeStore(dir, { name: "example.com" });
    await store.writeCertificate({ cert, key: caKey });
    assert.equal(await store.readCertificate(), null);
  }));

Deno.test("openAcmeStore rejects a truncated or damaged chain (the listener could not load it)", () =>
  withStore(async (dir) => {
    const ca = Deno.readTextFileSync(`${TLS}ca.pem`);
    const store = await openAcmeStore(dir, { name: "example.com" });
    await store.writeCertificate({ cert: cert + ca, key });
    assert.deepEqual(await store.readCertificate(), { cert: cert + ca, key });
    await store.writeCertificate({ cert: cert + ca.slice(0, 200), key });
    assert.equal(await store.readCertificate(), null);
    const damaged = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    await store.writeCertificate({ cert: cert + damaged, key });
    assert.equal(await store.readCertificate(), null);
  }));

Deno.test("openAcmeStore creates the account key once", () =>
  withStore(async (dir) => {
    const store = await openAcmeStore(dir, { name: "x" });
    assert.equal(await store.createAccountKey("first"), "first");
    assert.equal(await store.createAccountKey("second"), "first");
    assert.equal((await Deno.stat(`${dir}/account.key`)).mode! & 0o777, 0o600);
    await store.writeAccount({
      directoryUrl: "https://ca/dir",
      accountUrl: "https://ca/a/1",
      email: "e@x.io",
    });
    assert.equal((await store.readAccount())?.accountUrl, "https://ca/a/1");
  }));

Deno.test("openAcmeStore lock: one holder at a time, stale locks expire, release frees it", () =>
  withStore(async (dir) => {
    const a = await openAcmeStore(dir, { name: "x" });
    const b = await openAcmeStore(dir, { name: "x" });
    const now = Date.now();
    const held = await a.tryLock({ staleMs: 60_000, now });
    assert.ok(held);
    assert.equal(await b.tryLock({ staleMs: 60_000, now }), null);
    // Seen from far in the future, the lock is stale and taken over; the old holder's release
    // then leaves the new holder's lock alone.
    const taken = await b.tryLock({ staleMs: 60_000, now: now + 120_000 });
    assert.ok(taken);
    await held.release();
    assert.equal(await a.tryLock({ staleMs: 60_000, now }), null);
    await taken.release();
    const again = await a.tryLock({ staleMs: 60_000, now });
    assert.ok(again);
    await again.release();
  }));

Deno.test("openAcmeStore challenges: tokens are files, path tricks are refused", () =>
  withStore(async (dir) => {
    const store = await openAcmeStore(dir, { name: "x" });
    await store.writeChallenge("tok_EN-1", "tok_EN-1.thumb");
    assert.equal(await store.readChallenge("tok_EN-1"), "tok_EN-1.thumb");
    assert.equal(await store.readChallenge("../x.key"), null);
    await assert.rejects(store.writeChallenge("../evil", "x"), /Invalid ACME challenge token/);
    await store.removeChallenge("tok_EN-1");
    assert.equal(await store.readChallenge("tok_EN-1"), null);
  }));

Deno.test("openAcmeStore challenges: one left behind over an hour ago (a crashed order) is not answered, as Redis's expire", () =>
  withStore(async (dir) => {
    const store = await openAcmeStore(dir, { name: "x" });
    await store.writeChallenge("left", "left.thumb");
    await store.writeChallenge("pending", "pending.thumb");
    // Pruned only when the next order starts, which may be two months away.
    const old = new Date(Date.now() - 2 * 3_600_000);
    await Deno.utime(`${dir}/challenges/left`, old, old);
    assert.equal(await store.readChallenge("left"), null);
    assert.equal(await store.readChallenge("pending"), "pending.thumb");
  }));

Deno.test("openAcmeStore lock refresh keeps a long-held lock from looking stale; old challenges are pruned", () =>
  withStore(async (dir) => {
    const store = await openAcmeStore(dir, { name: "x" });
    const lock = (await store.tryLock({ staleMs: 60_000, now: Date.now() }))!;
    const old = new Date(Date.now() - 120_000);
    await Deno.utime(`${dir}/order.lock`, old, old);
    await lock.refresh();
    assert.equal(await store.tryLock({ staleMs: 60_000, now: Date.now() }), null);
    await lock.release();

    await store.writeChallenge("stale", "a");
    await store.writeChallenge("fresh", "b");
    await Deno.utime(`${dir}/challenges/stale`, old, old);
    await store.pruneChallenges({ maxAgeMs: 60_000, now: Date.now() });
    assert.equal(await store.readChallenge("stale"), null);
    assert.equal(await store.readChallenge("fresh"), "b");
  }));

Deno.test("openAcmeStore lock: of instances that find the same stale lock, one takes it over", () =>
  withStore(async (dir) => {
    const stores = await Promise.all([0, 1, 2].map(() => openAcmeStore(dir, { name: "x" })));
    for (let round = 0; round < 10; round++) {
      // Left by a crashed instance long ago.
      await Deno.writeTextFile(`${dir}/order.lock`, "{}");
      await Deno.utime(`${dir}/order.lock`, new Date(0), new Date(0));
      const now = Date.now();
      const locks = await Promise.all(stores.map((s) => s.tryLock({ staleMs: 60_000, now })));
      const held = locks.filter((l) => l !== null);
      assert.equal(held.length, 1, `round ${round}: ${held.length} holders`);
      await held[0]!.release();
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["challenges"]);
    }
  }));

Deno.test("openAcmeStore: an order after the directory was removed recreates it", () =>
  withStore(async (dir) => {
    const store = await openAcmeStore(`${dir}/acme`, { name: "example.com" });
    await Deno.remove(`${dir}/acme`, { recursive: true });
    const lock = await store.tryLock({ staleMs: 60_000, now: Date.now() });
    assert.ok(lock);
    await store.pruneChallenges({ maxAgeMs: 1, now: Date.now() });
    await store.writeChallenge("tok", "tok.thumb");
    assert.equal(await store.readChallenge("tok"), "tok.thumb");
    await store.writeCertificate({ cert, key });
    assert.deepEqual(await store.readCertificate(), { cert, key });
    assert.equal((await Deno.stat(`${dir}/acme`)).mode! & 0o777, 0o700);
    await lock.release();
  }));

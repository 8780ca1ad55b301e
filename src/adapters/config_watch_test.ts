import assert from "node:assert/strict";
import { filePrint, watchFiles } from "./config_watch.ts";
import { silentLogger } from "../ports.ts";
import { waitFor } from "../../tests/_harness.ts";

// Real files in a temp directory, real Deno.watchFs; conditions are awaited, never slept on.

async function setup(names: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "prox-watch-" });
  const paths = names.map((n) => `${dir}/${n}`);
  for (const p of paths) await Deno.writeTextFile(p, "v0");
  return { dir, paths };
}

Deno.test("watchFiles sees a save by rename (new inode) and reports the changed path", async () => {
  const { dir, paths: [file] } = await setup(["config.yaml"]);
  const calls: string[][] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: (c) => void calls.push(c),
  });
  try {
    // The baseline is read in the background: a save before it is read would be the baseline.
    await w.ready;
    await Deno.writeTextFile(`${dir}/.config.yaml.swp`, "v1");
    await Deno.rename(`${dir}/.config.yaml.swp`, file);
    await waitFor(() => calls.length === 1, { what: "one change" });
    assert.deepEqual(calls, [[file]]);
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles debounces a burst into one call and never drops a change made during a call", async () => {
  const { dir, paths: [file] } = await setup(["config.yaml"]);
  const seen: string[] = [];
  const release = Promise.withResolvers<void>();
  let entered = Promise.withResolvers<void>();
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 200,
    onChange: async () => {
      seen.push(await Deno.readTextFile(file));
      entered.resolve();
      if (seen.length === 1) await release.promise;
    },
  });
  try {
    await w.ready;
    for (let i = 1; i <= 5; i++) await Deno.writeTextFile(file, `burst ${i}`);
    await entered.promise;
    entered = Promise.withResolvers<void>();
    // The first call is still running: this change must produce a second call.
    await Deno.writeTextFile(file, "during");
    release.resolve();
    await entered.promise;
    assert.deepEqual(seen, ["burst 5", "during"]);
  } finally {
    release.resolve();
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles ignores rewrites with identical content and follows setFiles", async () => {
  const { dir, paths: [a, b] } = await setup(["config.yaml", "cert.pem"]);
  const calls: string[][] = [];
  const w = watchFiles([a], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: (c) => void calls.push(c),
  });
  try {
    await w.ready;
    w.setFiles([a, b]);
    let n = 0;
    await waitFor(async () => {
      // Same content for a (not a change), new content for b (a change): only b is reported.
      // (by rename: an in-place rewrite is briefly empty, which is a real change when read)
      await Deno.writeTextFile(`${a}.tmp`, "v0");
      await Deno.rename(`${a}.tmp`, a);
      await Deno.writeTextFile(b, `v${++n}`);
      return calls.length > 0;
    }, { what: "a change to b" });
    assert.deepEqual(calls[0], [b]);
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles follows a Kubernetes ConfigMap update (..data symlink swapped by rename)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-watch-k8s-" });
  // The kubelet's atomic writer: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>.
  await Deno.mkdir(`${dir}/..v1`);
  await Deno.writeTextFile(`${dir}/..v1/config.yaml`, "v1");
  await Deno.symlink("..v1", `${dir}/..data`);
  await Deno.symlink("..data/config.yaml", `${dir}/config.yaml`);
  const file = `${dir}/config.yaml`;
  const seen: string[] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: async () => void seen.push(await Deno.readTextFile(file)),
  });
  try {
    await w.ready;
    await Deno.mkdir(`${dir}/..v2`);
    await Deno.writeTextFile(`${dir}/..v2/config.yaml`, "v2");
    await Deno.symlink("..v2", `${dir}/..data_tmp`);
    await Deno.rename(`${dir}/..data_tmp`, `${dir}/..data`);
    await waitFor(() => seen.includes("v2"), { what: "the swapped ConfigMap content" });
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles sees edits of a symlinked file's target, also after a repoint", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-watch-link-" });
  // -c site/link.yaml where link.yaml -> ../real/actual.yaml (another name, another directory).
  await Deno.mkdir(`${dir}/site`);
  await Deno.mkdir(`${dir}/real`);
  await Deno.writeTextFile(`${dir}/real/actual.yaml`, "v1");
  await Deno.writeTextFile(`${dir}/real/next.yaml`, "n1");
  await Deno.symlink("../real/actual.yaml", `${dir}/site/link.yaml`);
  const file = `${dir}/site/link.yaml`;
  const seen: string[] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: async () => void seen.push(await Deno.readTextFile(file)),
  });
  try {
    await w.ready;
    await Deno.writeTextFile(`${dir}/real/actual.yaml`, "v2"); // edited in place
    await waitFor(() => seen.includes("v2"), { what: "the edit of the link's target" });
    await Deno.symlink("../real/next.yaml", `${dir}/site/tmp.yaml`);
    await Deno.rename(`${dir}/site/tmp.yaml`, file);
    await waitFor(() => seen.includes("n1"), { what: "the repointed link" });
    await Deno.writeTextFile(`${dir}/real/next.yaml`, "n2");
    await waitFor(() => seen.includes("n2"), { what: "an edit of the new target" });
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles waits for a slow writer: half a file is never reported", async () => {
  const { dir, paths: [file] } = await setup(["config.yaml"]);
  const seen: string[] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    settleMs: 300,
    onChange: async () => void seen.push(await Deno.readTextFile(file)),
  });
  try {
    await w.ready;
    // An in-place save in two writes with a pause longer than the debounce.
    const f = await Deno.open(file, { write: true, truncate: true });
    await f.write(new TextEncoder().encode("first half, "));
    await new Promise((r) => setTimeout(r, 100));
    await f.write(new TextEncoder().encode("second half"));
    f.close();
    await waitFor(() => seen.length > 0, { what: "the change" });
    assert.deepEqual(seen, ["first half, second half"]);
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles waits until an in-place writer closes the file, however long it pauses", async () => {
  const { dir, paths: [file] } = await setup(["config.yaml"]);
  const seen: string[] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: async () => void seen.push(await Deno.readTextFile(file)),
  });
  try {
    await w.ready;
    // A generator writing a config piece by piece (one lookup per route), the file held open:
    // its pauses are longer than the debounce and the 50 ms settle check together.
    const f = await Deno.open(file, { write: true, truncate: true });
    for (const part of ["routes:\n", "  /a: x\n", "  /b: y\n"]) {
      await f.write(new TextEncoder().encode(part));
      await new Promise((r) => setTimeout(r, 150));
    }
    f.close();
    await waitFor(() => seen.length > 0, { what: "the change" });
    assert.deepEqual(seen, ["routes:\n  /a: x\n  /b: y\n"]);
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watchFiles follows a directory removed and created again (rm -rf certs; mkdir certs)", async () => {
  const { dir: parent } = await setup([]);
  const dir = `${parent}/certs`;
  await Deno.mkdir(dir);
  const file = `${dir}/cert.pem`;
  await Deno.writeTextFile(file, "v0");
  const seen: string[] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: async () => void seen.push(await Deno.readTextFile(file).catch(() => "missing")),
  });
  try {
    await w.ready;
    // A deploy script: the directory goes, a new one comes. The watch was on the old
    // directory's inode and saw nothing more: new certificates needed a SIGHUP.
    await Deno.remove(dir, { recursive: true });
    await waitFor(() => seen.includes("missing"), { what: "the removal" });
    await Deno.mkdir(dir);
    await Deno.writeTextFile(file, "v1");
    await waitFor(() => seen.at(-1) === "v1", { what: "the new directory's file" });
    await Deno.writeTextFile(file, "v2");
    await waitFor(() => seen.at(-1) === "v2", { what: "a later edit in it" });
  } finally {
    w.close();
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("watchFiles watches a directory that does not exist yet once it is created", async () => {
  const { dir: parent } = await setup([]);
  const file = `${parent}/later/cert.pem`;
  const calls: string[][] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: (c) => void calls.push(c),
  });
  try {
    await w.ready;
    // A config naming certificates not deployed yet: their directory came later, unwatched.
    await Deno.mkdir(`${parent}/later`);
    await Deno.writeTextFile(file, "v1");
    await waitFor(() => calls.length > 0, { what: "the new directory's file" });
    assert.deepEqual(calls, [[file]]);
  } finally {
    w.close();
    await Deno.remove(parent, { recursive: true });
  }
});

Deno.test("watchFiles follows a symlinked directory on the way repointed (ln -sfn v2 current)", async () => {
  const { dir } = await setup([]);
  for (const v of ["v1", "v2"]) {
    await Deno.mkdir(`${dir}/${v}`);
    await Deno.writeTextFile(`${dir}/${v}/cert.pem`, v);
  }
  await Deno.symlink("v1", `${dir}/current`);
  const file = `${dir}/current/cert.pem`;
  const seen: string[] = [];
  const w = watchFiles([file], {
    logger: silentLogger,
    debounceMs: 20,
    onChange: async () => void seen.push(await Deno.readTextFile(file)),
  });
  try {
    await w.ready;
    // A release switch: the link is replaced by rename in its own directory, which was not
    // watched (only current/ and its target were).
    await Deno.symlink("v2", `${dir}/current.new`);
    await Deno.rename(`${dir}/current.new`, `${dir}/current`);
    await waitFor(() => seen.at(-1) === "v2", { what: "the repointed directory's file" });
    await Deno.writeTextFile(`${dir}/v2/cert.pem`, "v2b");
    await waitFor(() => seen.at(-1) === "v2b", { what: "an edit in the new target" });
  } finally {
    w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("filePrint does not read a huge file whole, and still tells when it changes", async () => {
  const { dir, paths: [file] } = await setup(["config.yaml"]);
  try {
    // A sparse terabyte (no disk used): it was read whole (any size that fits in memory), and this
    // one gave "(unreadable: out of memory)" before and after the change, so the change was missed.
    await Deno.truncate(file, 2 ** 40);
    const before = await filePrint(file);
    await Deno.truncate(file, 2 ** 40 + 1);
    assert.notEqual(await filePrint(file), before);
    assert.doesNotMatch(before, /unreadable/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

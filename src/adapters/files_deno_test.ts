import assert from "node:assert/strict";
import { createDenoFileStore } from "./files_deno.ts";

/** A temp tree: root/{a.txt, sub/b.txt, link-in -> a.txt, link-out -> ../secret.txt, dirlink -> ../outside}. */
async function tree(): Promise<{ base: string; root: string } & AsyncDisposable> {
  const base = await Deno.makeTempDir({ prefix: "prox-files-" });
  const root = `${base}/root`;
  await Deno.mkdir(`${root}/sub`, { recursive: true });
  await Deno.mkdir(`${base}/outside`);
  await Deno.writeTextFile(`${root}/a.txt`, "0123456789");
  await Deno.writeTextFile(`${root}/sub/b.txt`, "bee");
  await Deno.writeTextFile(`${base}/secret.txt`, "top secret");
  await Deno.writeTextFile(`${base}/outside/key.txt`, "key");
  await Deno.symlink(`${root}/a.txt`, `${root}/link-in`);
  await Deno.symlink("../secret.txt", `${root}/link-out`);
  await Deno.symlink("../outside", `${root}/dirlink`);
  return {
    base,
    root,
    async [Symbol.asyncDispose]() {
      await Deno.remove(base, { recursive: true });
    },
  };
}

async function read(
  s: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null,
): Promise<string | null> {
  return s ? await new Response(s).text() : null;
}

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

Deno.test("createDenoFileStore stat reports files and directories inside the root", async () => {
  await using t = await tree();
  const fs = createDenoFileStore();
  const a = await fs.stat(t.root, "a.txt");
  assert.equal(a?.isFile, true);
  assert.equal(a?.size, 10);
  assert.equal(typeof a?.mtime, "number");
  assert.equal((await fs.stat(t.root, "/sub"))?.isDirectory, true);
  assert.equal((await fs.stat(t.root, ""))?.isDirectory, true);
  assert.equal(await fs.stat(t.root, "missing.txt"), null);
  assert.equal(await fs.stat(t.root, "a.txt/x"), null);
  assert.equal(await fs.stat(`${t.base}/no-such-root`, "a.txt"), null);
});

Deno.test("createDenoFileStore refuses symlinks and dot segments that leave the root", async () => {
  await using t = await tree();
  const fs = createDenoFileStore();
  assert.equal((await fs.stat(t.root, "link-in"))?.size, 10);
  assert.equal(await fs.stat(t.root, "link-out"), null);
  assert.equal(await fs.stat(t.root, "dirlink/key.txt"), null);
  assert.equal(await fs.stat(t.root, "../secret.txt"), null);
  assert.equal(await fs.stat(t.root, "sub/../../secret.txt"), null);
  assert.equal(await fs.stat(t.root, "a.txt\0"), null);
  assert.equal(await fs.open(t.root, "link-out"), null);
  assert.equal(await fs.open(t.root, "dirlink/key.txt"), null);
  assert.equal(await read(await fs.open(t.root, "link-in")), "0123456789");
});

Deno.test("createDenoFileStore stat hands open the resolved path of regular files only", async () => {
  await using t = await tree();
  const fs = createDenoFileStore();
  const viaLink = await fs.stat(t.root, "link-in");
  assert.equal(viaLink?.handle, Deno.realPathSync(`${t.root}/a.txt`));
  assert.equal((await fs.stat(t.root, "sub"))?.handle, undefined);
  // open trusts the handle: the path it is given alongside is not resolved again.
  assert.equal(
    await read(await fs.open(t.root, "ignored", undefined, viaLink!.handle)),
    "0123456789",
  );
  assert.equal(await read(await fs.open(t.root, "link-in")), "0123456789");
});

Deno.test("createDenoFileStore open streams whole files and inclusive ranges", async () => {
  await using t = await tree();
  const fs = createDenoFileStore();
  assert.equal(await read(await fs.open(t.root, "a.txt")), "0123456789");
  assert.equal(await read(await fs.open(t.root, "a.txt", { start: 2, end: 4 })), "234");
  assert.equal(await read(await fs.open(t.root, "a.txt", { start: 9, end: 9 })), "9");
  await assert.rejects(fs.open(t.root, "a.txt", { start: 5, end: 100 }), /shrank/, "past the end");
  assert.equal(await fs.open(t.root, "sub"), null);
  assert.equal(await fs.open(t.root, "missing"), null);
});

Deno.test("createDenoFileStore streams a multi-chunk file byte for byte", async () => {
  await using t = await tree();
  const data = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
  await Deno.writeFile(`${t.root}/big.bin`, data);
  const fs = createDenoFileStore();
  const got = new Uint8Array(await new Response(await fs.open(t.root, "big.bin")).arrayBuffer());
  assert.deepEqual(got, data);
  const part = await new Response(await fs.open(t.root, "big.bin", { start: 65_530, end: 200_000 }))
    .arrayBuffer();
  assert.deepEqual(new Uint8Array(part), data.subarray(65_530, 200_001));
});

Deno.test("createDenoFileStore leaks no descriptor on stat, full reads or cancelled streams", async () => {
  await using t = await tree();
  await Deno.writeFile(`${t.root}/big.bin`, new Uint8Array(500_000));
  const fs = createDenoFileStore();
  const before = openFds();
  for (let i = 0; i < 50; i++) await fs.stat(t.root, "big.bin");
  for (let i = 0; i < 10; i++) await read(await fs.open(t.root, "a.txt", { start: 1, end: 3 }));
  for (let i = 0; i < 10; i++) {
    const s = (await fs.open(t.root, "big.bin")) as ReadableStream<Uint8Array>;
    const reader = s.getReader();
    await reader.read();
    await reader.cancel();
  }
  assert.equal(openFds(), before);
});

Deno.test("createDenoFileStore reads files up to 64 KiB whole and streams larger ones", async () => {
  await using t = await tree();
  const data = new Uint8Array(65_537).map((_, i) => (i * 13) & 0xff);
  await Deno.writeFile(`${t.root}/edge.bin`, data);
  const fs = createDenoFileStore();
  const before = openFds();
  const small = await fs.open(t.root, "edge.bin", { start: 1, end: 65_536 });
  assert.ok(small instanceof Uint8Array, "64 KiB range read whole");
  assert.deepEqual(small, data.subarray(1));
  assert.equal(openFds(), before, "file closed after a whole read");
  const whole = await fs.open(t.root, "edge.bin");
  assert.ok(whole instanceof ReadableStream, "64 KiB + 1 streamed");
  assert.deepEqual(new Uint8Array(await new Response(whole).arrayBuffer()), data);
});

Deno.test("createDenoFileStore sends only the announced bytes of a file that grew since stat", async () => {
  await using t = await tree();
  const fs = createDenoFileStore();
  const st = (await fs.stat(t.root, "a.txt"))!;
  await Deno.writeTextFile(`${t.root}/a.txt`, "abcdefghijKLMNOP");
  const body = await read(await fs.open(t.root, "a.txt", { start: 0, end: st.size - 1 }));
  assert.equal(body, "abcdefghij");
  assert.equal(await read(await fs.open(t.root, "a.txt", { start: 10, end: 15 })), "KLMNOP");
});

Deno.test("createDenoFileStore fails a small file that shrank since stat instead of sending less", async () => {
  await using t = await tree();
  const fs = createDenoFileStore();
  const st = (await fs.stat(t.root, "a.txt"))!;
  const before = openFds();
  await Deno.writeTextFile(`${t.root}/a.txt`, "01234");
  await assert.rejects(
    fs.open(t.root, "a.txt", { start: 0, end: st.size - 1 }, st.handle),
    /shrank/,
  );
  assert.equal(openFds(), before, "file closed after the failed read");
  // The same range read after a fresh stat is what the file holds now.
  const now = (await fs.stat(t.root, "a.txt"))!;
  assert.equal(
    await read(await fs.open(t.root, "a.txt", { start: 0, end: now.size - 1 }, now.handle)),
    "01234",
  );
});

Deno.test("createDenoFileStore fails a large file that shrank below the announced range", async () => {
  await using t = await tree();
  await Deno.writeFile(`${t.root}/big.bin`, new Uint8Array(200_000));
  const fs = createDenoFileStore();
  const st = (await fs.stat(t.root, "big.bin"))!;
  // Overwritten in place (a deploy's cp) between stat and open: now 1,000 bytes.
  await Deno.writeFile(`${t.root}/big.bin`, new Uint8Array(1_000));
  const before = openFds();
  for (const handle of [st.handle, undefined]) {
    await assert.rejects(
      fs.open(t.root, "big.bin", { start: 0, end: st.size - 1 }, handle),
      /shrank/,
      "a body shorter than the Content-Length already announced",
    );
  }
  assert.equal(openFds(), before, "file closed after the failed open");
});

Deno.test("createDenoFileStore follows a root symlink pointed elsewhere at the next request", async () => {
  await using t = await tree();
  await Deno.mkdir(`${t.base}/release-2`);
  await Deno.writeTextFile(`${t.base}/release-2/a.txt`, "two");
  await Deno.writeTextFile(`${t.base}/release-2/new.txt`, "new");
  await Deno.symlink(t.root, `${t.base}/current`);
  const fs = createDenoFileStore();
  const current = `${t.base}/current`;
  assert.equal((await fs.stat(current, "a.txt"))?.size, 10);
  assert.equal(await fs.stat(current, "new.txt"), null);
  // Swap the link the way deployments do (a new link renamed over the old one).
  await Deno.symlink(`${t.base}/release-2`, `${t.base}/next`);
  await Deno.rename(`${t.base}/next`, current);
  const a = await fs.stat(current, "a.txt");
  assert.equal(a?.size, 3);
  assert.equal(a?.handle, Deno.realPathSync(`${t.base}/release-2/a.txt`));
  assert.equal(await read(await fs.open(current, "new.txt")), "new");
  // What lies outside the new target stays refused, remembered root or not.
  assert.equal(await fs.stat(current, "../root/a.txt"), null);
  await Deno.symlink(`${t.root}/a.txt`, `${t.base}/release-2/old-link`);
  assert.equal(await fs.stat(current, "old-link"), null);
});

Deno.test("createDenoFileStore open serves nothing out of the root when a file or directory was swapped for a symlink after stat", async () => {
  await using t = await tree();
  // Secrets as long as the files they stand in for, so a read of the announced length succeeds.
  await Deno.writeTextFile(`${t.base}/secret.txt`, "TOP SECRET");
  await Deno.writeTextFile(`${t.base}/outside/b.txt`, "KEY");
  const big = new Uint8Array(200_000).fill(0x61);
  await Deno.writeFile(`${t.root}/big.bin`, big);
  await Deno.writeFile(`${t.base}/outside/big.bin`, new Uint8Array(200_000).fill(0x53));
  const fs = createDenoFileStore();
  const before = openFds();
  // A user who may write in the root swaps names between the route's stat and its open (a
  // rename loop wins that race now and then): the file itself, a directory on its path, a large
  // file on the streaming path, and each without the handle stat gave.
  const cases: [string, () => Promise<void>][] = [
    ["a.txt", async () => {
      await Deno.remove(`${t.root}/a.txt`);
      await Deno.symlink("../secret.txt", `${t.root}/a.txt`);
    }],
    ["sub/b.txt", async () => {
      await Deno.rename(`${t.root}/sub`, `${t.root}/sub-away`);
      await Deno.symlink("../outside", `${t.root}/sub`);
    }],
    ["big.bin", async () => {
      await Deno.rename(`${t.root}/big.bin`, `${t.root}/big-away.bin`);
      await Deno.symlink("../outside/big.bin", `${t.root}/big.bin`);
    }],
  ];
  for (const [rel, swap] of cases) {
    const st = (await fs.stat(t.root, rel))!;
    assert.equal(st.isFile, true, rel);
    await swap();
    for (const handle of [st.handle, undefined]) {
      const got = await fs.open(t.root, rel, { start: 0, end: st.size - 1 }, handle);
      const bytes = got === null ? null : new Uint8Array(await new Response(got).arrayBuffer());
      assert.equal(bytes, null, `${rel} (${handle ? "handle" : "no handle"}): out of the root`);
    }
  }
  assert.equal(openFds(), before, "nothing left open");
});

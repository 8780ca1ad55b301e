// `browse` on a static route: a directory without its index file is listed, HTML for browsers
// and JSON for scripts, through a real Prox on real files: names escaped and links encoded,
// dotfiles and symlinks out of the root left out, an index file still served, HEAD bodiless.
import assert from "node:assert/strict";
import { startProxy } from "./_proxy.ts";

Deno.test("static browse: a listing of a directory without index.html, escaped, HTML or JSON", async () => {
  const base = await Deno.makeTempDir({ prefix: "prox-browse-" });
  const root = `${base}/www`;
  try {
    await Deno.mkdir(`${root}/sub dir`, { recursive: true });
    await Deno.mkdir(`${root}/site`);
    await Deno.writeTextFile(`${root}/site/index.html`, "<h1>site</h1>");
    await Deno.writeTextFile(`${root}/a.txt`, "0123456789");
    await Deno.writeTextFile(`${root}/<b>&"x".txt`, "odd");
    await Deno.writeTextFile(`${root}/.env`, "SECRET=1");
    await Deno.writeTextFile(`${root}/sub dir/inner.txt`, "in");
    await Deno.writeTextFile(`${base}/secret.txt`, "top secret");
    await Deno.symlink(`${base}/secret.txt`, `${root}/escape.txt`);
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /files: { type: static, root: "${root}", browse: true }
  /plain: { type: static, root: "${root}" }
`);
    const res = await fetch(`${prox.url}/files/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
    const page = await res.text();
    assert.match(page, /<title>Index of \/files\/<\/title>/);
    // Directories first; a name's markup escaped, its link percent-encoded.
    assert.ok(page.indexOf("sub dir/") < page.indexOf("a.txt"));
    assert.match(page, /<a href="sub%20dir\/">sub dir\/<\/a>/);
    assert.match(page, /<a href="%3Cb%3E%26%22x%22\.txt">&lt;b&gt;&amp;&quot;x&quot;\.txt<\/a>/);
    assert.doesNotMatch(page, /\.env|escape\.txt|<b>&/);
    assert.doesNotMatch(page, /href="\.\.\/"/); // the route's root has no parent link
    // JSON for a script; a subdirectory has its parent link and its own entries.
    const json = await (await fetch(`${prox.url}/files/`, {
      headers: { accept: "application/json" },
    })).json();
    assert.deepEqual(
      json.entries.map((e: { name: string; type: string; size: number | null }) => [
        e.name,
        e.type,
        e.size,
      ]),
      [["site", "directory", null], ["sub dir", "directory", null], ['<b>&"x".txt', "file", 3], [
        "a.txt",
        "file",
        10,
      ]],
    );
    const sub = await (await fetch(`${prox.url}/files/sub%20dir/`)).text();
    assert.match(sub, /href="\.\.\/"/);
    assert.match(sub, /inner\.txt/);
    // An index file is served as ever; HEAD has the listing's length and no body.
    assert.equal(await (await fetch(`${prox.url}/files/site/`)).text(), "<h1>site</h1>");
    const head = await fetch(`${prox.url}/files/`, { method: "HEAD" });
    assert.equal(head.headers.get("content-length"), String(new TextEncoder().encode(page).length));
    assert.equal(await head.text(), "");
    // Without browse: 404 as before.
    const plain = await fetch(`${prox.url}/plain/`);
    await plain.body?.cancel();
    assert.equal(plain.status, 404);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("static browse: every link listed is one the route serves (a backslash in a name is not)", async () => {
  const root = await Deno.makeTempDir({ prefix: "prox-browse-" });
  try {
    for (const n of ["back\\slash.txt", "a#b?c%d.txt", "nl\nx.txt"]) {
      await Deno.writeTextFile(`${root}/${n}`, "abc");
    }
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /: { type: static, root: "${root}", browse: true }
`);
    const page = await (await fetch(`${prox.url}/`)).text();
    const links = [...page.matchAll(/href="([^"]*)"/g)].map((m) => m[1]);
    assert.equal(links.length, 2, links.join());
    for (const link of links) {
      const res = await fetch(`${prox.url}/${link}`);
      assert.equal(res.status, 200, link);
      assert.equal(await res.text(), "abc");
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("static browse: hidden dotfiles do not use up the listing's 1,000 entries", async () => {
  const base = await Deno.makeTempDir({ prefix: "prox-browse-" });
  try {
    // A build cache beside the downloads: 1,000 dotfiles and one file to list.
    for (let i = 0; i < 1000; i++) Deno.writeTextFileSync(`${base}/.cache-${i}`, "");
    await Deno.writeTextFile(`${base}/release.zip`, "zip");
    await using prox = await startProxy(`
health_check: { enabled: false }
routes:
  /: { type: static, root: "${base}", browse: true }
`);
    const json = await (await fetch(`${prox.url}/`, {
      headers: { accept: "application/json" },
    })).json();
    assert.deepEqual(json.entries.map((e: { name: string }) => e.name), ["release.zip"]);
    assert.equal(json.truncated, false);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
});

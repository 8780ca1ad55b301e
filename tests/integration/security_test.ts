// Hostile clients against a real `prox serve` process: what one request may cost everyone else.
import assert from "node:assert/strict";
import { startUpstream } from "../_harness.ts";
import { spawnProx } from "./_process.ts";
import { startProxy } from "./_proxy.ts";

Deno.test("a catastrophically backtracking path_matches regex cannot stall prox serve", async () => {
  await using up = await startUpstream((req) =>
    new Response(req.headers.get("x-matched") ?? "no", { headers: { "cache-control": "x" } })
  );
  await using p = await spawnProx(`listen_addr: "127.0.0.1:{PORT}"
health_check: { enabled: false }
routes:
  "/re":
    type: proxy
    target: "${up.url}"
    request_headers:
      condition: { path_matches: "^/re/(a+)+$", has_header: { name: X-Key, value_matches: "^(\\\\w+\\\\s?)*$" } }
      set: { X-Matched: "yes" }
  "/ci":
    type: proxy
    target: "${up.url}"
    request_headers:
      condition: { path_matches: "(?i)^/CI/(A+)+$" }
      set: { X-Matched: "yes" }
`);
  const base = `http://127.0.0.1:${p.port}`;
  // Without V8's linear-time fallback each of these runs for minutes on the one event loop.
  const hostile = [
    { path: `/re/${"a".repeat(40)}!`, key: "k" },
    { path: "/re/a", key: `${"a".repeat(40)}!` },
    // V8's linear-time engine cannot run a regex with the i flag: Prox spells it without.
    { path: `/ci/${"a".repeat(40)}!`, key: "k" },
  ];
  for (const h of hostile) {
    const res = await fetch(`${base}${h.path}`, {
      headers: { "x-key": h.key },
      signal: AbortSignal.timeout(5_000),
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "no");
  }
  const ok = await fetch(`${base}/re/aaa`, { headers: { "x-key": "abc def" } });
  assert.equal(await ok.text(), "yes");
  assert.equal(await (await fetch(`${base}/ci/aAa`)).text(), "yes");
});

Deno.test("X-Forwarded-* fields an untrusted client sends never reach the upstream", async () => {
  await using up = await startUpstream((req) => Response.json([...req.headers]));
  await using proxy = await startProxy(`health_check: { enabled: false }
routes: { "/": { type: proxy, target: "${up.url}" } }
`);
  const res = await fetch(`${proxy.url}/x`, {
    headers: {
      "x-forwarded-for": "6.6.6.6",
      "x-forwarded-port": "443",
      "x-forwarded-prefix": "/evil",
      "x-forwarded-ssl": "on",
      "x-forwarded-scheme": "https",
      "x-real-ip": "6.6.6.6",
    },
  });
  const got = Object.fromEntries(await res.json() as [string, string][]);
  assert.equal(got["x-forwarded-for"], "127.0.0.1");
  assert.equal(got["x-forwarded-proto"], "http");
  for (const name of ["port", "prefix", "ssl", "scheme"]) {
    assert.equal(got[`x-forwarded-${name}`], undefined, name);
  }
  assert.equal(got["x-real-ip"], undefined);
});

Deno.test("fields named with underscores are dropped (CGI reads X_Forwarded_For as X-Forwarded-For)", async () => {
  await using up = await startUpstream((req) => Response.json([...req.headers]));
  const conf = (extra: string) =>
    `health_check: { enabled: false }
${extra}routes:
  "/": { type: proxy, target: "${up.url}" }
`;
  const sent = {
    "x_forwarded_for": "6.6.6.6",
    "x_real_ip": "6.6.6.6",
    "transfer_encoding": "chunked",
    "x_auth_user": "admin",
    "x-plain": "kept",
  };
  {
    await using proxy = await startProxy(conf(""));
    const res = await fetch(`${proxy.url}/x`, { headers: sent });
    const got = Object.fromEntries(await res.json() as [string, string][]);
    for (const name of ["x_forwarded_for", "x_real_ip", "transfer_encoding", "x_auth_user"]) {
      assert.equal(got[name], undefined, name);
    }
    assert.equal(got["x-plain"], "kept");
    assert.equal(got["x-forwarded-for"], "127.0.0.1");
  }
  // underscores_in_headers: true passes them on, as nginx's directive of the name does.
  await using open = await startProxy(conf("underscores_in_headers: true\n"));
  const res = await fetch(`${open.url}/x`, { headers: sent });
  const got = Object.fromEntries(await res.json() as [string, string][]);
  assert.equal(got["x_auth_user"], "admin");
});

import assert from "node:assert/strict";
import { createJwksFetcher } from "./jwks_fetch.ts";
import { ROOT, startUpstream } from "../../tests/_harness.ts";

const TLS = `${ROOT}/tests/fixtures/tls`;

Deno.test("JwksFetcher: the body, status and Cache-Control; a body over the cap fails", async () => {
  await using idp = await startUpstream((req) =>
    new URL(req.url).pathname === "/big"
      ? new Response("x".repeat(5000))
      : Response.json({ keys: [] }, { headers: { "cache-control": "max-age=60" } })
  );
  const jwks = createJwksFetcher();
  const got = await jwks.fetch(`${idp.url}/jwks`, { timeoutMs: 2000, maxBytes: 1000 });
  assert.deepEqual(got, { status: 200, body: '{"keys":[]}', cacheControl: "max-age=60" });
  await assert.rejects(
    jwks.fetch(`${idp.url}/big`, { timeoutMs: 2000, maxBytes: 1000 }),
    /JWK Set larger than 1000 bytes/,
  );
});

Deno.test("JwksFetcher: a failure says why (an unknown certificate issuer, no answer in time)", async () => {
  await using idp = await startUpstream(() => Response.json({ keys: [] }), {
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
  });
  const jwks = createJwksFetcher();
  await assert.rejects(
    jwks.fetch(`https://localhost:${idp.port}/`, { timeoutMs: 2000, maxBytes: 1000 }),
    /invalid peer certificate/,
  );
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  await using slow = await startUpstream(async () => {
    await held;
    return new Response("{}");
  });
  try {
    await assert.rejects(
      jwks.fetch(slow.url, { timeoutMs: 50, maxBytes: 1000 }),
      /No answer within 50 ms/,
    );
  } finally {
    release();
  }
});

Deno.test("JwksFetcher: an https JWK Set redirected to http is refused (its keys would cross unprotected)", async () => {
  await using plain = await startUpstream(() => Response.json({ keys: ["from http"] }));
  await using idp = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    return path === "/moved"
      ? Response.redirect(`https://localhost:${idp.port}/jwks`, 302)
      : path === "/jwks"
      ? Response.json({ keys: [] })
      : Response.redirect(`${plain.url}/jwks`, 302);
  }, {
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
  });
  const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${TLS}/ca.pem`)] });
  try {
    const jwks = createJwksFetcher(client);
    const base = `https://localhost:${idp.port}`;
    // Redirects within https are followed (IdPs move their keys).
    const moved = await jwks.fetch(`${base}/moved`, { timeoutMs: 2000, maxBytes: 1000 });
    assert.equal(moved.body, '{"keys":[]}');
    await assert.rejects(
      jwks.fetch(`${base}/down`, { timeoutMs: 2000, maxBytes: 1000 }),
      /redirected from https to http/,
    );
  } finally {
    client.close();
  }
});

Deno.test("JwksFetcher: an https JWK Set redirected through http and back to https is refused", async () => {
  // The plain http hop is where anyone on the way can answer "go to https://attacker/jwks": the
  // final URL being https says nothing about whose keys these are.
  await using idp = await startUpstream((req) => {
    const path = new URL(req.url).pathname;
    return path === "/jwks"
      ? Response.json({ keys: ["attacker's"] })
      : Response.redirect(`${plain.url}/bounce`, 302);
  }, {
    cert: Deno.readTextFileSync(`${TLS}/cert.pem`),
    key: Deno.readTextFileSync(`${TLS}/key.pem`),
  });
  await using plain = await startUpstream(() =>
    Response.redirect(`https://localhost:${idp.port}/jwks`, 302)
  );
  const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(`${TLS}/ca.pem`)] });
  try {
    const jwks = createJwksFetcher(client);
    await assert.rejects(
      jwks.fetch(`https://localhost:${idp.port}/start`, { timeoutMs: 2000, maxBytes: 1000 }),
      /redirected from https to http/,
    );
  } finally {
    client.close();
  }
});

import assert from "node:assert/strict";
import { createListenerSet, readTlsFiles, REUSE_PORT } from "./listener_set.ts";
import type { Config } from "../config/schema.ts";
import type { ListenerPlan } from "./listener_set.ts";
import { silentLogger } from "../ports.ts";
import { parseListenAddr } from "../config/listen.ts";
import { ROOT, waitFor } from "../../tests/_harness.ts";

// Real Deno.serve listeners on 127.0.0.1; plans change between stages as a reload would.

const handler = (name: string) => () => Promise.resolve(new Response(name));
const plan = (id: string, port: number, extra: Partial<ListenerPlan> = {}): ListenerPlan => ({
  id,
  addr: { hostname: "127.0.0.1", port },
  handler: handler(id),
  ...extra,
});

async function get(url: string, client?: Deno.HttpClient): Promise<string> {
  const res = await fetch(url, { client });
  return await res.text();
}

Deno.test("ListenerSet keeps an unchanged listener and binds nothing for it", async () => {
  const set = createListenerSet({ logger: silentLogger, drainMs: () => 1000 });
  try {
    (await set.stage([plan("main", 0)])).commit();
    const first = set.get("main")!;
    const again = await set.stage([plan("main", 0)]);
    assert.equal(again.bound, 0);
    again.commit();
    assert.equal(set.get("main"), first);
    assert.equal(await get(`http://127.0.0.1:${first.port}/`), "main");
  } finally {
    await set.shutdown(1000);
  }
});

Deno.test({
  name: "ListenerSet rebinds the same port for new TLS material, then drains the old listener",
  ignore: !REUSE_PORT,
  async fn() {
    const set = createListenerSet({ logger: silentLogger, drainMs: () => 1000 });
    const tls = `${ROOT}/tests/fixtures/tls`;
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${tls}/ca.pem`)] });
    try {
      (await set.stage([plan("main", 0)])).commit();
      const port = set.get("main")!.port;
      const staged = await set.stage([plan("main", 0, {
        cert: await Deno.readTextFile(`${tls}/cert.pem`),
        key: await Deno.readTextFile(`${tls}/key.pem`),
      })]);
      assert.equal(staged.bound, 1);
      staged.commit();
      assert.equal(set.get("main")!.port, port);
      assert.equal(set.get("main")!.tls, true);
      // Once the plain listener has drained, every new connection gets TLS.
      await waitFor(async () => {
        try {
          await get(`http://127.0.0.1:${port}/`);
          return false;
        } catch {
          return true;
        }
      }, { what: "plain listener gone" });
      assert.equal(await get(`https://localhost:${port}/`, client), "main");
    } finally {
      client.close();
      await set.shutdown(1000);
    }
  },
});

Deno.test("ListenerSet stage binds nothing when one plan fails; commit after shutdown closes", async () => {
  const set = createListenerSet({ logger: silentLogger, drainMs: () => 1000 });
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    (await set.stage([plan("main", 0)])).commit();
    const main = set.get("main")!;
    const taken = (blocker.addr as Deno.NetAddr).port;
    await assert.rejects(
      set.stage([plan("main", 0), plan("extra", 0), plan("bad", taken)]),
      /Cannot listen on 127\.0\.0\.1:\d+/,
    );
    assert.equal(set.get("main"), main);
    assert.equal(set.get("extra"), undefined);
    assert.equal(set.listeners.length, 1);

    const late = await set.stage([plan("main", 0), plan("extra", 0)]);
    await set.shutdown(1000);
    late.commit();
    assert.equal(set.get("extra"), undefined);
  } finally {
    blocker.close();
    await set.shutdown(1000);
  }
});

Deno.test("ListenerSet logs an IPv6 listener as [host]:port", async () => {
  const lines: string[] = [];
  const logger = {
    ...silentLogger,
    info: (msg: string, f?: Record<string, unknown>) => void lines.push(`${msg} ${f?.addr}`),
  };
  const set = createListenerSet({ logger, drainMs: () => 1000 });
  try {
    (await set.stage([{ ...plan("main", 0), addr: { hostname: "::1", port: 0 } }])).commit();
    const port = set.get("main")!.port;
    assert.deepEqual(lines, [`Listener started [::1]:${port}`]);
  } finally {
    await set.shutdown(1000);
  }
});

Deno.test("ListenerSet: an address this machine does not have says so and how to listen on all", async () => {
  const set = createListenerSet({ logger: silentLogger, drainMs: () => 1000 });
  try {
    // 203.0.113.0/24 is TEST-NET-3 (RFC 5737): no interface has it.
    const far = { ...plan("main", 0), addr: { hostname: "203.0.113.7", port: 0 } };
    await assert.rejects(set.stage([far]), (err: Error) => {
      assert.match(
        err.message,
        /^Cannot listen on 203\.0\.113\.7:0: .*\(no network interface of this machine has that address: `ip addr` lists them; 0\.0\.0\.0 or \[::\] listens on all\)$/,
      );
      return true;
    });
  } finally {
    await set.shutdown(1000);
  }
});

const linkLocal = Deno.networkInterfaces().find((i) =>
  i.family === "IPv6" && i.address.startsWith("fe80:")
);

Deno.test({
  name: "ListenerSet binds a link-local address with its zone ([fe80::…%eth0]:port)",
  ignore: linkLocal === undefined,
  async fn() {
    const ll = linkLocal!;
    const text = `[${ll.address}%${ll.name}]:0`;
    const addr = parseListenAddr(text);
    assert.ok(typeof addr !== "string", String(addr));
    const set = createListenerSet({ logger: silentLogger, drainMs: () => 1000 });
    try {
      (await set.stage([{ ...plan("main", 0), addr }])).commit();
      const port = set.get("main")!.port;
      using conn = await Deno.connect({ hostname: `${ll.address}%${ll.name}`, port });
      assert.equal((conn.remoteAddr as Deno.NetAddr).port, port);
    } finally {
      await set.shutdown(1000);
    }
  },
});

Deno.test("readTlsFiles refuses a key that is not the certificate's, naming both files (a rotation between validation and the bind)", async () => {
  const tls = `${ROOT}/tests/fixtures/tls`;
  const config = (cert: string, key: string) =>
    ({ tls: { cert_path: `${tls}/${cert}`, key_path: `${tls}/${key}` } }) as unknown as Config;
  const pair = await readTlsFiles(config("cert.pem", "key.pem"));
  assert.match(pair.cert!, /BEGIN CERTIFICATE/);
  await assert.rejects(
    readTlsFiles(config("cert.pem", "expired.key")),
    new Error(
      `Private key ${tls}/expired.key does not belong to the first certificate in ${tls}/cert.pem`,
    ),
  );
});

Deno.test("ListenerSet: a reload rechecks the open clients' certificates only when the revocation lists changed", async () => {
  const set = createListenerSet({ logger: silentLogger, drainMs: () => 1000 });
  const tls = `${ROOT}/tests/fixtures/tls`;
  const ca = await Deno.readTextFile(`${tls}/ca.pem`);
  const crl = await Deno.readTextFile(`${tls}/alice-revoked.crl`);
  const { revocationCheck } = await import("../domain/crl.ts");
  const withLists = (crlText: string) =>
    plan("main", 0, {
      engine: "prox",
      cert: Deno.readTextFileSync(`${tls}/cert.pem`),
      key: Deno.readTextFileSync(`${tls}/key.pem`),
      // Each reload reads the file anew: a new object of the same text.
      clientAuth: { ca, required: true, crl: revocationCheck(crlText), crlText },
    });
  try {
    (await set.stage([withLists(crl)])).commit();
    const listener = set.get("main")!;
    let rechecks = 0;
    listener.recheckClients = () => (rechecks++, 0);
    // The same text read again: kept listener, no recheck (every open client's chain parsed again).
    (await set.stage([withLists(crl)])).commit();
    assert.equal(set.get("main"), listener);
    assert.equal(rechecks, 0);
    // A renewed list (other text): the same listener, rechecked.
    (await set.stage([withLists(crl + "\n")])).commit();
    assert.equal(set.get("main"), listener);
    assert.equal(rechecks, 1);
  } finally {
    await set.shutdown(1000);
  }
});

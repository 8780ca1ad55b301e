import assert from "node:assert/strict";
import { authoritativeGroups, awaitTxt, dnsPublisher } from "./acme_dns.ts";
import type { ServerLookup, TxtLookup } from "./acme_dns.ts";
import type { Logger } from "../ports.ts";
import { waitFor } from "../../tests/_harness.ts";

const quiet: Logger & { warned: string[] } = {
  warned: [],
  log() {},
  debug() {},
  info() {},
  warn(m) {
    quiet.warned.push(m);
  },
  error() {},
};

Deno.test("authoritativeGroups: the closest zone with NS records, its servers' addresses on port 53", async () => {
  const asked: string[] = [];
  const lookup: ServerLookup = (name, type) => {
    asked.push(`${type} ${name}`);
    if (type === "NS") {
      return Promise.resolve(name === "example.com" ? ["ns1.dns.test", "ns2.dns.test"] : []);
    }
    if (type === "A") {
      return Promise.resolve(name === "ns1.dns.test" ? ["192.0.2.1"] : ["192.0.2.2"]);
    }
    // A lookup error (no AAAA) is a server without that family, not a failure.
    return Promise.reject(new Error("no AAAA"));
  };
  assert.deepEqual(await authoritativeGroups("_acme-challenge.a.example.com", lookup), [
    { name: "ns1.dns.test", addrs: [{ ipAddr: "192.0.2.1", port: 53 }] },
    { name: "ns2.dns.test", addrs: [{ ipAddr: "192.0.2.2", port: 53 }] },
  ]);
  assert.deepEqual(asked.slice(0, 2), ["NS a.example.com", "NS example.com"]);
  assert.deepEqual(await authoritativeGroups("x.invalid", () => Promise.resolve([])), []);
});

Deno.test("awaitTxt: waits until every server answers the value; names the ones that never did", async () => {
  let round = 0;
  const txt: TxtLookup = (name, server) => {
    assert.equal(name, "_acme-challenge.example.com");
    // The second server catches up on the third look.
    if (server.ipAddr === "192.0.2.2" && round++ < 2) return Promise.resolve([["stale"]]);
    return Promise.resolve([["v"]]);
  };
  const resolvers = ["192.0.2.1", "192.0.2.2:5353"];
  await awaitTxt("_acme-challenge.example.com.", "v", {
    resolvers,
    timeoutMs: 5_000,
    pollMs: 1,
    logger: quiet,
    txt,
  });
  assert.equal(round, 3);
  await assert.rejects(
    awaitTxt("_acme-challenge.example.com.", "v", {
      resolvers,
      timeoutMs: 20,
      pollMs: 1,
      logger: quiet,
      txt: (_n, s) =>
        s.port === 5353
          ? Promise.reject(new Error("connection refused"))
          : Promise.resolve([["v"]]),
    }),
    /was not seen on 192\.0\.2\.2:5353 within 0 s \(last error: connection refused\)/,
  );
  // No authoritative servers found: the CA is asked anyway, with a warning.
  await awaitTxt("_acme-challenge.example.com.", "v", {
    timeoutMs: 20,
    logger: quiet,
    lookup: () => Promise.resolve([]),
    txt: () => Promise.reject(new Error("not asked")),
  });
  assert.match(quiet.warned.join(), /no authoritative name servers found/);
});

Deno.test("awaitTxt: a name server counts as seen through any of its addresses (no IPv6 route: its AAAA unreachable)", async () => {
  const lookup: ServerLookup = (name, type) => {
    if (type === "NS") return Promise.resolve(name === "example.com" ? ["ns1.dns.test"] : []);
    if (type === "A") return Promise.resolve(["192.0.2.1"]);
    if (type === "AAAA") return Promise.resolve(["2001:db8::1"]);
    return Promise.resolve([]);
  };
  const asked: string[] = [];
  const txt: TxtLookup = (_name, server) => {
    asked.push(server.ipAddr);
    return server.ipAddr.includes(":")
      ? Promise.reject(new Error("Network is unreachable (os error 101)"))
      : Promise.resolve([["v"]]);
  };
  await awaitTxt("_acme-challenge.example.com.", "v", {
    timeoutMs: 200,
    pollMs: 1,
    logger: quiet,
    lookup,
    txt,
  });
  assert.ok(asked.includes("192.0.2.1"));
  // Still, a server none of whose addresses shows the value is waited for, and named.
  await assert.rejects(
    awaitTxt("_acme-challenge.example.com.", "v", {
      timeoutMs: 20,
      pollMs: 1,
      logger: quiet,
      lookup,
      txt: (_n, s) =>
        s.ipAddr.includes(":")
          ? Promise.reject(new Error("Network is unreachable"))
          : Promise.resolve([["stale"]]),
    }),
    /was not seen on ns1\.dns\.test \(192\.0\.2\.1, 2001:db8::1\)/,
  );
});

/**
 * An authoritative DNS server for one zone on 127.0.0.x (UDP): answers its own names from
 * `records` (a CNAME alone, as for a name delegated to another zone) and REFUSED for others.
 */
function zoneServer(
  hostname: string,
  zone: string,
  records: Record<string, { cname?: string; txt?: string[] }>,
) {
  const sock = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const enc = new TextEncoder();
  const wire = (n: string) => [
    ...n.replace(/\.$/, "").split(".").flatMap((l) => [l.length, ...enc.encode(l)]),
    0,
  ];
  void (async () => {
    for await (const [msg, addr] of sock) {
      let i = 12;
      const labels: string[] = [];
      while (msg[i] !== 0) {
        labels.push(new TextDecoder().decode(msg.slice(i + 1, i + 1 + msg[i])));
        i += msg[i] + 1;
      }
      const qname = labels.join(".").toLowerCase();
      const qtype = (msg[i + 1] << 8) | msg[i + 2];
      const rec = records[qname];
      const rr = (type: number, rdata: number[]) => [
        ...wire(qname),
        0,
        type,
        0,
        1,
        0,
        0,
        0,
        60,
        rdata.length >> 8,
        rdata.length & 255,
        ...rdata,
      ];
      const answers = rec?.cname
        ? [rr(5, wire(rec.cname))]
        : qtype === 16
        ? (rec?.txt ?? []).map((t) => rr(16, [t.length, ...enc.encode(t)]))
        : [];
      const ours = qname === zone || qname.endsWith(`.${zone}`);
      const rcode = !ours ? 5 : rec ? 0 : 3;
      const head = [
        msg[0],
        msg[1],
        0x84 | (msg[2] & 1),
        rcode,
        0,
        1,
        0,
        answers.length,
        0,
        0,
        0,
        0,
      ];
      await sock.send(
        new Uint8Array([...head, ...msg.slice(12, i + 5), ...answers.flat()]),
        addr,
      ).catch(() => {});
    }
  })().catch(() => {});
  return {
    port: (sock.addr as Deno.NetAddr).port,
    [Symbol.dispose]: () => sock.close(),
  };
}

Deno.test("awaitTxt: a record CNAMEd to another zone (delegated validation) is looked for where the CNAME points", async () => {
  // example.com's servers hold only the CNAME; the validation zone's servers hold the TXT.
  using own = zoneServer("127.0.0.1", "example.com", {
    "_acme-challenge.example.com": { cname: "x1.acme.validation.test" },
  });
  using delegated = zoneServer("127.0.0.2", "acme.validation.test", {
    "x1.acme.validation.test": { txt: ["v"] },
  });
  // The system resolver's view (recursive): the CNAME, and each zone's name server.
  const lookup: ServerLookup = (name, type) => {
    const table: Record<string, string[]> = {
      "CNAME _acme-challenge.example.com": ["x1.acme.validation.test."],
      "NS example.com": ["ns.example.com."],
      "NS acme.validation.test": ["ns.validation.test."],
      "A ns.example.com": ["127.0.0.1"],
      "A ns.validation.test": ["127.0.0.2"],
    };
    return Promise.resolve(table[`${type} ${name.replace(/\.$/, "")}`] ?? []);
  };
  // Real DNS queries, to the test servers' ports instead of 53.
  const ports: Record<string, number> = { "127.0.0.1": own.port, "127.0.0.2": delegated.port };
  const txt: TxtLookup = (name, server) =>
    Deno.resolveDns(name, "TXT", {
      nameServer: { ipAddr: server.ipAddr, port: ports[server.ipAddr] },
      signal: AbortSignal.timeout(2_000),
    }).catch(() => []);
  await awaitTxt("_acme-challenge.example.com.", "v", {
    timeoutMs: 1_000,
    pollMs: 20,
    logger: quiet,
    lookup,
    txt,
  });
});

/** Whether process `pid` still runs (a killed one may linger as a zombie until it is reaped). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
  } catch {
    return false;
  }
}

Deno.test("dnsPublisher command: a hook that leaves a child holding its output returns when it exits", async () => {
  const dir = await Deno.makeTempDir();
  let pid = 0;
  try {
    const hook = `${dir}/hook.sh`;
    // As a hook that starts a helper in the background (nohup …&) without redirecting it.
    await Deno.writeTextFile(hook, `#!/bin/sh\nsleep 20 &\necho $! > ${dir}/pid\necho published\n`);
    await Deno.chmod(hook, 0o755);
    const started = performance.now();
    await dnsPublisher({ command: [hook], propagation_timeout: 1_000 }, () => undefined, {
      timeoutMs: 10_000,
    }).present("_acme-challenge.example.com.", "v");
    pid = Number(await Deno.readTextFile(`${dir}/pid`));
    const ms = performance.now() - started;
    assert.ok(ms < 5_000, `present took ${Math.round(ms)} ms`);
  } finally {
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dnsPublisher command: a hung hook is killed at the time limit, with the children it started", async () => {
  const dir = await Deno.makeTempDir();
  let pid = 0;
  try {
    const hook = `${dir}/hook.sh`;
    await Deno.writeTextFile(
      hook,
      `#!/bin/sh\necho "waiting for the provider" >&2\nsleep 20 &\necho $! > ${dir}/pid\nwait\n`,
    );
    await Deno.chmod(hook, 0o755);
    const started = performance.now();
    await assert.rejects(
      dnsPublisher({ command: [hook], propagation_timeout: 1_000 }, () => undefined, {
        timeoutMs: 300,
      }).present("_acme-challenge.example.com.", "v"),
      /hook\.sh present _acme-challenge\.example\.com\. was killed \(SIGKILL; 0\.3 s limit\): waiting for the provider$/,
    );
    const ms = performance.now() - started;
    assert.ok(ms < 5_000, `present took ${Math.round(ms)} ms`);
    pid = Number(await Deno.readTextFile(`${dir}/pid`));
    await waitFor(() => !alive(pid), { timeoutMs: 2_000, what: "the hook's child to end" });
  } finally {
    if (pid && alive(pid)) Deno.kill(pid, "SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("dnsPublisher webhook: an answer whose body never ends is not waited for; an error body is cut short", async () => {
  const enc = new TextEncoder();
  const endless = () =>
    new ReadableStream<Uint8Array>({
      async pull(c) {
        await new Promise((r) => setTimeout(r, 5));
        c.enqueue(enc.encode("x".repeat(1024)));
      },
    });
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) =>
      new Response(endless(), {
        status: new URL(req.url).pathname.endsWith("/present") ? 200 : 502,
      }),
  );
  const hook = dnsPublisher(
    { webhook: `http://127.0.0.1:${server.addr.port}/dns`, propagation_timeout: 1_000 },
    () => undefined,
    { timeoutMs: 10_000 },
  );
  let started = performance.now();
  await hook.present("_acme-challenge.example.com.", "v");
  assert.ok(performance.now() - started < 3_000, "present waited for the body");
  started = performance.now();
  const err = await hook.cleanup("_acme-challenge.example.com.", "v").then(
    () => assert.fail("cleanup succeeded"),
    (e: Error) => e,
  );
  assert.ok(performance.now() - started < 3_000, "cleanup waited for the body");
  assert.match(err.message, /\/dns\/cleanup answered 502: …x+$/);
  assert.ok(err.message.length < 1_000);
});

Deno.test("dnsPublisher webhook: a redirect is not followed (it would turn the POST into a GET); the error says where it points", async () => {
  let redirected = 0;
  await using target = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    redirected++;
    return new Response("ok");
  });
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.redirect(`http://127.0.0.1:${target.addr.port}/acme/present`, 301),
  );
  const hook = dnsPublisher(
    { webhook: `http://127.0.0.1:${server.addr.port}/dns`, propagation_timeout: 1_000 },
    () => undefined,
  );
  await assert.rejects(
    hook.present("_acme-challenge.example.com.", "v"),
    /\/dns\/present answered 301, a redirect to http:\/\/127\.0\.0\.1:\d+\/acme\/present: set tls\.acme\.dns\.webhook to the URL it should be/,
  );
  assert.equal(redirected, 0);
  // A Location that is no URL is named as it came.
  await using odd = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(null, { status: 302, headers: { location: "http://[bad" } }),
  );
  await assert.rejects(
    dnsPublisher(
      { webhook: `http://127.0.0.1:${odd.addr.port}/dns`, propagation_timeout: 1_000 },
      () => undefined,
    ).present("_acme-challenge.example.com.", "v"),
    /\/dns\/present answered 302, a redirect to http:\/\/\[bad: set tls\.acme\.dns\.webhook/,
  );
});

Deno.test("dnsPublisher webhook: a password in the URL (sent as Basic auth) stays out of its errors", async () => {
  let auth: string | null = null;
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    auth = req.headers.get("authorization");
    return new Response("no such zone", { status: 404 });
  });
  const hook = dnsPublisher(
    { webhook: `http://acme:pa55w0rd@127.0.0.1:${server.addr.port}/dns`, propagation_timeout: 1 },
    () => undefined,
  );
  const err = await hook.present("_acme-challenge.example.com.", "v").then(
    () => assert.fail("present succeeded"),
    (e: Error) => e,
  );
  assert.equal(auth, `Basic ${btoa("acme:pa55w0rd")}`);
  assert.match(
    err.message,
    /^DNS webhook http:\/\/acme:\*\*\*@127\.0\.0\.1:\d+\/dns\/present answered 404/,
  );
  assert.doesNotMatch(err.message, /pa55w0rd/);
  // Nor when it cannot be reached.
  const closed = dnsPublisher(
    { webhook: `http://acme:pa55w0rd@127.0.0.1:1/dns`, propagation_timeout: 1 },
    () => undefined,
  );
  const err2 = await closed.present("_acme-challenge.example.com.", "v").then(
    () => assert.fail("present succeeded"),
    (e: Error) => e,
  );
  assert.match(err2.message, /could not be reached/);
  assert.doesNotMatch(err2.message, /pa55w0rd/);
  // A provider's key in the query is kept out as well.
  const keyed = dnsPublisher(
    { webhook: `http://127.0.0.1:1/dns?api_key=k3y-s3cret&fmt=1`, propagation_timeout: 1 },
    () => undefined,
  );
  const err3 = await keyed.present("_acme-challenge.example.com.", "v").then(
    () => assert.fail("present succeeded"),
    (e: Error) => e,
  );
  assert.match(
    err3.message,
    /^DNS webhook http:\/\/127\.0\.0\.1:1\/dns\/present\?api_key=\*\*\*&fmt=\*\*\* could not be reached/,
  );
  assert.doesNotMatch(err3.message, /k3y-s3cret/);
});

Deno.test("dnsPublisher webhook: /present and /cleanup go on the URL's path, its query string kept (as lego's JoinPath)", async () => {
  const seen: string[] = [];
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const u = new URL(req.url);
    seen.push(`${u.pathname}${u.search}`);
    return new Response("ok");
  });
  const hook = dnsPublisher(
    { webhook: `http://127.0.0.1:${server.addr.port}/dns/?zone=example`, propagation_timeout: 1 },
    () => undefined,
  );
  await hook.present("_acme-challenge.example.com.", "v");
  await hook.cleanup("_acme-challenge.example.com.", "v");
  assert.deepEqual(seen, ["/dns/present?zone=example", "/dns/cleanup?zone=example"]);
});

Deno.test("dnsPublisher webhook: an https hook under a private CA is trusted through ca_cert, and only so", async () => {
  const tls = new URL("../../tests/fixtures/tls/", import.meta.url).pathname;
  const seen: string[] = [];
  await using server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(`${tls}cert.pem`),
    key: await Deno.readTextFile(`${tls}key.pem`),
    onListen() {},
  }, async (req) => {
    seen.push(`${new URL(req.url).pathname} ${(await req.json()).fqdn}`);
    return new Response("ok");
  });
  const webhook = `https://localhost:${server.addr.port}/dns`;
  const trusted = dnsPublisher(
    { webhook, ca_cert: `${tls}ca.pem`, propagation_timeout: 1_000 },
    () => undefined,
  );
  await trusted.present("_acme-challenge.example.com.", "v");
  await trusted.cleanup("_acme-challenge.example.com.", "v");
  assert.deepEqual(seen, [
    "/dns/present _acme-challenge.example.com.",
    "/dns/cleanup _acme-challenge.example.com.",
  ]);
  // Without it, the system roots do not know that CA.
  const untrusted = dnsPublisher({ webhook, propagation_timeout: 1_000 }, () => undefined);
  await assert.rejects(
    untrusted.present("_acme-challenge.example.com.", "v"),
    /DNS webhook https:\/\/localhost:\d+\/dns\/present could not be reached: .*(certificate|UnknownIssuer)/i,
  );
  assert.equal(seen.length, 2);
});

// limits.max_connections and limits.max_connections_per_ip on Prox's own engines: connections
// past a limit are closed as they are accepted, over plain HTTP, TLS and from a balancer that
// sends PROXY protocol headers (counted by the client it names), and counted in
// prox_connections_refused_total.
import assert from "node:assert/strict";
import { ROOT, startUpstream, waitFor } from "../_harness.ts";
import { onProxEngines, startProxy } from "./_proxy.ts";
import { readFrom } from "./_raw_client.ts";
import { loadConfigText } from "../../src/config/load.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";

onProxEngines();

const TLS = `${ROOT}/tests/fixtures/tls`;
const enc = new TextEncoder();
const GET = "GET / HTTP/1.1\r\nHost: t\r\n\r\n";

/** A connection that got one answer and stays open (keep-alive): counted by Prox for sure. */
async function held(port: number, prefix = ""): Promise<Deno.Conn> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await c.write(enc.encode(prefix + GET));
  assert.match(await readFrom(c, /\r\n\r\nok$/), /^HTTP\/1\.1 200/);
  return c;
}

/** The status line of a GET on a new connection, or "" when Prox closed it unanswered. */
async function ask(port: number, prefix = ""): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await c.write(enc.encode(prefix + GET.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")))
      .catch(() => {});
    const out = await readFrom(c);
    return out.slice(0, Math.max(0, out.indexOf("\r\n")));
  } finally {
    try {
      c.close();
    } catch { /* closed */ }
  }
}

function config(upstream: string, limits: string, extra = "") {
  return `
health_check: { enabled: false }
admin: { listen_addr: "127.0.0.1:0" }
limits: { ${limits} }
${extra}routes:
  /: { type: proxy, target: "${upstream}" }
`;
}

async function refusedCount(admin: number, limit: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
  const m = new RegExp(`^prox_connections_refused_total\\{limit="${limit}"\\} (\\d+)`, "m")
    .exec(text);
  return m ? Number(m[1]) : 0;
}

Deno.test("max_connections_per_ip: a third connection from one address is closed unanswered", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url, "max_connections_per_ip: 2"));
  const a = await held(prox.port);
  const b = await held(prox.port);
  assert.equal(await ask(prox.port), "");
  assert.equal(await refusedCount(prox.server.admin!.port, "max_connections_per_ip"), 1);
  // One closes: its place is free again once Prox has seen it go.
  a.close();
  await waitFor(async () => (await ask(prox.port)) === "HTTP/1.1 200 OK", {
    what: "a connection admitted again",
  });
  b.close();
});

Deno.test("max_connections: past the total, connections are closed; the admin port is apart", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(config(up.url, "max_connections: 1"));
  const a = await held(prox.port);
  assert.equal(await ask(prox.port), "");
  assert.equal(await ask(prox.port), "");
  assert.equal(await refusedCount(prox.server.admin!.port, "max_connections"), 2);
  a.close();
  await waitFor(async () => (await ask(prox.port)) === "HTTP/1.1 200 OK", {
    what: "a connection admitted again",
  });
});

Deno.test("max_connections_per_ip over TLS: the handshake of one too many fails", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(
    config(
      up.url,
      "max_connections_per_ip: 1",
      `tls: { cert_path: "${TLS}/cert.pem", key_path: "${TLS}/key.pem" }\n`,
    ),
  );
  const caCerts = [await Deno.readTextFile(`${TLS}/ca.pem`)];
  const open = async () => {
    const c = await Deno.connectTls({ hostname: "localhost", port: prox.port, caCerts });
    await c.handshake();
    return c;
  };
  const first = await open();
  await first.write(enc.encode(GET));
  assert.match(await readFrom(first, /\r\n\r\nok$/), /^HTTP\/1\.1 200/);
  await assert.rejects(async () => {
    const c = await open();
    try {
      await c.write(enc.encode(GET.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")));
      if ((await readFrom(c)) === "") throw new Error("closed");
    } finally {
      c.close();
    }
  });
  first.close();
  await waitFor(async () => {
    try {
      (await open()).close();
      return true;
    } catch {
      return false;
    }
  }, { what: "a TLS connection admitted again" });
});

Deno.test("max_connections_per_ip behind accept_proxy_protocol counts the client each header names", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(
    config(
      up.url,
      "max_connections_per_ip: 1",
      'accept_proxy_protocol: { from: ["127.0.0.1/32"] }\n',
    ),
  );
  const from = (ip: string) => `PROXY TCP4 ${ip} 127.0.0.1 5000 80\r\n`;
  const a = await held(prox.port, from("192.0.2.1"));
  // Same balancer, another client: admitted; the first client again: refused.
  const b = await held(prox.port, from("192.0.2.2"));
  assert.equal(await ask(prox.port, from("192.0.2.1")), "");
  a.close();
  b.close();
});

Deno.test("max_connections_per_ip counts an IPv6 client by its /64 (limits.ipv6_prefix)", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const from = (ip: string) => `PROXY TCP6 ${ip} ::1 5000 80\r\n`;
  const pp = 'accept_proxy_protocol: { from: ["127.0.0.1/32"] }\n';
  {
    await using prox = await startProxy(config(up.url, "max_connections_per_ip: 1", pp));
    const a = await held(prox.port, from("2001:db8:0:1::1"));
    // Another address of the same /64 (one subscriber's): refused, as rate limits group them
    // (before: each of its 2^64 addresses had a budget of its own).
    assert.equal(await ask(prox.port, from("2001:db8:0:1::2")), "");
    const b = await held(prox.port, from("2001:db8:0:2::1"));
    a.close();
    b.close();
  }
  await using per = await startProxy(
    config(up.url, "max_connections_per_ip: 1, ipv6_prefix: 128", pp),
  );
  const a = await held(per.port, from("2001:db8:0:1::1"));
  const b = await held(per.port, from("2001:db8:0:1::2"));
  assert.equal(await ask(per.port, from("2001:db8:0:1::1")), "");
  a.close();
  b.close();
});

Deno.test("validate: connection limits with http1_engine: deno, and per address behind a proxy", () => {
  const warnings = (extra: string) =>
    loadConfigText(
      `listen_addr: "127.0.0.1:3000"\nroutes:\n  /: { type: static, root: . }\n${extra}`,
      { file: "c.yaml", env: { exists: () => true } },
    ).issues.map((i) => i.message);
  assert.deepEqual(warnings("limits: { max_connections: 100, max_connections_per_ip: 10 }\n"), []);
  assert.match(
    warnings("limits: { max_connections: 100 }\nprotocols: { http1_engine: deno }\n").join(),
    /max_connections has no effect with http1_engine: deno/,
  );
  assert.match(
    warnings('limits: { max_connections_per_ip: 10 }\ntrusted_proxies: ["10.0.0.0/8"]\n').join(),
    /counts connections by their TCP peer: behind trusted_proxies/,
  );
  assert.deepEqual(
    warnings(
      'limits: { max_connections_per_ip: 10 }\ntrusted_proxies: ["10.0.0.0/8"]\n' +
        'accept_proxy_protocol: { from: ["10.0.0.0/8"] }\n',
    ),
    [],
  );
});

Deno.test("connection limits hold where Deno.serve would take the listener (tracing, PROX_H1_ENGINE=deno)", async () => {
  // OTEL_DENO=true puts the main listener on Deno.serve, which shows Prox no connections: the
  // limits were dropped without a word.
  await using up = await startUpstream(() => new Response("ok"));
  for (const [name, value] of [["OTEL_DENO", "true"], ["PROX_H1_ENGINE", "deno"]]) {
    const before = Deno.env.get(name);
    Deno.env.set(name, value);
    try {
      await using prox = await startProxy(config(up.url, "max_connections_per_ip: 1"));
      const a = await held(prox.port);
      assert.equal(await ask(prox.port), "", name);
      a.close();
    } finally {
      if (before === undefined) Deno.env.delete(name);
      else Deno.env.set(name, before);
    }
  }
});

Deno.test("connection limits count across a reload that replaces the listener", async () => {
  // A reload that binds the listener again (here a new idle timeout; a certificate renewal does
  // the same) left the old one's connections uncounted: a client got its share again.
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  let reached = () => {};
  const arrived = new Promise<void>((r) => reached = r);
  await using up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname === "/slow") {
      reached();
      await held;
    }
    return new Response("ok");
  });
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const write = (idle: string) =>
    Deno.writeTextFile(
      file,
      `listen_addr: "127.0.0.1:0"\nprotocols: { http1_idle_timeout: ${idle} }\n` +
        config(up.url, "max_connections_per_ip: 1"),
    );
  await write("60s");
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const a = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await a.write(enc.encode("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"));
    await arrived;
    await write("61s");
    const r = await server.reload();
    assert.ok(r.ok, JSON.stringify(r));
    // The slow exchange goes on on the old listener, and still counts.
    assert.equal(await ask(server.port), "");
    release();
    assert.match(await readFrom(a, /\r\n\r\nok$/), /^HTTP\/1\.1 200/);
    a.close();
    await waitFor(async () => (await ask(server.port)) === "HTTP/1.1 200 OK", {
      what: "a connection admitted once the old one closed",
    });
  } finally {
    release();
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("connection limits a reload adds count the connections already open", async () => {
  // Limits are what one adds under a flood: the connections open before (a slow exchange here)
  // went uncounted, so each address got its whole share on top of them.
  let release = () => {};
  const held = new Promise<void>((r) => release = r);
  let reached = () => {};
  const arrived = new Promise<void>((r) => reached = r);
  await using up = await startUpstream(async (req) => {
    if (new URL(req.url).pathname === "/slow") {
      reached();
      await held;
    }
    return new Response("ok");
  });
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const write = (limits: string) =>
    Deno.writeTextFile(file, `listen_addr: "127.0.0.1:0"\n` + config(up.url, limits));
  await write("");
  const server = await startServer({ path: file }, { logger: silentLogger });
  try {
    const a = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await a.write(enc.encode("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"));
    await arrived;
    await write("max_connections_per_ip: 1");
    const r = await server.reload();
    assert.ok(r.ok, JSON.stringify(r));
    assert.equal(await ask(server.port), "", "the address has its one connection open");
    release();
    assert.match(await readFrom(a, /\r\n\r\nok$/), /^HTTP\/1\.1 200/);
    a.close();
    await waitFor(async () => (await ask(server.port)) === "HTTP/1.1 200 OK", {
      what: "a connection admitted once the old one closed",
    });
  } finally {
    release();
    await server.shutdown();
    await Deno.remove(file);
  }
});

Deno.test("http1_idle_timeout closes a silent connection though the wall clock stepped back", async () => {
  // The idle sweep read the wall clock: stepped back (NTP, a restored VM) by an hour, it kept a
  // connection that sends nothing (a slowloris) open for that hour, its place under the limits too.
  await using up = await startUpstream(() => new Response("ok"));
  await using prox = await startProxy(
    config(up.url, "max_connections: 1", "protocols: { http1_idle_timeout: 1s }\n"),
  );
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: prox.port });
  const realNow = Date.now;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // Counted once another connection is refused: Prox holds it, stamped with the time it came.
    await waitFor(async () => (await ask(prox.port)) === "", { what: "the silent one counted" });
    // The idle sweep (every second) stamps a waiting connection with its clock; no sign shows it
    // ran, so this waits past one sweep before the clock steps (without it the test can only pass).
    await new Promise((r) => setTimeout(r, 1_500));
    Date.now = () => realNow() - 3_600_000;
    const outcome = await Promise.race([
      readFrom(silent).then(() => "closed"),
      new Promise<string>((r) => timer = setTimeout(() => r("still open"), 8_000)),
    ]);
    assert.equal(outcome, "closed");
  } finally {
    clearTimeout(timer);
    Date.now = realNow;
    silent.close();
  }
});

Deno.test("a reload that changes max_connections applies it live: open connections and WebSockets stay", async () => {
  // Limits are tightened under a flood: that must not disconnect every WebSocket client (a
  // replaced listener closes them with 1001) nor the keep-alive connections in use.
  await using up = await startUpstream((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("ok");
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  const file = await Deno.makeTempFile({ suffix: ".yaml" });
  const write = (limits: string) =>
    Deno.writeTextFile(file, `listen_addr: "127.0.0.1:0"\n` + config(up.url, limits));
  await write("max_connections: 100, max_connections_per_ip: 100");
  const server = await startServer({ path: file }, { logger: silentLogger });
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
  const closes: number[] = [];
  ws.onclose = (e) => closes.push(e.code);
  const echoed = (text: string) =>
    new Promise<string>((resolve, reject) => {
      ws.onmessage = (e) => resolve(String(e.data));
      ws.onerror = () => reject(new Error("WebSocket error"));
      ws.send(text);
    });
  let a: Deno.Conn | undefined;
  try {
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error("WebSocket did not open"));
    });
    assert.equal(await echoed("before"), "before");
    a = await held(server.port);
    await write("max_connections: 100, max_connections_per_ip: 2");
    const r = await server.reload();
    assert.ok(r.ok, JSON.stringify(r));
    // The WebSocket and the keep-alive connection count against the new limit at once.
    assert.equal(await ask(server.port), "", "the address has its two connections open");
    assert.equal(await echoed("after"), "after");
    await a.write(enc.encode(GET));
    assert.match(await readFrom(a, /\r\n\r\nok$/), /^HTTP\/1\.1 200/);
    assert.deepEqual(closes, []);
  } finally {
    a?.close();
    if (ws.readyState !== WebSocket.CLOSED) {
      const gone = new Promise((r) => ws.addEventListener("close", r));
      ws.close();
      await gone;
    }
    await server.shutdown();
    await Deno.remove(file);
  }
});

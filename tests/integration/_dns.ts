// A DNS server for tests whose A records the test sets: pebble-challtestsrv (Let's Encrypt's mock
// DNS, from Debian's pebble package) on loopback, with no default answers, so a name has exactly
// the addresses the test gave it (none: NXDOMAIN).

import { freePort, waitFor } from "../_harness.ts";

export interface MockDns extends AsyncDisposable {
  /** `127.0.0.1:port`, for `discover.resolver`. */
  server: string;
  /** Sets the A records of `host` (replacing those it had; none clears them). */
  setA(host: string, addresses: string[]): Promise<void>;
  /** Replaces the AAAA records of `host`. */
  setAAAA(host: string, addresses: string[]): Promise<void>;
  /** Makes `host` a CNAME of `target`. */
  setCname(host: string, target: string): Promise<void>;
  /** Makes every query for `host` answer SERVFAIL (`on`), or its records again. */
  setServfail(host: string, on: boolean): Promise<void>;
  /** Stops the server (lookups then fail), before the test ends. */
  stop(): Promise<void>;
}

/** `pickPort` picks its DNS port, then its management port (freePort by default). */
export async function startMockDns(
  opts: { pickPort?: () => number } = {},
): Promise<MockDns> {
  const pick = opts.pickPort ?? freePort;
  for (let attempt = 1;; attempt++) {
    const dnsPort = pick();
    let mgmtPort = pick();
    while (mgmtPort === dnsPort) mgmtPort = pick();
    const child = new Deno.Command("pebble-challtestsrv", {
      args: [
        ...["-defaultIPv4", "", "-defaultIPv6", ""],
        ...["-dns01", `127.0.0.1:${dnsPort}`, "-http01", "", "-https01", "", "-tlsalpn01", ""],
        ...["-management", `127.0.0.1:${mgmtPort}`],
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // challtestsrv logs a failed bind (on stdout) and keeps running (a CI run once waited out
    // its 10 s on a taken management port), so its log is read for that.
    let log = "";
    const drain = async (s: ReadableStream<Uint8Array>) => {
      for await (const c of s.pipeThrough(new TextDecoderStream())) log = (log + c).slice(-20_000);
    };
    const logged = Promise.all([drain(child.stdout), drain(child.stderr)]);
    let exited = false;
    const status = child.status.then(() => void (exited = true));
    const mgmt = `http://127.0.0.1:${mgmtPort}`;
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${mgmt}${path}`, {
        method: "POST",
        body: JSON.stringify(body),
        // Something else on the port that accepts and never answers cannot hold a test up.
        signal: AbortSignal.timeout(2_000),
      });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`challtestsrv ${path}: ${res.status}`);
    };
    // Up when its management API answers and its DNS server (UDP) gives the address just set.
    const probe = async () => {
      await post("/add-a", { host: "ready.test", addresses: ["127.0.0.9"] });
      const got = await Deno.resolveDns("ready.test", "A", {
        nameServer: { ipAddr: "127.0.0.1", port: dnsPort },
        signal: AbortSignal.timeout(1_000),
      });
      await post("/clear-a", { host: "ready.test" });
      return got.includes("127.0.0.9") ? "up" : null;
    };
    const ready = await waitFor(
      async () => exited || log.includes("address already in use") ? "taken" : await probe(),
      { what: "challtestsrv", timeoutMs: 10_000 },
    ).catch((err: Error) => err);
    if (ready !== "up") {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await status;
      await logged;
      if (ready instanceof Error) throw new Error(`${ready.message} (challtestsrv log: ${log})`);
      // A port taken between freePort() and the bind.
      if (attempt < 3) continue;
      throw new Error(`pebble-challtestsrv could not start: ${log}`);
    }
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await status;
      await logged;
    };
    return {
      server: `127.0.0.1:${dnsPort}`,
      async setA(host, addresses) {
        await post("/clear-a", { host });
        if (addresses.length > 0) await post("/add-a", { host, addresses });
      },
      async setAAAA(host, addresses) {
        await post("/clear-aaaa", { host });
        if (addresses.length > 0) await post("/add-aaaa", { host, addresses });
      },
      setCname: (host, target) => post("/set-cname", { host, target }),
      setServfail: (host, on) => post(on ? "/set-servfail" : "/clear-servfail", { host }),
      stop,
      [Symbol.asyncDispose]: stop,
    };
  }
}

/** dnsmasq serving fixed records (SRV among them) on 127.0.0.1, until disposed. */
export interface Dnsmasq extends AsyncDisposable {
  /** `127.0.0.1:port`, for `discover.resolver`. */
  server: string;
}

/**
 * Starts dnsmasq (Debian's dnsmasq-base) with only the records given: `srv` as dnsmasq's
 * `--srv-host` (`_http._tcp.app.test,h1.test,8080,0,10`: name, target, port, priority, weight),
 * `hosts` as `--host-record` (`h1.test,127.0.0.1`). Nothing else is answered.
 */
export async function startDnsmasq(o: { srv: string[]; hosts: string[] }): Promise<Dnsmasq> {
  for (let attempt = 1;; attempt++) {
    const port = freePort();
    const child = new Deno.Command("dnsmasq", {
      args: [
        ...["--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-dhcp-interface=lo"],
        ...[`--port=${port}`, "--listen-address=127.0.0.1", "--bind-interfaces"],
        ...["--user=root", "--pid-file=", "--log-facility=-"],
        ...o.srv.map((r) => `--srv-host=${r}`),
        ...o.hosts.map((r) => `--host-record=${r}`),
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    let log = "";
    const done = (async () => {
      for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) log += c;
    })();
    let exited = false;
    const status = child.status.then(() => void (exited = true));
    const probe = async () => {
      try {
        await Deno.resolveDns(o.hosts[0].split(",")[0], "A", {
          nameServer: { ipAddr: "127.0.0.1", port },
          signal: AbortSignal.timeout(500),
        });
        return true;
      } catch {
        return null;
      }
    };
    const up = await waitFor(async () => exited ? "exited" : await probe(), {
      what: "dnsmasq",
      timeoutMs: 10_000,
    });
    if (up === "exited") {
      await done;
      if (attempt < 3 && log.includes("in use")) continue;
      throw new Error(`dnsmasq exited: ${log}`);
    }
    return {
      server: `127.0.0.1:${port}`,
      async [Symbol.asyncDispose]() {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await status;
        await done;
      },
    };
  }
}

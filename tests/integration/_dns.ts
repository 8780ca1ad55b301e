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
  /** Stops the server (lookups then fail), before the test ends. */
  stop(): Promise<void>;
}

export async function startMockDns(): Promise<MockDns> {
  for (let attempt = 1;; attempt++) {
    const dnsPort = freePort();
    const mgmtPort = freePort();
    const child = new Deno.Command("pebble-challtestsrv", {
      args: [
        ...["-defaultIPv4", "", "-defaultIPv6", ""],
        ...["-dns01", `127.0.0.1:${dnsPort}`, "-http01", "", "-https01", "", "-tlsalpn01", ""],
        ...["-management", `127.0.0.1:${mgmtPort}`],
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    let exited = false;
    const status = child.status.then(() => void (exited = true));
    const mgmt = `http://127.0.0.1:${mgmtPort}`;
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${mgmt}${path}`, { method: "POST", body: JSON.stringify(body) });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`challtestsrv ${path}: ${res.status}`);
    };
    const ready = await waitFor(
      async () =>
        exited
          ? "exited"
          : await post("/clear-a", { host: "ready.test" }).then(() => "up", () => null),
      { what: "challtestsrv", timeoutMs: 10_000 },
    );
    if (ready === "exited") {
      // A port taken between freePort() and the bind.
      if (attempt < 3) continue;
      throw new Error("pebble-challtestsrv exited at start");
    }
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await status;
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

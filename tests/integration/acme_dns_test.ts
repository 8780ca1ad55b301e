// DNS-01 end to end against Debian's pebble: Prox publishes the TXT record through a webhook
// (lego's httpreq protocol) or a command (lego's exec), sees it on the configured resolver, and
// pebble validates it over real DNS (challtestsrv, which the hooks below fill through its
// management API). A wildcard certificate; a failing hook and a record that never shows up are
// reported with what went wrong, before the CA is asked to look.
import assert from "node:assert/strict";
import { interopTest, startUpstream, waitFor } from "../_harness.ts";
import { freePort, startPebble } from "./_pebble.ts";
import type { Pebble } from "./_pebble.ts";
import { memoryLogger, start, tlsGet, TOOLS, withTempDir } from "./_acme.ts";
import { PEBBLE_TLS_CA } from "./_pebble.ts";

/** A config ordering `domains` by DNS-01, `dns` being the body of `tls.acme.dns`. */
function dnsYaml(o: {
  pebble: Pebble;
  storage: string;
  upstream: string;
  domains: string[];
  dns: string;
}): string {
  return `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
tls:
  acme:
    enabled: true
    domains: ${JSON.stringify(o.domains)}
    email: "ops@prox.test"
    ca_url: "${o.pebble.directoryUrl}"
    ca_cert: "${PEBBLE_TLS_CA}"
    storage_path: "${o.storage}"
    challenge: dns-01
    dns:
${o.dns.trim().split("\n").map((l) => `      ${l}`).join("\n")}
routes:
  "/":
    type: proxy
    target: "${o.upstream}"
`;
}

/** Sets challtestsrv's TXT values for `host` to exactly `values` (with `keep`, adds them). */
async function setTxt(
  pebble: Pebble,
  host: string,
  values: Iterable<string>,
  o: { keep?: boolean } = {},
): Promise<void> {
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${pebble.challtestsrv}${path}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    await res.body?.cancel();
    assert.equal(res.status, 200, `challtestsrv ${path}`);
  };
  if (!o.keep) await post("/clear-txt", { host });
  for (const value of values) await post("/set-txt", { host, value });
}

/**
 * A DNS provider's webhook in lego's httpreq shape: POST /present and /cleanup with
 * {"fqdn","value"}; each value is added to or removed from challtestsrv's records (others at the
 * same name stay, as a wildcard and its base domain share one name).
 */
function startHook(pebble: Pebble, opts: { fail?: boolean; publish?: boolean } = {}) {
  const records = new Map<string, Set<string>>();
  const calls: { action: string; fqdn: string; value: string; auth: string | null }[] = [];
  let queue = Promise.resolve();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const action = new URL(req.url).pathname.split("/").pop()!;
    const { fqdn, value } = await req.json();
    calls.push({ action, fqdn, value, auth: req.headers.get("authorization") });
    if (opts.fail) return new Response("zone example.invalid is not ours", { status: 500 });
    const set = records.get(fqdn) ?? new Set();
    if (action === "present") set.add(value);
    else set.delete(value);
    records.set(fqdn, set);
    // One update at a time: two at one name would interleave their clear and set. A present
    // adds its value without a clear: the CA may be checking the name's other value (a wildcard
    // and its base domain share one name), which a clear would hide for a moment.
    if (opts.publish !== false) {
      const values = [...set];
      await (queue = queue.then(() =>
        action === "present"
          ? setTxt(pebble, fqdn, [value], { keep: true })
          : setTxt(pebble, fqdn, values)
      ));
    }
    return new Response("ok");
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/dns`,
    calls,
    records,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

interopTest(
  "ACME DNS-01 through a webhook: a wildcard certificate, the record seen on the resolver first, then removed",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using hook = startHook(pebble);
      await using up = await startUpstream(() => new Response("hello wildcard"));
      Deno.env.set("PROX_TEST_DNS_TOKEN", "s3cret");
      const logger = memoryLogger();
      const server = await start(
        dnsYaml({
          pebble,
          storage: `${dir}/acme`,
          upstream: up.url,
          domains: ["prox.test", "*.prox.test"],
          dns: `webhook: "${hook.url}"
token_env: PROX_TEST_DNS_TOKEN
resolvers: ["${pebble.dns}"]`,
        }),
        { dnsPollMs: 50, pollMinMs: 200 },
        logger,
      );
      try {
        await waitFor(() => server.acme!.current(), { timeoutMs: 30_000, what: "issuance" })
          .catch((err) => {
            // What the order was doing: Prox's lines, the hook's calls, pebble's last lines.
            throw new Error(
              `${err.message}\n${JSON.stringify(server.acme!.status())}\n${
                logger.lines.join("\n")
              }\n${JSON.stringify(hook.calls)}\n${pebble.log().slice(-3000)}`,
            );
          });
        await waitFor(() => server.ready(), { what: "HTTPS listener" });
        // Any name under the wildcard is served with it, verified against pebble's root.
        const got = await tlsGet(server.port, pebble.root, "/", "anything.prox.test");
        assert.equal(got.status, 200);
        assert.match(got.body, /hello wildcard$/);
        assert.equal(got.names, "DNS:prox.test, DNS:*.prox.test");
        // Two values at one name (the wildcard's authorization names its base domain), both
        // published, both removed; the token went along.
        const presents = hook.calls.filter((c) => c.action === "present");
        const cleanups = hook.calls.filter((c) => c.action === "cleanup");
        assert.equal(presents.length, 2);
        assert.deepEqual(
          new Set(presents.map((c) => c.fqdn)),
          new Set(["_acme-challenge.prox.test."]),
        );
        assert.notEqual(presents[0].value, presents[1].value);
        assert.match(presents[0].value, /^[A-Za-z0-9_-]{43}$/); // base64url SHA-256
        assert.deepEqual(
          new Set(cleanups.map((c) => c.value)),
          new Set(presents.map((c) => c.value)),
        );
        assert.ok(hook.calls.every((c) => c.auth === "Bearer s3cret"));
        assert.equal(hook.records.get("_acme-challenge.prox.test.")?.size, 0);
        assert.ok(logger.lines.some((l) => l.startsWith("info ACME DNS-01 record published")));
      } finally {
        await server.shutdown();
        Deno.env.delete("PROX_TEST_DNS_TOKEN");
      }
    }),
);

interopTest(
  "ACME DNS-01 through a command: called with present/cleanup, the record name and its value",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using up = await startUpstream(() => new Response("hello command"));
      // The hook a DNS provider's CLI would be: it keeps one value per name, as many do.
      const script = `${dir}/dns-hook.sh`;
      const calls = `${dir}/calls.txt`;
      await Deno.writeTextFile(
        script,
        `#!/bin/sh
echo "$1 $2 $3" >> "${calls}"
case "$1" in
  present) curl -sf -d "{\\"host\\":\\"$2\\",\\"value\\":\\"$3\\"}" ${pebble.challtestsrv}/set-txt ;;
  cleanup) curl -sf -d "{\\"host\\":\\"$2\\"}" ${pebble.challtestsrv}/clear-txt ;;
  *) echo "unknown action $1" >&2; exit 2 ;;
esac
`,
      );
      await Deno.chmod(script, 0o755);
      const server = await start(
        dnsYaml({
          pebble,
          storage: `${dir}/acme`,
          upstream: up.url,
          domains: ["prox.test"],
          dns: `command: ["${script}"]
resolvers: ["${pebble.dns}"]`,
        }),
        { dnsPollMs: 50, pollMinMs: 200 },
      );
      try {
        await waitFor(() => server.acme!.current(), {
          timeoutMs: 30_000,
          what: `issuance (${server.acme!.status().lastError})`,
        });
        await waitFor(() => server.ready(), { what: "HTTPS listener" });
        const got = await tlsGet(server.port, pebble.root);
        assert.equal(got.status, 200);
        assert.equal(got.names, "DNS:prox.test");
        const lines = (await Deno.readTextFile(calls)).trim().split("\n");
        assert.equal(lines.length, 2, lines.join("\n"));
        assert.match(lines[0], /^present _acme-challenge\.prox\.test\. [A-Za-z0-9_-]{43}$/);
        assert.equal(lines[1], lines[0].replace("present", "cleanup"));
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME DNS-01 failures name their cause: a webhook that refuses, a record the resolver never shows",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using up = await startUpstream(() => new Response("never"));
      for (
        const [opts, expected] of [
          [
            { fail: true },
            /DNS webhook http:\/\/127\.0\.0\.1:\d+\/dns\/present answered 500: zone example\.invalid is not ours/,
          ],
          [
            { publish: false },
            /the TXT record _acme-challenge\.prox\.test\. was not seen on 127\.0\.0\.1:\d+ within 1 s/,
          ],
        ] as const
      ) {
        await using hook = startHook(pebble, opts);
        const server = await start(
          dnsYaml({
            pebble,
            storage: `${dir}/acme-${opts.fail ? "fail" : "unpublished"}`,
            upstream: up.url,
            domains: ["prox.test"],
            dns: `webhook: "${hook.url}/"
resolvers: ["${pebble.dns}"]
propagation_timeout: 1s`,
          }),
          { dnsPollMs: 50, pollMinMs: 200, retryBaseMs: 3_600_000 },
        );
        try {
          const status = await waitFor(() => {
            const s = server.acme!.status();
            return s.state === "failing" ? s : null;
          }, { timeoutMs: 30_000, what: "the failed order" });
          assert.match(status.lastError ?? "", expected);
          assert.equal(server.acme!.current(), null);
          // The authorization was given up before the CA was asked to validate it.
          assert.ok(!pebble.log().includes("validations"), pebble.log());
          // A trailing slash on the webhook URL does not double it; the cleanup still ran.
          assert.deepEqual(hook.calls.map((c) => c.action), ["present", "cleanup"]);
        } finally {
          await server.shutdown();
        }
      }
    }),
);

interopTest(
  "ACME DNS-01 with a wildcard first: stored under its name, reused by a restart (no new order), served for any name under it",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using hook = startHook(pebble);
      await using up = await startUpstream(() => new Response("hello again"));
      const yaml = dnsYaml({
        pebble,
        storage: `${dir}/acme`,
        upstream: up.url,
        domains: ["*.Prox.test", "prox.test"],
        dns: `webhook: "${hook.url}"
resolvers: ["${pebble.dns}"]`,
      });
      const first = await start(yaml, { dnsPollMs: 50, pollMinMs: 200 });
      let serial: string;
      try {
        await waitFor(() => first.acme!.current(), {
          timeoutMs: 30_000,
          what: `issuance (${first.acme!.status().lastError})`,
        });
        await waitFor(() => first.ready(), { what: "HTTPS listener" });
        serial = (await tlsGet(first.port, pebble.root, "/", "a.prox.test"))
          .serial;
      } finally {
        await first.shutdown();
      }
      assert.ok((await Deno.stat(`${dir}/acme/*.Prox.test.crt`)).isFile);
      assert.equal(pebble.orders(), 1);
      const logger = memoryLogger();
      const second = await start(yaml, { dnsPollMs: 50, pollMinMs: 200 }, logger);
      try {
        await waitFor(() => second.ready(), { what: "HTTPS listener after the restart" });
        const got = await tlsGet(second.port, pebble.root, "/", "b.prox.test");
        assert.equal(got.status, 200);
        assert.equal(got.serial, serial);
        assert.equal(second.acme!.status().state, "ok");
        assert.equal(pebble.orders(), 1, logger.lines.join("\n"));
      } finally {
        await second.shutdown();
      }
    }),
);

interopTest(
  "ACME DNS-01 with _acme-challenge CNAMEd to another zone: the hook gets where it points (lego's EffectiveFQDN), and the CA follows it",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using hook = startHook(pebble);
      await using up = await startUpstream(() => new Response("hello delegated"));
      // The delegation an operator sets up once, so that the hook's credentials cover only the
      // validation zone.
      const res = await fetch(`${pebble.challtestsrv}/set-cname`, {
        method: "POST",
        body: JSON.stringify({
          host: "_acme-challenge.prox.test.",
          target: "prox-test.acme.validation.test.",
        }),
      });
      await res.body?.cancel();
      assert.equal(res.status, 200);
      const server = await start(
        dnsYaml({
          pebble,
          storage: `${dir}/acme`,
          upstream: up.url,
          domains: ["prox.test"],
          dns: `webhook: "${hook.url}"
resolvers: ["${pebble.dns}"]
propagation_timeout: 5s`,
        }),
        { dnsPollMs: 50, pollMinMs: 200 },
      );
      try {
        await waitFor(() => server.acme!.current(), {
          timeoutMs: 30_000,
          what: `issuance (${server.acme!.status().lastError})`,
        });
        assert.deepEqual(
          hook.calls.map((c) => `${c.action} ${c.fqdn}`),
          ["present prox-test.acme.validation.test.", "cleanup prox-test.acme.validation.test."],
        );
      } finally {
        await server.shutdown();
      }
    }),
);

interopTest(
  "ACME DNS-01: hook calls come one at a time, as lego makes them (a hook that reads, then rewrites a name's values loses none)",
  TOOLS,
  () =>
    withTempDir(async (dir) => {
      await using pebble = await startPebble({ httpPort: freePort(), dir });
      await using up = await startUpstream(() => new Response("hello serial"));
      // A provider API without an "add one value" call: the hook reads the name's values, adds
      // or removes its own, and writes them all back.
      const script = `${dir}/dns-hook.sh`;
      const state = `${dir}/values`;
      await Deno.writeTextFile(
        script,
        `#!/bin/sh
touch "${state}"
values=$(cat "${state}")
sleep 0.3
case "$1" in
  present) values=$(printf '%s\\n%s\\n' "$values" "$3" | grep . | sort -u) ;;
  cleanup) values=$(printf '%s\\n' "$values" | grep -vx "$3") ;;
esac
printf '%s\\n' "$values" > "${state}"
curl -sf -d "{\\"host\\":\\"$2\\"}" ${pebble.challtestsrv}/clear-txt
for v in $values; do
  curl -sf -d "{\\"host\\":\\"$2\\",\\"value\\":\\"$v\\"}" ${pebble.challtestsrv}/set-txt
done
exit 0
`,
      );
      await Deno.chmod(script, 0o755);
      const server = await start(
        dnsYaml({
          pebble,
          storage: `${dir}/acme`,
          upstream: up.url,
          domains: ["prox.test", "*.prox.test"],
          dns: `command: ["${script}"]
resolvers: ["${pebble.dns}"]
propagation_timeout: 3s`,
        }),
        { dnsPollMs: 50, pollMinMs: 200, retryBaseMs: 3_600_000 },
      );
      try {
        const got = await waitFor(() => {
          const s = server.acme!.status();
          return server.acme!.current() ? "issued" : s.state === "failing" ? s.lastError : null;
        }, { timeoutMs: 30_000, what: "the order's outcome" });
        assert.equal(got, "issued");
        assert.equal((await Deno.readTextFile(state)).trim(), "");
      } finally {
        await server.shutdown();
      }
    }),
);

import assert from "node:assert/strict";
import {
  compileIpAccess,
  formatEntry,
  ipVerdict,
  listFileLines,
  parseAccessEntry,
  withListFiles,
} from "./ip_access.ts";

const verdict = (allow: string[], deny: string[], ip: string) =>
  ipVerdict(compileIpAccess({ allow, deny }), ip);

Deno.test("ipVerdict allows everyone with empty lists", () => {
  assert.deepEqual(verdict([], [], "203.0.113.9"), { allowed: true, rule: null });
  assert.deepEqual(verdict([], [], "2001:db8::1"), { allowed: true, rule: null });
});

Deno.test("ipVerdict refuses a client no allow entry contains", () => {
  assert.deepEqual(verdict(["10.0.0.0/8"], [], "10.1.2.3"), { allowed: true, rule: "10.0.0.0/8" });
  assert.deepEqual(verdict(["10.0.0.0/8"], [], "11.0.0.1"), { allowed: false, rule: null });
  assert.deepEqual(verdict(["10.0.0.0/8"], [], "::1"), { allowed: false, rule: null });
});

Deno.test("ipVerdict: deny-only lists allow everyone else", () => {
  assert.equal(verdict([], ["192.0.2.7"], "192.0.2.7").allowed, false);
  assert.equal(verdict([], ["192.0.2.7"], "192.0.2.8").allowed, true);
});

Deno.test("ipVerdict: the most specific entry wins, whichever list holds it", () => {
  // allow a block but deny one address in it
  assert.deepEqual(verdict(["10.0.0.0/8"], ["10.0.0.5"], "10.0.0.5"), {
    allowed: false,
    rule: "10.0.0.5",
  });
  assert.equal(verdict(["10.0.0.0/8"], ["10.0.0.5"], "10.0.0.6").allowed, true);
  // deny a block but allow one subnet in it
  assert.equal(verdict(["10.1.0.0/16"], ["10.0.0.0/8"], "10.1.9.9").allowed, true);
  assert.deepEqual(verdict(["10.1.0.0/16"], ["10.0.0.0/8"], "10.2.0.1"), {
    allowed: false,
    rule: "10.0.0.0/8",
  });
  // deny everyone but one address
  assert.equal(verdict(["198.51.100.1"], ["all"], "198.51.100.1").allowed, true);
  assert.deepEqual(verdict(["198.51.100.1"], ["all"], "198.51.100.2"), {
    allowed: false,
    rule: "all",
  });
  assert.equal(verdict(["198.51.100.1"], ["all"], "2001:db8::1").allowed, false);
});

Deno.test("ipVerdict: the same block in both lists is denied", () => {
  assert.equal(verdict(["10.0.0.0/8"], ["10.0.0.0/8"], "10.0.0.1").allowed, false);
  assert.equal(verdict(["10.0.0.0/8"], ["10.9.9.9/8"], "10.0.0.1").allowed, false);
});

Deno.test("ipVerdict matches IPv6 blocks and keeps the families apart", () => {
  assert.equal(verdict(["2001:db8::/32"], [], "2001:db8:1::9").allowed, true);
  assert.equal(verdict(["2001:db8::/32"], [], "2001:db9::1").allowed, false);
  assert.equal(verdict(["::1"], [], "::1").allowed, true);
  // ::/0 is every IPv6 client, not IPv4 (as nginx); `all` is both
  assert.equal(verdict([], ["::/0"], "2001:db8::1").allowed, false);
  assert.equal(verdict([], ["::/0"], "192.0.2.1").allowed, true);
  assert.equal(verdict([], ["0.0.0.0/0"], "2001:db8::1").allowed, true);
  assert.equal(verdict([], ["all"], "2001:db8::1").allowed, false);
  assert.equal(verdict([], ["all"], "192.0.2.1").allowed, false);
});

Deno.test("ipVerdict: an IPv4-mapped IPv6 client or entry is IPv4", () => {
  assert.equal(verdict(["192.0.2.0/24"], [], "::ffff:192.0.2.9").allowed, true);
  assert.equal(verdict(["::ffff:192.0.2.0/120"], [], "192.0.2.9").allowed, true);
  assert.equal(verdict(["::ffff:192.0.2.0/120"], [], "192.0.3.9").allowed, false);
  assert.equal(verdict([], ["::ffff:c000:201"], "192.0.2.1").allowed, false);
});

Deno.test("ipVerdict: an unparseable client matches only `all`", () => {
  assert.equal(verdict([], ["0.0.0.0/0"], "unix").allowed, true);
  assert.equal(verdict(["0.0.0.0/0"], [], "unix").allowed, false);
  assert.equal(verdict(["all"], [], "unix").allowed, true);
});

Deno.test("ipVerdict: /0 and /32, /128 edges", () => {
  assert.equal(verdict(["0.0.0.0/0"], [], "255.255.255.255").allowed, true);
  assert.equal(verdict(["255.255.255.255/32"], [], "255.255.255.255").allowed, true);
  assert.equal(verdict(["255.255.255.255/32"], [], "255.255.255.254").allowed, false);
  const v6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  assert.equal(verdict([`${v6}/128`], [], v6).allowed, true);
  assert.equal(verdict([`${v6}/127`], [], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe").allowed, true);
  assert.equal(
    verdict([`${v6}/128`], [], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe").allowed,
    false,
  );
});

Deno.test("parseAccessEntry rejects what is not an address or block", () => {
  for (
    const bad of ["", "10.0.0.0/33", "::/129", "10.0.0/8", "example.com", "10.0.0.0/", "[::1]"]
  ) {
    assert.equal(parseAccessEntry(bad), null, bad);
  }
  assert.equal(parseAccessEntry("fe80::1%eth0"), null);
});

Deno.test("parseAccessEntry reports host bits and formats the block meant", () => {
  const e = parseAccessEntry("10.0.0.5/8")!;
  assert.equal(e.hostBits, true);
  assert.equal(formatEntry(e), "10.0.0.0/8");
  assert.equal(parseAccessEntry("10.0.0.0/8")!.hostBits, false);
  const v6 = parseAccessEntry("2001:db8::1/32")!;
  assert.equal(v6.hostBits, true);
  assert.equal(formatEntry(v6), "2001:db8::/32");
  assert.equal(formatEntry(parseAccessEntry("::ffff:10.1.2.3/104")!), "10.0.0.0/8");
});

Deno.test("ipVerdict stays exact with many entries", () => {
  const allow = Array.from({ length: 1000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
  const access = compileIpAccess({ allow, deny: ["10.0.5.0/25"] });
  assert.equal(ipVerdict(access, "10.3.231.200").allowed, true);
  assert.equal(ipVerdict(access, "10.3.232.1").allowed, false);
  assert.equal(ipVerdict(access, "10.0.5.1").allowed, false);
  assert.equal(ipVerdict(access, "10.0.5.129").allowed, true);
});

Deno.test("ipVerdict reads dotted quads exactly (fast path) and odd forms like parseIp", () => {
  const access = compileIpAccess({ allow: ["10.0.0.0/8", "255.255.255.255"], deny: [] });
  assert.equal(ipVerdict(access, "10.255.255.255").allowed, true);
  assert.equal(ipVerdict(access, "255.255.255.255").allowed, true);
  assert.equal(ipVerdict(access, "11.0.0.0").allowed, false);
  assert.equal(ipVerdict(access, "010.0.0.1").allowed, true); // parseIp: decimal, as written
  for (const odd of ["10.0.0", "10.0.0.1.2", "10..0.1", "10.0.0.256", "1000.0.0.1", "10.0.0.1 "]) {
    assert.equal(ipVerdict(access, odd).allowed, odd === "10.0.0.1 ", odd);
  }
});

Deno.test("listFileLines reads one entry per line, with comments, blanks and nginx's form", () => {
  const text = "# blocklist\n203.0.113.0/24\n\n  198.51.100.7  # one host\ndeny 10.0.0.0/8;\n" +
    "2001:db8::/32\nnot-an-ip\r\n192.0.2.0/33\n";
  assert.deepEqual(listFileLines(text.replace("\r", "")), [
    { line: 2, entry: "203.0.113.0/24" },
    { line: 4, entry: "198.51.100.7" },
    { line: 5, entry: "10.0.0.0/8" },
    { line: 6, entry: "2001:db8::/32" },
    { line: 7, problem: 'Invalid address or CIDR block "not-an-ip"' },
    { line: 8, problem: 'Invalid address or CIDR block "192.0.2.0/33"' },
  ]);
  // Spamhaus DROP's format: `;` comments, after an entry too.
  assert.deepEqual(listFileLines("; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n"), [
    { line: 2, entry: "1.10.16.0/20" },
  ]);
  // CRLF files read the same.
  assert.deepEqual(listFileLines("10.0.0.1\r\n10.0.0.2\r\n"), [
    { line: 1, entry: "10.0.0.1" },
    { line: 2, entry: "10.0.0.2" },
  ]);
});

Deno.test("withListFiles adds the files' entries to the inline lists", () => {
  const files = new Map([["a.txt", "10.0.0.0/8\nbad\n"], ["b.txt", "10.1.0.0/16\n"]]);
  const lists = withListFiles(
    { allow: ["192.0.2.1"], deny: [], allow_file: "b.txt", deny_file: ["a.txt", "missing.txt"] },
    (f) => files.get(f),
  );
  assert.deepEqual(lists, {
    allow: ["192.0.2.1", { text: "10.1.0.0/16", file: "b.txt", line: 1 }],
    deny: [{ text: "10.0.0.0/8", file: "a.txt", line: 1 }],
    allowListed: true,
  });
  const access = compileIpAccess(lists);
  assert.equal(ipVerdict(access, "10.1.2.3").allowed, true);
  assert.equal(ipVerdict(access, "10.2.0.1").allowed, false);
});

Deno.test("withListFiles: an allow_file with no entries (a feed caught mid-rewrite) still refuses", () => {
  // Fail closed: an allow list that came up empty must not let everyone in.
  for (const text of ["", "# none yet\n", "10.0.0.\n"]) {
    const access = compileIpAccess(
      withListFiles({ allow: [], deny: [], allow_file: "a" }, () => text),
    );
    assert.equal(ipVerdict(access, "192.0.2.1").allowed, false, JSON.stringify(text));
  }
  // A deny file with no entries refuses nobody.
  const open = compileIpAccess(withListFiles({ allow: [], deny: [], deny_file: "d" }, () => ""));
  assert.equal(ipVerdict(open, "192.0.2.1").allowed, true);
});

Deno.test("ipVerdict over many random IPv4 blocks agrees with a scan of every entry", () => {
  // A small seeded generator: the same lists each run.
  let seed = 12345;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  // Blocks crowded into a few /8s (so they nest, touch and repeat), edges of the space too.
  const quad = () => `${[10, 11, 0, 255][rand(4)]}.${rand(4)}.${rand(256)}.${rand(256)}`;
  // Now and then `all`, an IPv4-mapped IPv6 block (the IPv4 one), spaces around.
  const entry = () => {
    if (rand(25) === 0) return rand(2) ? "all" : " ALL ";
    const bits = [0, 1, 8, 9, 16, 23, 24, 30, 31, 32][rand(10)];
    if (rand(10) === 0) return `::ffff:${quad()}/${96 + bits}`;
    const e = bits === 32 && rand(2) ? quad() : `${quad()}/${bits}`;
    return rand(10) === 0 ? ` ${e}\t` : e;
  };
  for (let round = 0; round < 20; round++) {
    const allow = Array.from({ length: rand(40) }, entry);
    const deny = Array.from({ length: rand(40) }, entry);
    // Repeats across and within the lists.
    if (allow.length > 0 && rand(2)) deny.push(allow[rand(allow.length)]);
    if (deny.length > 0 && rand(2)) deny.push(deny[rand(deny.length)]);
    if (allow.length > 0 && rand(2)) allow.push(allow[rand(allow.length)]);
    const compiled = compileIpAccess({ allow, deny });
    const toNum = (ip: string) => ip.split(".").reduce((n, p) => n * 256 + Number(p), 0);
    const entries = [
      ...allow.map((t) => ({ t, allow: true })),
      ...deny.map((t) => ({ t, allow: false })),
    ]
      .map((x) => {
        const e = parseAccessEntry(x.t)!;
        const start = e.all ? 0 : toNum(Array.from(e.bytes).join("."));
        return { ...x, t: x.t.trim(), start, bits: e.bits };
      });
    for (let k = 0; k < 300; k++) {
      // Addresses at and around the blocks' edges, and anywhere.
      const near = entries.length > 0 && rand(3) > 0 ? entries[rand(entries.length)] : null;
      const n = near
        ? (near.start + [0, -1, 1, 2 ** (32 - near.bits) - 1, 2 ** (32 - near.bits)][rand(5)] +
          2 ** 32) % 2 ** 32
        : rand(2 ** 31) * 2 + rand(2);
      const dotted = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
      // A client on a dual-stack socket is an IPv4-mapped address: the same verdict.
      const ip = rand(5) === 0 ? `::ffff:${dotted}` : dotted;
      // The longest block containing it; of equal ones the first deny, else the last allow.
      let best: (typeof entries)[0] | null = null;
      for (const e of entries) {
        const size = 2 ** (32 - e.bits);
        if (n < e.start || n >= e.start + size) continue;
        if (
          best === null || e.bits > best.bits ||
          (e.bits === best.bits && best.allow)
        ) best = e;
      }
      const got = ipVerdict(compiled, ip);
      const want = best === null
        ? { allowed: allow.length === 0, rule: null }
        : { allowed: best.allow, rule: best.t };
      assert.deepEqual(got, want, `${ip} with allow ${allow} deny ${deny}`);
    }
  }
});

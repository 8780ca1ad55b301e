import assert from "node:assert/strict";
import { requestFromArgs } from "./explain_cli.ts";

Deno.test("requestFromArgs refuses a header a request cannot carry, as a usage error", () => {
  // `new Headers` threw these later, inside explainRequest: `prox explain` died with a stack
  // trace, the admin /explain answered 500, `prox test` stopped at that case.
  for (const h of ["Bad Name: 1", "X(y): 1", "Ü: 1", "X: a\nb", "X: a\rb", "X: a\0b"]) {
    const r = requestFromArgs(["/a"], { headers: [h] });
    assert.equal(typeof r, "string", JSON.stringify(h));
    assert.match(r as string, /^invalid header/);
  }
  const ok = requestFromArgs(["/a"], { headers: ["X-Y: a b", "Cookie:a=b", "X-Empty:"] });
  assert.notEqual(typeof ok, "string");
});

Deno.test("requestFromArgs refuses a client address that is not an IP address", () => {
  // A typo (10.0.0.300, a host name) was explained as a client no listener can have: ip_access
  // and trusted_proxies judged the text.
  for (const ip of ["10.0.0.300", "not-an-ip", "example.com", "1.2.3", ""]) {
    const r = requestFromArgs(["/a"], { clientIp: ip });
    assert.equal(typeof r, "string", ip);
    assert.match(r as string, /^invalid client address/);
  }
  for (
    const [ip, as] of [["10.0.0.7", "10.0.0.7"], ["2001:db8::1", "2001:db8::1"], ["[::1]", "::1"]]
  ) {
    const r = requestFromArgs(["/a"], { clientIp: ip });
    assert.ok(typeof r !== "string", `${ip}: ${r}`);
    assert.equal(r.clientIp, as);
  }
});

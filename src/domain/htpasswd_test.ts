import assert from "node:assert/strict";
import { bcryptCost, hashProblem, parseHtpasswd } from "./htpasswd.ts";

// Written by `htpasswd -nbB -C 5 alice 'wonder:land'` and `caddy hash-password` (Caddy 2.6).
const HTPASSWD_B = "$2y$05$AYw6TXrwl9Rc4rj86MFm9eehdwDZG3Q6N1P71NCqe/9kbg8p0mn3a";
const CADDY = "$2a$14$QTYEhoyTJlJX9i/6wjfwO.Pr/ck8dUvjixOOQG0n8x/5XvS9TNCoG";

Deno.test("hashProblem accepts bcrypt $2a$, $2b$, $2y$ and names every other scheme", () => {
  assert.equal(hashProblem(HTPASSWD_B), null);
  assert.equal(hashProblem(CADDY), null);
  assert.equal(hashProblem(HTPASSWD_B.replace("$2y$", "$2b$")), null);
  assert.equal(bcryptCost(HTPASSWD_B), 5);
  assert.equal(bcryptCost(CADDY), 14);
  assert.match(hashProblem("$apr1$glXF6CrW$nH4UOnbJJqArs.BLrkRqy.")!, /Apache MD5/);
  assert.match(hashProblem("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")!, /SHA-1/);
  assert.match(hashProblem("$6$salt$abc")!, /\$6\$ crypt/);
  assert.match(hashProblem("abJnggxhB/yWI")!, /DES crypt/);
  assert.match(hashProblem("hunter2")!, /plain text/);
  assert.match(hashProblem("$2y$03$" + "a".repeat(53))!, /malformed bcrypt/);
  assert.match(hashProblem("$2y$10$short")!, /malformed bcrypt/);
});

Deno.test("hashProblem refuses a bcrypt cost that would hold the event loop for seconds", () => {
  // Cost 31: 2^31 rounds, days of CPU per check. Caddy's default 14 still loads.
  const slow = (cost: number) => CADDY.replace("$14$", `$${cost}$`);
  assert.equal(hashProblem(slow(14)), null);
  assert.match(hashProblem(slow(15))!, /bcrypt hash of cost 15, .*about 3\.8 s.*14 at most/);
  assert.match(hashProblem(slow(31))!, /cost 31/);
  const { users, problems } = parseHtpasswd(`alice:${slow(31)}\nbob:${CADDY}`);
  assert.deepEqual([...users.keys()], ["bob"]);
  assert.match(problems[0].message, /user "alice" has a bcrypt hash of cost 31/);
});

Deno.test("parseHtpasswd keeps bcrypt users and reports other lines by number", () => {
  const text = [
    "# staff",
    `alice:${HTPASSWD_B}`,
    "",
    "bob:$apr1$glXF6CrW$nH4UOnbJJqArs.BLrkRqy.",
    "carol:plain",
    "no colon here",
    `alice:${CADDY}`,
    `jose\u0301:${CADDY}\r`,
  ].join("\n");
  const { users, problems } = parseHtpasswd(text);
  assert.deepEqual([...users], [["alice", HTPASSWD_B], ["jos\u00e9", CADDY]]);
  assert.deepEqual(problems.map((p) => p.line), [4, 5, 6, 7]);
  assert.match(problems[0].message, /user "bob" has an Apache MD5/);
  assert.match(problems[1].message, /user "carol" has plain text/);
  assert.equal(problems[2].message, "not USER:HASH");
  assert.match(problems[3].message, /listed again/);
});

import assert from "node:assert/strict";
import { interopTest, run } from "../../../tests/_harness.ts";
import { pemBlocks } from "../../domain/crl.ts";
import { chainBuilder } from "./client_chain.ts";

interopTest(
  "chainBuilder links by signature, and looks at no more than 16 certificates the client sent",
  ["openssl"],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "prox-chain-" });
    try {
      const r = await run("bash", [
        "-c",
        `set -e
cd "${dir}"
p256() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "$@"; }
p256 -x509 -days 1 -keyout root.key -out root.pem -subj /CN=Root \\
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
p256 -keyout int.key -out int.csr -subj /CN=Intermediate
printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign,cRLSign\\n' > int.ext
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -set_serial 2 -days 1 -extfile int.ext -out int.pem
# A look-alike: the intermediate's name, another key.
p256 -x509 -days 1 -keyout fake.key -out fake.pem -subj /CN=Intermediate
p256 -keyout leaf.key -out leaf.csr -subj /CN=bob
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -set_serial 3 -days 1 -out leaf.pem`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const der = (f: string) => pemBlocks(Deno.readTextFileSync(`${dir}/${f}`), "CERTIFICATE")[0];
      const build = chainBuilder(Deno.readTextFileSync(`${dir}/root.pem`));
      const [leaf, int, fake, root] = ["leaf.pem", "int.pem", "fake.pem", "root.pem"].map(der);
      // The look-alike first: passed over, its signature does not hold.
      const linked = build(leaf, [fake, int]);
      assert.deepEqual(linked.certs, [leaf, int, root]);
      assert.equal(linked.selfSigned, true);
      assert.equal(linked.trusted, true);
      // The real intermediate 16th: found; 17th: not looked at.
      assert.equal(build(leaf, [...Array(15).fill(fake), int]).certs.length, 3);
      const far = build(leaf, [...Array(16).fill(fake), int]);
      assert.deepEqual(far.certs, [leaf]);
      assert.equal(far.trusted, false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

import assert from "node:assert/strict";
import { waitFor } from "../../tests/_harness.ts";
import { silentLogger } from "../ports.ts";
import { openAccessLogFile } from "./log_file.ts";

Deno.test("access log file: a directory gone is said once, not at every check", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-logfile-" });
  const warnings: string[] = [];
  const f = openAccessLogFile(`${dir}/access.log`, {
    logger: { ...silentLogger, warn: (m) => void warnings.push(m) },
    checkMs: 10,
  });
  try {
    f.write("one\n");
    await Deno.remove(dir, { recursive: true });
    await waitFor(() => warnings.length > 0, { what: "the first warning" });
    // Twenty more checks: nothing new to say (before: one line a check, forever).
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(warnings, ["Cannot reopen the access log file"]);
  } finally {
    await f.close(1_000);
  }
});

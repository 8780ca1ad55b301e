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

Deno.test("access log file: lines written while it closes or after are written, in order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-logfile-" });
  const path = `${dir}/access.log`;
  const f = openAccessLogFile(path, { logger: silentLogger });
  try {
    f.write("one\n");
    const closing = f.close(1_000);
    // A response that ends during the drain at shutdown, or after the file closed (before: both
    // dropped without a word).
    f.write("two\n");
    await closing;
    f.write("three\n");
    assert.equal(await Deno.readTextFile(path), "one\ntwo\nthree\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("access log file: a line that cannot be written after close is said, with its count", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-logfile-" });
  const warned: [string, Record<string, unknown> | undefined][] = [];
  const f = openAccessLogFile(`${dir}/access.log`, {
    logger: { ...silentLogger, warn: (m, fields) => void warned.push([m, fields]) },
  });
  await f.close(1_000);
  await Deno.remove(dir, { recursive: true });
  f.write("late\n");
  f.write("later\n");
  assert.equal(warned.length, 2);
  assert.match(warned[0][0], /Access log line dropped/);
  assert.equal(warned[1][1]?.dropped, 2);
});

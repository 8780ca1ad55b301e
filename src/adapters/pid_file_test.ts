import assert from "node:assert/strict";
import { readPid, removePidIfOurs, runsWithPidFile, writePid } from "./pid_file.ts";
import { waitFor } from "../../tests/_harness.ts";

// Real files and real child processes (bash, sleep); Linux /proc for the identity check.

Deno.test("readPid: our live pid back; null for missing, garbage and dead pids", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-pid-" });
  const file = `${dir}/prox.pid`;
  try {
    assert.equal(readPid(file), null);
    await writePid(file);
    assert.equal(readPid(file), Deno.pid);
    await Deno.writeTextFile(file, "12ab\n");
    assert.equal(readPid(file), null);
    const child = new Deno.Command("true").spawn();
    await child.status;
    await Deno.writeTextFile(file, `${child.pid}\n`);
    assert.equal(readPid(file), null, "an exited process");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writePid does not follow a symlink planted at its temp file's name", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-pid-" });
  const file = `${dir}/prox.pid`;
  try {
    await Deno.writeTextFile(`${dir}/victim`, "precious\n");
    await Deno.symlink(`${dir}/victim`, `${file}.${Deno.pid}.tmp`);
    await writePid(file);
    assert.equal(await Deno.readTextFile(`${dir}/victim`), "precious\n");
    assert.equal(readPid(file), Deno.pid);
    assert.equal((await Deno.lstat(file)).isFile, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("removePidIfOurs leaves a successor's pid file alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-pid-" });
  const file = `${dir}/prox.pid`;
  try {
    await Deno.writeTextFile(file, "1\n");
    removePidIfOurs(file);
    assert.equal(await Deno.readTextFile(file), "1\n");
    await writePid(file);
    removePidIfOurs(file);
    await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "runsWithPidFile: only a process started with --pid-file naming the same file",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "prox-pid-" });
    const file = `${dir}/prox.pid`;
    await Deno.writeTextFile(file, "");
    // bash -c CMD NAME ARGS…: the extra words land in /proc/PID/cmdline.
    const spawn = (args: string[], cwd?: string) =>
      new Deno.Command("bash", { args: ["-c", "sleep 30; true", "prox", ...args], cwd }).spawn();
    const same = spawn(["serve", "--pid-file", "prox.pid"], dir);
    const equals = spawn([`--pid-file=${file}`]);
    const other = spawn(["--pid-file", `${dir}/other.pid`]);
    const none = spawn(["serve"]);
    try {
      for (const c of [same, equals, other, none]) {
        await waitFor(() =>
          Deno.readTextFileSync(`/proc/${c.pid}/cmdline`).includes("sleep 30; true")
        );
      }
      assert.equal(runsWithPidFile(same.pid, file), true, "relative to its cwd");
      assert.equal(runsWithPidFile(equals.pid, file), true);
      assert.equal(runsWithPidFile(other.pid, file), false);
      assert.equal(runsWithPidFile(none.pid, file), false);
    } finally {
      for (const c of [same, equals, other, none]) {
        c.kill("SIGKILL");
        await c.status;
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("writePid that cannot rename (the path is a directory) leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "prox-pid-" });
  const file = `${dir}/prox.pid`;
  try {
    await Deno.mkdir(`${file}/inside`, { recursive: true });
    await assert.rejects(writePid(file));
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(names, ["prox.pid"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

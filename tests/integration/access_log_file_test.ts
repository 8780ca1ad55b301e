// `log.access_log_file`: access lines go to a file, which is reopened when logrotate moves it away
// (and written on where copytruncate truncates it); a reload may change or drop it.
import assert from "node:assert/strict";
import { startUpstream, waitFor } from "../_harness.ts";
import { startServer } from "../../src/server.ts";
import { silentLogger } from "../../src/ports.ts";
import { loadConfigText } from "../../src/config/load.ts";

const config = (upstream: string, log: string) =>
  `listen_addr: "127.0.0.1:0"
health_check: { enabled: false }
log: ${log}
routes:
  /: { type: proxy, target: "${upstream}" }
`;

const read = (path: string) => {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
};

Deno.test("log.access_log_file: lines in the file, which follows a rotation by move and a reload", async () => {
  await using up = await startUpstream(() => new Response("ok"));
  const dir = await Deno.makeTempDir();
  const log = `${dir}/access.log`;
  const file = `${dir}/prox.yaml`;
  await Deno.writeTextFile(file, config(up.url, `{ access_log_file: "${log}" }`));
  const server = await startServer({ path: file }, { logger: silentLogger, watch: false });
  try {
    const get = async (path: string) =>
      await (await fetch(`http://127.0.0.1:${server.port}${path}`)).text();
    assert.equal(await get("/first"), "ok");
    await waitFor(() => read(log).includes('"path":"/first"'), { what: "the first line" });
    assert.equal(JSON.parse(read(log).trim()).status, 200);
    // logrotate moves it away: the next lines go to a new file at the path.
    await Deno.rename(log, `${log}.1`);
    await waitFor(async () => {
      await get("/after");
      return read(log).includes('"path":"/after"');
    }, { what: "a line in the file opened again" });
    assert.match(read(`${log}.1`), /"path":"\/first"/);
    // copytruncate: the file is emptied in place, and lines go on from its start.
    await Deno.truncate(log, 0);
    await get("/truncated");
    await waitFor(() => read(log).startsWith('{"time"') && read(log).includes("/truncated"));
    // A reload to common format in another file.
    const other = `${dir}/other.log`;
    await Deno.writeTextFile(
      file,
      config(up.url, `{ access_log: common, access_log_file: "${other}" }`),
    );
    assert.equal((await server.reload()).ok, true);
    await get("/common");
    await waitFor(() => /"GET \/common HTTP\/1\.1" 200 /.test(read(other)), { what: "a CLF line" });
    assert.doesNotMatch(read(log), /\/common/);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("validate: log.access_log_file's directory", () => {
  const issues = (log: string) =>
    loadConfigText(config("http://127.0.0.1:9", log), {
      file: "t.yaml",
      env: {
        exists: () => true,
        stat: (p) => p === "/var/log/prox" ? { isFile: false, isDirectory: true, size: 0 } : null,
      },
    }).issues.map((i) => `${i.severity} ${i.path}: ${i.message}`);
  assert.deepEqual(issues('{ access_log_file: "/var/log/prox/access.log" }'), []);
  assert.deepEqual(issues('{ access_log_file: "/var/log/nowhere/access.log" }'), [
    "error log.access_log_file: The access log's directory does not exist: /var/log/nowhere",
  ]);
  assert.deepEqual(issues('{ access_log_file: "/var/log/prox" }'), [
    "error log.access_log_file: /var/log/prox is a directory",
  ]);
  assert.deepEqual(issues('{ access_log: false, access_log_file: "/var/log/prox/a.log" }'), [
    "warning log.access_log_file: access_log_file has no effect with access_log: false",
  ]);
});

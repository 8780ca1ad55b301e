// Debian's nginx as a real upstream for integration tests, on a free port, in a temp directory.
import { waitFor } from "../_harness.ts";
import { freePort } from "./_process.ts";

/**
 * Starts nginx on a free port with `server` as its server block body; `more(port)` adds server
 * blocks beside it (e.g. a `default_server` for name-based virtual hosts); `listen` adds
 * parameters to the listen directive (`proxy_protocol`), `http` directives before the server
 * (`log_format`). `dir` holds its files (logs).
 */
export async function startNginx(
  server: string,
  opts: { more?: (port: number) => string; listen?: string; http?: string } = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "prox-nginx-" });
  const port = freePort();
  await Deno.chmod(dir, 0o755); // nginx workers run unprivileged
  await Deno.writeTextFile(`${dir}/big.txt`, "x".repeat(300_000), { mode: 0o644 });
  await Deno.writeTextFile(
    `${dir}/nginx.conf`,
    `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  ${opts.http ?? ""}
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port}${opts.listen ? ` ${opts.listen}` : ""};
    root ${dir};
    ${server}
  }
  ${opts.more?.(port) ?? ""}
}
`,
  );
  const child = new Deno.Command("nginx", {
    args: ["-c", `${dir}/nginx.conf`, "-p", dir],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return true;
    } catch {
      return false;
    }
  }, { what: "nginx to listen" });
  return {
    url,
    dir,
    async [Symbol.asyncDispose]() {
      child.kill("SIGQUIT");
      await child.stderr.cancel();
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

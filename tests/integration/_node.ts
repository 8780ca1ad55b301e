// A Node.js process running a server script for tests that need what Deno's servers cannot do
// (ask for client certificates, node:http2 on a Unix socket, trailers on demand).

/** A running `node -e script`; `line` is the first line it printed (its port, once listening). */
export interface NodeServer extends AsyncDisposable {
  line: string;
}

/** Starts `node -e script` and waits for its first line of output. */
export async function nodeServer(script: string): Promise<NodeServer> {
  const child = new Deno.Command("node", { args: ["-e", script], stdout: "piped" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stop = async () => {
    child.kill();
    await reader.cancel();
    await child.status;
  };
  let out = "";
  while (!out.includes("\n")) {
    const r = await reader.read();
    if (r.done) {
      await stop();
      throw new Error("node exited before listening");
    }
    out += r.value;
  }
  return { line: out.slice(0, out.indexOf("\n")).trim(), [Symbol.asyncDispose]: stop };
}

// `prox proxy --to URL` and `prox static [DIR]`: a whole Prox from one command line, as Caddy's
// `reverse-proxy` and `file-server` give, for a laptop or a container. Each builds the config
// text it stands for (`--print-config` shows it, the start of a config file), which then loads,
// validates and serves as any config does. Pure: arguments in, YAML text or a usage error out.

/** What the command line says; the values of the options these two commands take. */
export interface QuickArgs {
  command: "proxy" | "static";
  /** Positionals after the command: static's directory. */
  rest: string[];
  from?: string;
  to?: string[];
  spa?: boolean;
  browse?: boolean;
  preserveHost?: boolean;
}

/** The listen address for `--from`: `8080` and `:8080` as Caddy reads them, else as written. */
export function listenOf(from: string | undefined): string {
  if (from === undefined) return "127.0.0.1:8080";
  if (/^\d+$/.test(from)) return `127.0.0.1:${from}`;
  if (/^:\d+$/.test(from)) return `0.0.0.0${from}`;
  return from;
}

/** A target for `--to`: `3000` and `:3000` are this host's port, `host:port` gets http://. */
export function targetOf(to: string): string {
  if (/^:?\d+$/.test(to)) return `http://127.0.0.1:${to.replace(/^:/, "")}`;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(to) || to.startsWith("unix:")) return to;
  return `http://${to}`;
}

/** The config text, or the usage error to print (exit 2). */
export function quickConfig(a: QuickArgs): { text: string } | { error: string } {
  const q = JSON.stringify;
  const head = `# Made by \`prox ${a.command}\`; save it as config.yaml to go on from here.\n` +
    `listen_addr: ${q(listenOf(a.from))}\n`;
  if (a.command === "proxy") {
    if (a.spa || a.browse) return { error: "prox proxy: --spa and --browse are for prox static" };
    const targets = (a.to ?? []).map(targetOf);
    if (targets.length === 0) {
      return { error: "prox proxy needs --to: where to send requests (e.g. --to localhost:3000)" };
    }
    if (a.rest.length > 0) return { error: `prox proxy: unexpected argument "${a.rest[0]}"` };
    const route = targets.length === 1
      ? `    type: proxy\n    target: ${q(targets[0])}\n`
      : `    type: load_balance\n    targets: [${targets.map((t) => q(t)).join(", ")}]\n` +
        "    strategy: round_robin\n";
    return {
      text: head +
        // An app need not have a /health path: passive health (failures) ejects a dead target.
        "health_check: { enabled: false }\n" +
        "routes:\n  /:\n" + route +
        (a.preserveHost ? "    preserve_host: true\n" : ""),
    };
  }
  if (a.to || a.preserveHost) {
    return { error: "prox static serves files: --to and --preserve-host are for prox proxy" };
  }
  if (a.spa && a.browse) {
    return { error: "prox static: --spa and --browse each answer for a missing page; pick one" };
  }
  if (a.rest.length > 1) return { error: `prox static: unexpected argument "${a.rest[1]}"` };
  const root = a.rest[0] ?? ".";
  return {
    text: head + "routes:\n  /:\n    type: static\n" + `    root: ${q(root)}\n` +
      "    compress: true\n" + (a.spa ? '    spa_fallback: "index.html"\n' : "") +
      (a.browse ? "    browse: true\n" : ""),
  };
}

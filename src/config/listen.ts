// `IP:PORT` listen addresses, IPv4 and bracketed IPv6 (`[::]:443`).

/** A parsed listen address. */
export interface ListenAddr {
  hostname: string;
  port: number;
}

/** Parses `127.0.0.1:3000`, `0.0.0.0:80`, `[::]:443`, `[::1]:8080`; returns an error string. */
export function parseListenAddr(text: string): ListenAddr | string {
  const fail =
    `Invalid listen address "${text}": use IP:PORT, e.g. 127.0.0.1:3000, 0.0.0.0:8080 or [::]:443`;
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const end = text.indexOf("]");
    if (end < 0 || text[end + 1] !== ":") return fail;
    host = text.slice(1, end);
    portText = text.slice(end + 2);
    // A zone (`[fe80::1%eth0]`, `%2`): a link-local address cannot be bound without one.
    const zone = /%[a-z0-9_.-]+$/i.exec(host)?.[0] ?? "";
    host = host.slice(0, host.length - zone.length);
    if (!/^[0-9a-f:.]+$/i.test(host) || !host.includes(":") || !URL.canParse(`http://[${host}]`)) {
      return fail;
    }
    // One spelling per address ("0:0::1" is "::1"), so listeners compare and log as one.
    host = new URL(`http://[${host}]`).hostname.slice(1, -1) + zone;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) return fail;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    const parts = host.split(".");
    if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
      // `http://0.0.0.0:8080`: a URL where an address belongs ("put IPv6 in brackets" misled).
      const scheme = /^[a-z][a-z0-9+.-]*:\/\/([^/]*)/i.exec(text);
      if (scheme) {
        return `Invalid listen address "${text}": write the address without a scheme, e.g. ${
          scheme[1] || "0.0.0.0:8080"
        }`;
      }
      if (host.includes(":")) {
        return `Invalid listen address "${text}": put IPv6 addresses in brackets, e.g. [::]:443`;
      }
      // Go's and Caddy's ":8080", or a name: Prox binds an address and resolves no names.
      const port = /^\d{1,5}$/.test(portText) ? portText : "8080";
      if (host === "" || host === "*") {
        return `Invalid listen address "${text}": name the address too: 0.0.0.0:${port} (every ` +
          `IPv4 address), [::]:${port} (every address) or 127.0.0.1:${port} (this machine only)`;
      }
      if (/^[a-z]/i.test(host) && !/[^a-z0-9.-]/i.test(host)) {
        const ip = host.toLowerCase() === "localhost" ? "127.0.0.1" : "0.0.0.0";
        return `Invalid listen address "${text}": use an IP address, not a name, e.g. ${ip}:${port}`;
      }
      return fail;
    }
    // The system's address parser reads a leading zero as octal: 127.0.0.010 would bind 127.0.0.8.
    if (parts.some((p) => /^0\d/.test(p))) {
      const plain = parts.map(Number).join(".");
      return `Invalid listen address "${text}": a leading zero makes the system read the number ` +
        `as octal; write ${plain}:${text.slice(colon + 1)}`;
    }
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    return `Invalid port in listen address "${text}": use a number from 0 to 65535`;
  }
  return { hostname: host, port: Number(portText) };
}

/** `host:port` as written in a config: IPv6 in brackets (`[::1]:443`), so the port stays clear. */
export function formatListenAddr(a: ListenAddr): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

/** True for 127.0.0.0/8 and ::1 (with or without IPv4 mapping, either spelling). */
export function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "::1" || h === "localhost" || /^(::ffff:)?127\.|^::ffff:7f[0-9a-f]{2}:/.test(h);
}

/**
 * True when two listen addresses take connections for the same address and port: the same
 * address, `[::]` (dual-stack: every address), or `0.0.0.0` with an IPv4 one. Port 0 never clashes.
 */
export function listenersOverlap(a: ListenAddr, b: ListenAddr): boolean {
  if (a.port !== b.port || a.port === 0) return false;
  const v4 = (h: string) => !h.includes(":") || h.startsWith("::ffff:");
  const covers = (x: string, y: string) => x === "::" || (x === "0.0.0.0" && v4(y));
  return a.hostname === b.hostname || covers(a.hostname, b.hostname) ||
    covers(b.hostname, a.hostname);
}

// The admin status page: one self-contained HTML document (inline CSS and script under a CSP
// nonce, no external assets). The current status is embedded as JSON and rendered by the script
// at once, then refreshed from `GET /status` every 5 seconds. All values go in via textContent.

import type { StatusJson } from "./admin_status.ts";

/** Embeds JSON in a `<script type="application/json">` safely (no `</script>` break-out). */
export function embedJson(value: unknown): string {
  return JSON.stringify(value)
    .replaceAll("<", "\\u003c")
    .replaceAll(">", "\\u003e")
    .replaceAll("&", "\\u0026")
    .replaceAll("\u2028", "\\u2028")
    .replaceAll("\u2029", "\\u2029");
}

const CSS = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2430;background:#f7f8fa}
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1.05rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{background:#eef1f4;font-weight:600}code{font-size:.92em}
.up{color:#0a7a33;font-weight:600}.down{color:#b3261e;font-weight:600}.unk{color:#6b7280}
.meta{color:#4b5563}.bad{color:#b3261e}.empty{color:#6b7280;font-style:italic}
`;

const SCRIPT = `
const $ = (tag, text, cls) => { const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text); if (cls) e.className = cls; return e; };
const ago = (ms) => { if (!ms) return ""; const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? s + "s ago" : s < 7200 ? Math.round(s / 60) + "m ago" : Math.round(s / 3600) + "h ago"; };
function table(id, head, rows) {
  const host = document.getElementById(id); host.replaceChildren();
  if (rows.length === 0) { host.append($("p", "none", "empty")); return; }
  const t = $("table"); const tr = $("tr"); for (const h of head) tr.append($("th", h)); t.append(tr);
  for (const r of rows) { const row = $("tr"); row.className = "row";
    for (const c of r) row.append(c instanceof Node ? (() => { const td = $("td"); td.append(c); return td; })() : $("td", c));
    t.append(row); }
  host.append(t);
}
function render(s) {
  document.getElementById("meta").textContent = "Prox " + s.prox.version + " · Deno " + s.prox.deno +
    " · pid " + s.prox.pid + " · up " + s.prox.uptimeSeconds + "s · config v" + s.config.version +
    (s.draining ? " · draining" : s.ready ? " · ready" : " · not ready");
  const lr = s.config.lastReload;
  const rel = document.getElementById("reload"); rel.replaceChildren();
  if (lr) { rel.append($("span", "Last reload: " + (lr.ok ? "ok" : "rejected") + " " + ago(lr.at), lr.ok ? "up" : "down"));
    for (const e of lr.errors) rel.append($("div", e, "bad"));
    for (const w of lr.warnings ?? []) rel.append($("div", "warning: " + w, "meta")); } else rel.append($("span", "No reload since start", "meta"));
  table("routes", ["Route", "Type", "Hosts", "Targets", "Rate limit", "Access"], s.routes.map((r) =>
    [$("code", r.id), r.type, r.hosts.join(", "), r.targets.join(", "), r.rateLimit ?? "", r.access ?? ""]));
  const pool = (p) => !p ? "" : p.busy + " busy, " + p.idle + " idle" + (p.waiting ? ", " + p.waiting + " waiting" : "") +
    (p.h2Streams !== null ? ", " + p.h2Streams + " h2 streams" : "") + "; " + p.opened + " opened, " + p.reused + " reused";
  table("upstreams", ["Upstream", "Health", "Since", "Reason", "In flight", "Latency", "Connections", "Routes"], s.upstreams.map((u) =>
    [$("code", u.url), $("span", u.healthy === null ? "unknown" : u.healthy ? "up" : "down",
      u.healthy === null ? "unk" : u.healthy ? "up" : "down"), ago(u.since),
      (u.drained ? "drained (admin API) " : "") + (u.reason ?? "") + (u.ejectedForMs > 0 ? " (ejected " + Math.ceil(u.ejectedForMs / 1000) + "s more)" : "") +
        (u.slowStart ?? []).map((r) => " (slow start on " + r.route + ": " + r.weightPercent + " % of its weight)").join(""),
      u.inFlight ?? "", u.latencyMs === null ? "" : u.latencyMs + " ms", pool(u.pool), u.routes.join(", ")]));
  table("limiters", ["Route", "Keys"], Object.entries(s.limiterKeys).map(([k, v]) => [k, v]));
  table("caches", ["Route", "Responses", "Bytes"], Object.entries(s.caches ?? {}).map(([k, v]) => [k, v.entries, v.bytes]));
  table("certs", ["Certificate", "Expires", "Days left"], s.certificates.map((c) =>
    [c.name, new Date(c.notAfter).toISOString(), $("span", c.daysLeft, c.daysLeft < 14 ? "down" : "up")]));
  const ac = document.getElementById("acme"); ac.replaceChildren(); const a = s.acme;
  if (a) { ac.append($("span", "ACME " + a.state + (a.failures ? ", " + a.failures + " failed order(s)" : "") +
      (a.retryInMs ? ", next order in " + Math.ceil(a.retryInMs / 1000) + "s" : ""), a.state === "failing" ? "down" : "up"));
    if (a.lastError) ac.append($("div", a.lastError, "bad")); }
  const od = s.onDemand;
  if (od) ac.append($("div", "On-demand certificates: " + od.heldTotal + " held, " + od.backingOffTotal +
    " backing off, " + od.inFlight + " in flight, " + od.orders + " ordered since start"));
  table("listeners", ["Listener", "Address", "TLS"], s.listeners.map((l) => [l.name, l.addr, l.tls ? "yes" : "no"]));
  document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
}
render(JSON.parse(document.getElementById("data").textContent));
let refreshes = 0;
setInterval(async () => {
  // Built from origin + path: a page opened as http://user:token@host/ must not reuse the userinfo.
  const url = location.origin + location.pathname.replace(/[^/]*$/, "") + "status";
  try { const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (r.ok) { render(await r.json()); document.body.dataset.refreshes = ++refreshes; } else document.getElementById("updated").textContent = "Refresh failed: HTTP " + r.status;
  } catch (e) { document.getElementById("updated").textContent = "Refresh failed: " + e; }
}, 5000);
`;

/** The status page for `status`, with inline style and script carrying `nonce`. */
export function statusPage(status: StatusJson, opts: { nonce: string }): string {
  const n = opts.nonce;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Prox status</title>
<style nonce="${n}">${CSS}</style>
</head><body>
<h1>Prox status</h1>
<div id="meta" class="meta"></div>
<div id="reload"></div>
<h2>Routes</h2><div id="routes"></div>
<h2>Upstreams</h2><div id="upstreams"></div>
<h2>Rate limiter keys</h2><div id="limiters"></div>
<h2>Response caches</h2><div id="caches"></div>
<h2>Certificates</h2><div id="certs"></div><div id="acme"></div>
<h2>Listeners</h2><div id="listeners"></div>
<p id="updated" class="meta"></p>
<script type="application/json" id="data">${embedJson(status)}</script>
<script nonce="${n}">${SCRIPT}</script>
</body></html>
`;
}

// Differences between the two HTTP/1.1 engines that are deliberate (README "Prox's own HTTP/1.1
// engine"): each is a rewrite of a pair of normalized outcomes (_h1_diff.ts, Deno.serve's and the
// engine's) that makes them equal where the difference is this one and no other. The
// differential test accepts a pair only when the rewrites of all of them make it equal.
import type { Normalized } from "./_h1_diff.ts";

type Fields = [string, string][];

/** A known, deliberate difference. */
export interface Known {
  name: string;
  /** `input`: the bytes the client sent, for a difference that only they tell. */
  rewrite(deno: Normalized, prox: Normalized, input: string): [Normalized, Normalized];
}

/** A rewrite of either side alike. */
const each = (f: (o: Normalized) => Normalized) => (d: Normalized, p: Normalized) =>
  [f(d), f(p)] as [Normalized, Normalized];

const hasClose = (a: Normalized["answers"][number]) =>
  a.fields.some(([k, v]) => k === "connection" && v === "close");

/**
 * Same-name fields joined with ", " in order (Set-Cookie excepted), as Fetch's Headers do, as
 * lists without empty elements.
 */
function joined(fields: Fields): Fields {
  const out: Fields = [];
  for (const [k, v] of fields) {
    const prior = k === "set-cookie" ? undefined : out.find(([n]) => n === k);
    if (prior) prior[1] += ", " + v;
    else out.push([k, v]);
  }
  // Empty list elements count for nothing (RFC 9110 §5.6.1): ", a" is "a".
  return out.map(([k, v]) => [k, v.split(",").map((e) => e.trim()).filter((e) => e).join(", ")]);
}

export const KNOWN: Known[] = [
  {
    // First, so that the rewrites below see both sides alike here.
    // RFC 9110 §7.6.3: Via names the protocol received. The engine knows an HTTP/1.0 request
    // (Via `1.0 prox`, access protocol `http/1.0`); Deno.serve does not say, so it counts as 1.1.
    name: "an HTTP/1.0 request is recorded and forwarded as HTTP/1.0",
    rewrite: (d, p) => {
      const upstream = p.upstream.map((s) => ({
        ...s,
        fields: s.fields.map(([k, v]): [string, string] => [
          k,
          k === "via" ? v.replace(/(^|, )1\.0 prox$/, (_, before) => before + "1.1 prox") : v,
        ]),
      }));
      const access = p.access.map((r) =>
        r.protocol === "http/1.0" ? { ...r, protocol: "http/1.1" } : r
      ).sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1);
      return [d, { ...p, upstream, access }];
    },
  },
  {
    // RFC 9112 §4: the reason phrase is advisory. The engine passes an upstream's on (as nginx
    // does; one that is not a valid reason-phrase is replaced) and words its own answers as RFC
    // 9110 does (413 "Content Too Large"); Deno.serve writes its own for every status.
    name: "the reason phrase",
    rewrite: each((o) => ({ ...o, answers: o.answers.map((a) => ({ ...a, reason: "" })) })),
  },
  {
    // RFC 9110 §5.3: a recipient may join them. The engine sends the client's fields as they
    // came; Deno.serve's Headers join them (a HEAD's answer, which the engine takes from a Fetch
    // Response, comes joined from the engine too).
    name: "fields of one name go on as separate lines",
    rewrite: each((o) => ({
      ...o,
      answers: o.answers.map((a) => ({ ...a, fields: joined(a.fields) })),
      upstream: o.upstream.map((s) => ({ ...s, fields: joined(s.fields) })),
    })),
  },
  {
    // RFC 9110 §8.6: a 304 may carry the length the 200 would have; Deno.serve drops it.
    name: "a 304 keeps the upstream's Content-Length",
    rewrite: each((o) => ({
      ...o,
      answers: o.answers.map((a) =>
        a.status === 304 ? { ...a, fields: a.fields.filter(([k]) => k !== "content-length") } : a
      ),
    })),
  },
  {
    // Deno.serve sends a 205 without Content-Length and keeps the connection (a client reading
    // to the end waits); the engine sends `content-length: 0`, and the connection serves on.
    name: "a 205 has Content-Length 0 and the connection stays usable",
    rewrite: each((o) => {
      const i = o.answers.findIndex((a) => a.status === 205);
      if (i < 0) return o;
      const answers = o.answers.slice(0, i + 1).map((a) =>
        a.status === 205
          ? {
            ...a,
            framing: "none",
            body: "",
            fields: a.fields.filter(([k]) => k !== "content-length"),
          }
          : a
      );
      return {
        end: "205",
        answers,
        upstream: o.upstream.filter((s) => !s.line.includes("/__probe")),
        access: o.access.filter((r) => r.path !== "/__probe"),
      };
    }),
  },
  {
    // An answer that comes before the request's body was read (a 413, a redirect, a refusal):
    // the engine reads and drops the rest of the body and the connection serves on; Deno.serve
    // says `connection: close` and closes it. The rest of the exchange is then the engine's alone.
    name: "an answer before the body keeps the connection",
    rewrite: (d, p) => {
      const i = d.answers.findIndex(hasClose);
      const a = d.answers[i], b = p.answers[i];
      if (i < 0 || d.end !== "closed" || !b || b.status !== a.status || hasClose(b)) return [d, p];
      const cut = (o: Normalized): Normalized => ({
        end: "closed",
        answers: o.answers.slice(0, i + 1).map((x) => ({
          ...x,
          fields: x.fields.filter(([k]) => k !== "connection"),
        })),
        upstream: o.upstream.slice(0, d.upstream.length),
        // The requests Deno.serve never read are the engine's alone.
        access: o.access.filter((r) => d.access.some((x) => x.path === r.path)),
      });
      return [cut(d), cut(p)];
    },
  },
  {
    // A chunked body that breaks the grammar: Deno.serve closes the connection without an answer
    // or an access record; the engine answers 400 (as nginx does), logs it, and closes.
    name: "a malformed chunked body gets 400",
    rewrite: (d, p) => {
      const n = d.answers.length;
      const last = p.answers[n];
      const logged = p.access.filter((r) => r.status === 400 && r.error === "http_request_error");
      if (
        d.end !== "closed" || p.end !== "closed" || p.answers.length !== n + 1 ||
        last.status !== 400 || !hasClose(last) || logged.length !== 1 ||
        p.access.length !== d.access.length + 1
      ) return [d, p];
      return [d, {
        ...p,
        answers: p.answers.slice(0, n),
        access: p.access.filter((r) => r !== logged[0]),
      }];
    },
  },
  {
    // Deno.serve answers an HTTP/1.0 client that asked to keep the connection, on a route with
    // `compress`, with `connection: keep-alive`, and then closes the connection without reading
    // on (README, what Deno.serve decides); the engine keeps it, as it said. What came after on
    // that connection is the engine's alone.
    name: "an HTTP/1.0 keep-alive connection stays open after a compress route's answer",
    rewrite: (d, p) => {
      const n = d.answers.length;
      const last = d.answers[n - 1];
      if (
        d.end !== "closed" || p.end !== "open" || !last || last.version !== "1.0" ||
        !last.fields.some(([k, v]) => k === "connection" && v === "keep-alive") ||
        !d.access.some((r) => r.route === "/gz") || p.answers.length < n
      ) return [d, p];
      const same = (r: Record<string, unknown>) =>
        d.access.some((x) => JSON.stringify(x) === JSON.stringify(r));
      return [d, {
        end: "closed",
        answers: p.answers.slice(0, n),
        upstream: p.upstream.slice(0, d.upstream.length),
        access: p.access.filter(same),
      }];
    },
  },
  {
    // A request without Host: Deno.serve alone takes it for HTTP/2 (it cannot tell, and HTTP/1.1
    // requires Host), so it goes upstream with `Via: 2 prox` and is logged as h2c; relayed by the
    // engine, which saw the connection begin in HTTP/1.x, it is HTTP/1.1.
    name: "a request without Host is HTTP/1.x",
    rewrite: (d, p) => {
      const via = (f: Fields) => f.find(([k]) => k === "via")?.[1] ?? "";
      // Prox's own entry is the last; a client's Via before it stays as it came.
      const upstream = d.upstream.map((s, i) => {
        const dv = via(s.fields), pv = p.upstream[i] ? via(p.upstream[i].fields) : "";
        return dv.endsWith("2 prox") && pv === dv.slice(0, -6) + "1.1 prox"
          ? { ...s, fields: s.fields.map(([k, v]): [string, string] => [k, k === "via" ? pv : v]) }
          : s;
      });
      const access = d.access.map((r) =>
        r.protocol === "h2c" &&
          p.access.some((x) => x.path === r.path && x.protocol === "http/1.1")
          ? { ...r, protocol: "http/1.1" }
          : r
      ).sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1);
      return [{ ...d, upstream, access }, p];
    },
  },
  {
    // RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400. The engine answers so and closes
    // the connection; Deno.serve makes up `localhost:<port>` and serves it. What came after on
    // that connection is Deno.serve's alone.
    name: "an HTTP/1.1 request without Host gets 400",
    rewrite: (d, p) => {
      const i = p.answers.length - 1;
      const last = p.answers[i];
      const madeUp = (r: Record<string, unknown>) => /^localhost(:|$)/.test(String(r.host));
      if (
        p.end !== "closed" || !last || last.status !== 400 || last.body !== "" || !hasClose(last) ||
        d.answers.length <= i || !d.access.some(madeUp) || p.access.some(madeUp)
      ) return [d, p];
      const same = (r: Record<string, unknown>) =>
        p.access.some((x) => JSON.stringify(x) === JSON.stringify(r));
      return [{
        end: "closed",
        answers: d.answers.slice(0, i),
        upstream: d.upstream.slice(0, p.upstream.length),
        access: d.access.filter(same),
      }, { ...p, answers: p.answers.slice(0, i) }];
    },
  },
  {
    // RFC 9112 §3.2 again, for a request without Host that the engine relays to Deno.serve (an
    // odd head, or a later request on a relayed connection): the fallback listener knows it is
    // HTTP/1.x and refuses it (400, logged as http_request_error); on Deno.serve's own listener it
    // counts as HTTP/2 and is served with the made-up `localhost:<port>` authority.
    name: "a relayed HTTP/1.1 request without Host gets 400",
    rewrite: (d, p) => {
      const madeUp = (r: Record<string, unknown>) => /^localhost(:|$)/.test(String(r.host));
      const mine = p.access.filter((r) =>
        madeUp(r) && r.status === 400 && r.error === "http_request_error" && r.route === null
      );
      const theirs = d.access.filter(madeUp);
      if (mine.length === 0 || mine.length !== theirs.length) return [d, p];
      const refusal = (a: Normalized["answers"][number]) =>
        a.status === 400 && a.body === "Bad request\nrequest id: ID\n" &&
        a.fields.some(([k, v]) => k === "proxy-status" && v === "prox; error=http_request_error");
      let left = mine.length;
      const answers = p.answers.map((a, i) => {
        if (left === 0 || !refusal(a) || !d.answers[i]) return a;
        left--;
        return d.answers[i];
      });
      // What Deno.serve sent on for them (X-Forwarded-Host the made-up authority) is its own.
      const forwarded = (u: Normalized["upstream"][number]) =>
        u.fields.some(([k, v]) => k === "x-forwarded-host" && /^localhost(:|$)/.test(v));
      return [{
        ...d,
        upstream: d.upstream.filter((u) => !forwarded(u)),
        access: d.access.filter((r) => !theirs.includes(r)),
      }, {
        ...p,
        answers,
        upstream: p.upstream.filter((u) => !forwarded(u)),
        access: p.access.filter((r) => !mine.includes(r)),
      }];
    },
  },
  {
    // RFC 9110 §2.5: a message of a later minor version is processed as the highest one the
    // recipient implements. The engine serves HTTP/1.2 as HTTP/1.1; Deno.serve answers a bare 400
    // and closes. What came after on that connection is the engine's alone.
    name: "a later HTTP/1 minor version is served as HTTP/1.1",
    rewrite: (d, p, input) => {
      const i = d.answers.length - 1;
      const last = d.answers[i];
      if (
        !/(^|\n)[^\r\n]* HTTP\/1\.[2-9]\r\n/.test(input) || d.end !== "closed" || !last ||
        last.status !== 400 || last.body !== "" || !hasClose(last) || p.answers.length <= i
      ) return [d, p];
      const same = (r: Record<string, unknown>) =>
        d.access.some((x) => JSON.stringify(x) === JSON.stringify(r));
      return [{ ...d, answers: d.answers.slice(0, i) }, {
        end: "closed",
        answers: p.answers.slice(0, i),
        upstream: p.upstream.slice(0, d.upstream.length),
        access: p.access.filter(same),
      }];
    },
  },
  {
    // RFC 9110 §15.6.6: a request line of a major version other than 1 (HTTP/2.0 outside the
    // preface) gets 505 from the engine, a bare 400 from Deno.serve; both close the connection.
    name: "another major HTTP version gets 505",
    rewrite: (d, p, input) => {
      const i = p.answers.length - 1;
      const a = p.answers[i], b = d.answers[i];
      if (
        !/(^|\n)[^\r\n]* HTTP\/[02-9]\.[0-9]\r?\n/.test(input) || !a || !b || a.status !== 505 ||
        b.status !== 400 || b.body !== "" || d.answers.length !== i + 1
      ) return [d, p];
      return [d, {
        ...p,
        answers: [...p.answers.slice(0, i), { ...a, status: 400, reason: b.reason }],
      }];
    },
  },
  {
    // RFC 6585 §5, RFC 9112 §3: a head of more than 128 field lines or 64 KiB gets 431 from the
    // engine (414 when its request line alone is that long), a bare 400 from Deno.serve; both
    // close the connection.
    name: "a head over the limits gets 431 or 414",
    rewrite: (d, p, input) => {
      const i = p.answers.length - 1;
      const a = p.answers[i], b = d.answers[i];
      const heads = input.split(/\r?\n\r?\n/);
      if (
        !heads.some((h) => h.length >= 64 * 1024 || h.split("\n").length > 129) || !a || !b ||
        (a.status !== 431 && a.status !== 414) || b.status !== 400 || b.body !== "" ||
        d.answers.length !== i + 1
      ) return [d, p];
      return [d, {
        ...p,
        answers: [...p.answers.slice(0, i), { ...a, status: 400, reason: b.reason }],
      }];
    },
  },
  {
    // RFC 9112 §3.2.4: only OPTIONS takes the target `*` (`options *` neither: methods are
    // case-sensitive, RFC 9110 §9.1). The engine answers another method's 400 itself (a body
    // saying why, a request id, an access line); Deno.serve a bare 400. Both close the connection.
    name: "`*` with another method gets the engine's own 400",
    rewrite: (d, p, input) => {
      const i = p.answers.length - 1;
      const a = p.answers[i], b = d.answers[i];
      const mine = (r: Record<string, unknown>) => r.path === "*" && r.status === 400;
      if (
        !/(^|\n)(?!OPTIONS )[^ \r\n]+ \* HTTP\/1\.[01]\r?\n/.test(input) || !a || !b ||
        a.status !== 400 || !hasClose(a) || !p.access.some(mine) || b.status !== 400 ||
        b.body !== "" || d.answers.length !== i + 1 || p.end !== "closed"
      ) return [d, p];
      return [d, {
        ...p,
        answers: [...p.answers.slice(0, i), b],
        access: p.access.filter((r) => !mine(r)),
      }];
    },
  },
  {
    // RFC 9112 §3.2.4: `OPTIONS *` asks about the server as a whole. The engine answers it (200,
    // Allow, no body; logged with path `*` and no route); Deno.serve hands it over as `/*`, which
    // went upstream as a question about another resource.
    name: "OPTIONS * is answered by Prox",
    rewrite: (d, p, input) => {
      if (!/(^|\n)OPTIONS \* HTTP\/1\.[01]\r?\n/.test(input)) return [d, p];
      const i = p.answers.findIndex((a) =>
        a.status === 200 && a.body === "" &&
        a.fields.some(([k, v]) => k === "allow" && v.endsWith("OPTIONS"))
      );
      const line = d.upstream.findIndex((u) => /^OPTIONS \/\* HTTP\/1\.1$/.test(u.line));
      const mine = p.access.find((r) => r.method === "OPTIONS" && r.path === "*");
      if (i < 0 || line < 0 || !mine || d.answers[i]?.status !== 200) return [d, p];
      return [{
        ...d,
        answers: d.answers.map((a, j) => j === i ? p.answers[i] : a),
        upstream: d.upstream.filter((_, j) => j !== line),
        access: d.access.map((r) => r.method === "OPTIONS" && r.path === "/*" ? mine : r),
      }, p];
    },
  },
];

/** Applies the known differences' rewrites (all, or all but `skip`) to Deno.serve's and the
 * engine's outcomes; `input` is what the client sent. */
export function knownRewrites(
  deno: Normalized,
  prox: Normalized,
  skip?: Known,
  input = "",
): [Normalized, Normalized] {
  return KNOWN.filter((k) => k !== skip).reduce(
    ([d, p], k) => k.rewrite(d, p, input),
    [deno, prox] as [Normalized, Normalized],
  );
}

// The ceiling for any proxy on Deno.serve: Deno.serve answering 100 bytes by itself, with no
// upstream, on a plain port and a TLS port (h2 by ALPN).
// Usage: deno run -A bench/serve_alone.ts PORT TLS_PORT CERT KEY
const [port, tlsPort] = Deno.args.map(Number);
const [cert, key] = [Deno.readTextFileSync(Deno.args[2]), Deno.readTextFileSync(Deno.args[3])];
const body = new TextEncoder().encode("b".repeat(100));
const answer = () => new Response(body, { headers: { "content-type": "text/plain" } });
Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, answer);
Deno.serve({ hostname: "127.0.0.1", port: tlsPort, cert, key, onListen() {} }, answer);

import assert from "node:assert/strict";
import { parseConfig } from "./parse.ts";
import { formatIssue } from "./load.ts";

const HEAD = 'listen_addr: "127.0.0.1:3000"\nroutes:\n';

/** The issues as `prox validate` prints them, without excerpts. */
function problems(text: string): string[] {
  return parseConfig(text, "c.yaml").issues.map((i) => formatIssue({ ...i, excerpt: undefined }));
}

Deno.test("parseConfig says what is wrong with a target's host or port", () => {
  const at = (target: string) =>
    problems(`${HEAD}  /:\n    type: proxy\n    target: "${target}"\n`).join("\n");
  assert.equal(
    at("http://::1:8080"),
    'c.yaml:5:5: error: routes./.target: Invalid URL "http://::1:8080": put the IPv6 address in ' +
      "brackets, e.g. http://[::1]:8080",
  );
  assert.match(at("http://[fe80::1%25eth0]:80"), /an IPv6 zone id \(%eth0\) cannot be written/);
  assert.match(at("http://[::1:80"), /the IPv6 address has no closing bracket/);
  assert.match(at("https://backend:99999"), /the port "99999" is not a number from 1 to 65535/);
  assert.match(at("htp//backend"), /use an absolute URL starting with http:\/\//);
  const ws = problems(`${HEAD}  /:\n    type: websocket\n    target: "ws://::1:9000"\n`);
  assert.match(ws.join(), /Invalid WebSocket URL "ws:\/\/::1:9000": put the IPv6 address in/);
});

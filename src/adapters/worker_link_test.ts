import assert from "node:assert/strict";
import { commandLine, parseCommand, parseMessage, purgeInput } from "./worker_link.ts";

Deno.test("purgeInput takes exactly one url, prefix or route string", () => {
  assert.deepEqual(purgeInput({ url: "http://h/x" }), { url: "http://h/x" });
  assert.deepEqual(purgeInput({ prefix: "http://h/" }), { prefix: "http://h/" });
  assert.deepEqual(purgeInput({ route: "/api" }), { route: "/api" });
  for (const bad of [null, "x", {}, { url: 1 }, { url: "a", route: "b" }, { path: "/x" }]) {
    assert.equal(purgeInput(bad), null, JSON.stringify(bad));
  }
  assert.equal(commandLine({ type: "purge", input: { route: "/a" } }), 'purge {"route":"/a"}\n');
});

Deno.test("a worker's view of a target goes to the supervisor and on to worker 0 as bounded lines", () => {
  const line = JSON.stringify({
    type: "health",
    worker: 1,
    pid: 7,
    backend: "http://10.0.0.5:8080",
    healthy: false,
    reason: "x".repeat(1000),
  });
  const msg = parseMessage(line);
  assert.ok(msg?.type === "health");
  assert.equal(msg.backend, "http://10.0.0.5:8080");
  assert.equal(msg.reason!.length, 300); // the reason is cut, the line stays short
  assert.equal(parseMessage(JSON.stringify({ ...JSON.parse(line), healthy: "no" })), null);
  assert.equal(
    parseMessage(JSON.stringify({ ...JSON.parse(line), backend: "h".repeat(5000) })),
    null,
  );
  const cmd = {
    type: "health",
    worker: 1,
    backend: "http://10.0.0.5:8080",
    healthy: false,
    reason: "ejected",
  } as const;
  assert.deepEqual(parseCommand(commandLine(cmd).trimEnd()), cmd);
  // A worker gone: no target, nothing held down by it any more.
  const gone = { type: "health", worker: 2, backend: null, healthy: true, reason: null } as const;
  assert.deepEqual(parseCommand(commandLine(gone).trimEnd()), gone);
  assert.equal(
    parseCommand('health {"worker":0,"backend":null,"healthy":true,"reason":null}'),
    null,
  );
  assert.equal(parseCommand("health {"), null);
  const refused = { type: "reload-failed", worker: 1, trigger: "SIGHUP", error: "boom" } as const;
  assert.deepEqual(parseCommand(commandLine(refused).trimEnd()), refused);
  assert.equal(parseCommand('reload-failed {"worker":0,"trigger":"x","error":"y"}'), null);
  const inRound = { ...refused, round: 4 };
  assert.deepEqual(parseCommand(commandLine(inRound).trimEnd()), inRound);
  const apply = { type: "reload", round: 4, trigger: "admin" } as const;
  assert.deepEqual(parseCommand(commandLine(apply).trimEnd()), apply);
  const answered = { type: "reloaded", round: 4 } as const;
  assert.deepEqual(parseCommand(commandLine(answered).trimEnd()), answered);
  assert.equal(parseCommand('reloaded {"round":"4"}'), null);
});

Deno.test("worker 0's HTTP/3 state goes to the supervisor and on to the others as bounded lines", () => {
  const up = { type: "h3", worker: 0, pid: 7, altSvc: 'h3=":443"; ma=86400' } as const;
  assert.deepEqual(parseMessage(JSON.stringify(up)), up);
  const down = { ...up, altSvc: null };
  assert.deepEqual(parseMessage(JSON.stringify(down)), down);
  assert.equal(parseMessage(JSON.stringify({ ...up, altSvc: 443 })), null);
  assert.equal(parseMessage(JSON.stringify({ ...up, altSvc: "x".repeat(101) })), null);
  for (const altSvc of ['h3=":443"; ma=86400', null]) {
    const cmd = { type: "h3", altSvc } as const;
    assert.deepEqual(parseCommand(commandLine(cmd).trimEnd()), cmd);
  }
  assert.equal(parseCommand('h3 {"altSvc":1}'), null);
  assert.equal(parseCommand("h3 {"), null);
});

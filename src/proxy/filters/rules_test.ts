import assert from "node:assert/strict";
import { applyHeaderRules } from "./rules.ts";
import { compileHeaderRules } from "../../domain/rules.ts";
import type { Logger } from "../../ports.ts";

Deno.test("applyHeaderRules skips a value holding a control character after expansion", () => {
  const rules = compileHeaderRules({ set: { "X-T": "a{method}b", "X-U": "fine" } }, {
    side: "response",
    env: () => undefined,
    problems: [],
  });
  const warned: string[] = [];
  const logger = { warn: (msg: string) => warned.push(msg) } as unknown as Logger;
  const headers = new Headers();
  applyHeaderRules(rules, headers, { values: () => "\u0001", logger, requestId: "r" });
  assert.equal(headers.get("x-t"), null);
  assert.equal(headers.get("x-u"), "fine");
  assert.equal(warned.length, 1);
});

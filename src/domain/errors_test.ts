import assert from "node:assert/strict";
import { localConnectFailure } from "./errors.ts";

Deno.test("localConnectFailure: this host running short is not the target's fault", () => {
  for (
    const m of [
      "Too many open files (os error 24)",
      "Too many open files in system (os error 23)",
      "Cannot assign requested address (os error 99)",
      "No buffer space available (os error 105)",
    ]
  ) assert.ok(localConnectFailure(m), m);
  for (
    const m of [
      "Connection refused (os error 111)",
      "No route to host (os error 113)",
      "Connection reset by peer (os error 104)",
      "failed to lookup address information: Name or service not known",
      "invalid peer certificate: UnknownIssuer",
    ]
  ) assert.ok(!localConnectFailure(m), m);
});

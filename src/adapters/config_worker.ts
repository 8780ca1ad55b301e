// The Web Worker that parses and validates a large config for a reload (config_offthread.ts):
// one request, one reply, then the main thread terminates it. `make compile` names this file
// with --include (a worker's module is not found by following imports).

import { loadReply } from "./config_offthread.ts";
import type { LoadRequest } from "./config_offthread.ts";

const scope = self as unknown as {
  onmessage: ((e: MessageEvent<LoadRequest>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (e) => {
  const reply = loadReply(e.data);
  try {
    scope.postMessage(reply);
  } catch (err) {
    // A value structured cloning cannot copy: the main thread loads the text itself.
    scope.postMessage({ ok: false, error: String(err) });
  }
};

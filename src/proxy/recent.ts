// The newest object of each hot kind on the request path, kept reachable until the next request
// replaces it. Nothing reads these fields: holding them is the point.
//
// Optimized code refers weakly to the hidden classes (maps) of the objects it has seen. When
// traffic stops, every per-request object dies, and the next full GC (Prox's memory-reducing one
// after `memory.reduce_after_idle`, V8's own after some seconds without the shipped flags, or any
// full GC later) clears those maps, so V8 throws away the optimized code that depended on them
// (`--trace-deopt`: "embedded weak objects cleared"). The first second of the next burst then ran
// at up to twice the CPU per request while everything was optimized again. One live instance of
// each kind keeps its map, and the code, alive: at the GC after a 2.5 s pause, 23–55 functions were
// discarded without this, 4 with it, and the first second after the pause cost 63–69 µs per request
// instead of 84–123 (`bench/after_idle.ts`; README, "Benchmark"). The cost is one request's
// objects, and an old config snapshot until the next request after a reload.
//
// Objects built by spreading (`{ ...a, b }`) get maps of their own that no slot here keeps, so
// the request path builds none: with those gone and Deno.serve's handler info held too, no
// function is discarded at that GC (8 before), and the code recompiled in the second after it
// took 20–24 ms of compiler time instead of 92 (`--trace-opt`, `--trace-deopt`).

/** Slots written on every request (see the module comment). */
export const recent: {
  /** The pipeline's request context (holds the Request, its URL, ClientInfo and route). */
  context: unknown;
  /** The response the pipeline returned. */
  response: unknown;
  /** The last request handed to the upstream client (its header list and URL). */
  upstreamRequest: unknown;
  /** The listener's own per-request info object (set by the HTTP listener adapter). */
  serverInfo: unknown;
} = { context: null, response: null, upstreamRequest: null, serverInfo: null };

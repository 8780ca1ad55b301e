// Metrics across `workers: N`: each worker counts in its own prom-client registry and hands it
// (prom-client's JSON form) to whoever connects to its Unix socket. The worker answering a scrape
// (worker 0 on the admin listener; any on `metrics.on_main_listener`) gathers all of them and
// prints one exposition in which every series carries `worker="INDEX"` (sum them in PromQL:
// `sum by (route) (rate(prox_requests_total[1m]))`).

import { AggregatorRegistry } from "./prom_classes.ts";
import type { Registry } from "prom-client";
import type { Logger } from "../ports.ts";

/** The metrics side of one worker. */
export interface WorkerMetrics {
  /** Starts sharing `registry` on this worker's socket. */
  attach(registry: Registry): void;
  /** Every reachable worker's metrics as Prometheus text, labelled by worker. */
  text(): Promise<string>;
  close(): void;
}

type MetricsJson = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>;

/** A worker's metrics socket path inside the supervisor's directory. */
export function metricsSocket(dir: string, index: number): string {
  return `${dir}/metrics-${index}.sock`;
}

const MAX_BYTES = 32 * 1024 * 1024;

/** Creates the metrics sharing for worker `index` of `count`, sockets in `dir`. */
export function createWorkerMetrics(opts: {
  index: number;
  count: number;
  dir: string;
  logger: Logger;
  /** How long to wait for one worker's metrics (default 1 s). */
  timeoutMs?: number;
}): WorkerMetrics {
  let registry: Registry | null = null;
  let listener: Deno.Listener | null = null;
  const timeoutMs = opts.timeoutMs ?? 1000;
  const enc = new TextEncoder();

  // Copies: prom-client's get() hands out its own series objects, and a `worker` label left in
  // them made every later remove() of that series throw.
  const labelled = (json: MetricsJson, worker: number): MetricsJson => {
    for (const m of json) {
      m.values = m.values.map((v) => ({ ...v, labels: { ...v.labels, worker: String(worker) } }));
    }
    return json;
  };

  const serve = async (l: Deno.Listener) => {
    while (listener === l) {
      let conn: Deno.Conn;
      try {
        conn = await l.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource || listener !== l) return;
        // An accept that failed (EMFILE: descriptors short under load) must not end the loop
        // for good: the next scrape would find nobody answering.
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      void (async () => {
        try {
          const body = enc.encode(JSON.stringify(await registry!.getMetricsAsJSON()));
          let off = 0;
          while (off < body.length) off += await conn.write(body.subarray(off));
        } catch { /* the reader went away */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  };

  /** Reads worker `i`'s metrics, or null when it does not answer in time (restarting, stuck). */
  const fetchWorker = async (i: number): Promise<MetricsJson | null> => {
    let conn: Deno.Conn | null = null;
    const timer = setTimeout(() => conn?.close(), timeoutMs);
    try {
      conn = await Deno.connect({ transport: "unix", path: metricsSocket(opts.dir, i) });
      const chunks: Uint8Array[] = [];
      let size = 0;
      for await (const chunk of conn.readable) {
        chunks.push(chunk);
        size += chunk.length;
        if (size > MAX_BYTES) throw new Error("metrics too large");
      }
      conn = null; // the readable closed it
      const bytes = new Uint8Array(size);
      let off = 0;
      for (const c of chunks) {
        bytes.set(c, off);
        off += c.length;
      }
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (err) {
      opts.logger.warn(`Cannot read the metrics of worker ${i}`, { error: String(err) });
      return null;
    } finally {
      clearTimeout(timer);
      try {
        (conn as Deno.Conn | null)?.close();
      } catch { /* closed */ }
    }
  };

  return {
    attach(r) {
      registry = r;
      const path = metricsSocket(opts.dir, opts.index);
      try {
        Deno.removeSync(path); // left by a crashed predecessor with this index
      } catch { /* none */ }
      listener = Deno.listen({ transport: "unix", path });
      void serve(listener).catch(() => {});
    },
    async text() {
      if (!registry) return "";
      const own = registry;
      const all = await Promise.all(
        Array.from(
          { length: opts.count },
          (_, i) =>
            i === opts.index
              ? own.getMetricsAsJSON().then((j) => labelled(j, i))
              : fetchWorker(i).then((j) => j && labelled(j, i)),
        ),
      );
      return await AggregatorRegistry.aggregate(all.filter((j) => j !== null)).metrics();
    },
    close() {
      try {
        listener?.close();
      } catch { /* closed */ }
      listener = null;
    },
  };
}

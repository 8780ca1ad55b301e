// process_* metrics that are true for a Deno process: CPU seconds (node:process cpuUsage),
// resident memory (Deno.memoryUsage), start time (performance.timeOrigin), and on Linux the open
// and maximum file descriptors from /proc. Names follow the Prometheus client conventions.

import { Counter, Gauge } from "./prom_classes.ts";
import type { Registry } from "./prom_classes.ts";
import process from "node:process";

/** Registers the process_* metrics that are true for this process (Linux adds fd counts). */
export function registerProcessMetrics(registry: Registry): void {
  const registers = [registry];
  new Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds",
    registers,
    collect() {
      const u = process.cpuUsage();
      this.reset();
      this.inc((u.user + u.system) / 1e6);
    },
  });
  new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes",
    registers,
    collect() {
      this.set(Deno.memoryUsage().rss);
    },
  });
  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch in seconds",
    registers,
  }).set(Math.round(performance.timeOrigin) / 1000);
  if (Deno.build.os !== "linux") return;
  new Gauge({
    name: "process_open_fds",
    help: "Number of open file descriptors",
    registers,
    collect() {
      let n = 0;
      try {
        for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
      } catch {
        return;
      }
      this.set(n);
    },
  });
  const maxFds = readMaxFds();
  if (maxFds !== null) {
    new Gauge({
      name: "process_max_fds",
      help: "Maximum number of open file descriptors",
      registers,
    }).set(maxFds);
  }
}

function readMaxFds(): number | null {
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\d+)/m.exec(limits);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

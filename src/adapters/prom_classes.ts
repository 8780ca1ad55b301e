// The four prom-client classes Prox uses, imported from their own files. prom-client's index also
// loads its push gateway (node:http, node:https, node:zlib), Summary (tdigest), the default
// metrics (@opentelemetry/api) and cluster support: about 35 ms of every start-up, for nothing
// Prox uses. The types are the package's own (prom-client 15 has no `exports` map to forbid this).

import type * as Prom from "prom-client";
import AggregatorRegistryJs from "prom-client/lib/cluster.js";
import CounterJs from "prom-client/lib/counter.js";
import GaugeJs from "prom-client/lib/gauge.js";
import RegistryJs from "prom-client/lib/registry.js";

/** prom-client's Registry. */
export const Registry = RegistryJs as typeof Prom.Registry;
export type Registry = Prom.Registry;
/** prom-client's Counter. */
export const Counter = CounterJs as typeof Prom.Counter;
/** prom-client's Gauge. */
export const Gauge = GaugeJs as typeof Prom.Gauge;
/** prom-client's AggregatorRegistry (its static `aggregate` merges the workers' metrics). */
export const AggregatorRegistry = AggregatorRegistryJs as typeof Prom.AggregatorRegistry;

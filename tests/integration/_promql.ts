// Reading PromQL out of the monitoring kit: every query of the Grafana dashboard (panels and
// template variables) and of the alert rules, and the metric names each one uses.

import { parse } from "yaml";
import { ROOT } from "../_harness.ts";

/** One query and where it came from. */
export interface KitQuery {
  panel: string;
  expr: string;
  /** The panel target's legendFormat, if any. */
  legend?: string;
}

const KEYWORDS = new Set([
  "and",
  "or",
  "unless",
  "bool",
  "offset",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "inf",
  "nan",
]);

/**
 * The metric names a PromQL expression selects: identifiers that are not functions,
 * aggregations, keywords, label names (inside `{}` or `by (...)`), numbers or Grafana variables.
 */
export function metricNames(expr: string): string[] {
  const lv = /^\s*label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(expr);
  if (lv) return [lv[1]];
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "")
    .replace(/\$\{?\w+\}?/g, "");
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w.$])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()/g)) {
    if (!KEYWORDS.has(m[1].toLowerCase())) names.add(m[1]);
  }
  return [...names];
}

interface Panel {
  title?: string;
  targets?: { expr?: string; legendFormat?: string }[];
  panels?: Panel[];
}

/** Every query of monitoring/grafana/dashboards/prox.json, template variables included. */
export function dashboardQueries(): KitQuery[] {
  const dash = JSON.parse(
    Deno.readTextFileSync(`${ROOT}/monitoring/grafana/dashboards/prox.json`),
  );
  const out: KitQuery[] = [];
  const walk = (panels: Panel[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) {
        if (t.expr) out.push({ panel: p.title ?? "?", expr: t.expr, legend: t.legendFormat });
      }
      if (p.panels) walk(p.panels);
    }
  };
  walk(dash.panels);
  for (const v of dash.templating?.list ?? []) {
    const q = typeof v.query === "string" ? v.query : v.query?.query;
    if (v.type === "query" && q) out.push({ panel: `variable ${v.name}`, expr: q });
  }
  return out;
}

/** Every `expr` of monitoring/alerts.yml. */
export function alertQueries(): KitQuery[] {
  const doc = parse(Deno.readTextFileSync(`${ROOT}/monitoring/alerts.yml`));
  const out: KitQuery[] = [];
  for (const g of doc.groups) {
    for (const r of g.rules) out.push({ panel: `alert ${r.alert ?? r.record}`, expr: r.expr });
  }
  return out;
}

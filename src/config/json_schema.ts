// The config's JSON Schema, generated from the zod schema (input side: what users write).

import { z } from "zod";
import { Config } from "./schema.ts";

/** JSON Schema (draft 2020-12) for config.yaml, for editors with the YAML language server. */
export function jsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(Config, { io: "input", unrepresentable: "any" }) as Record<
    string,
    unknown
  >;
  return { ...schema, title: "Prox configuration", $id: "https://prox.dev/schema/config.json" };
}

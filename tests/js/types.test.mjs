/**
 * Checks src/web/wsproxy.d.ts, the TypeScript declarations served beside wsproxy.js:
 *
 *   node --test tests/js/
 *
 * - `tsc --strict` over tests/types/ (code that uses the library as an ES module and as
 *   the WsProxy global, with @ts-expect-error lines for misuse that must be rejected);
 * - every member of the runtime WsProxy object is declared, and nothing more.
 *
 * tsc comes from tests/types/node_modules (scripts/setup-test-deps.sh runs `npm ci`
 * there). Without it the check is skipped with that reason, except under CI, where a
 * missing compiler is a failure.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WsProxy from "../../src/web/wsproxy.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const tsc = path.join(root, "tests", "types", "node_modules", "typescript", "bin", "tsc");
const missing = !existsSync(tsc) && !process.env.CI;

test("wsproxy.d.ts passes tsc --strict, and misuse is rejected", {
  skip: missing && "tsc not installed: run scripts/setup-test-deps.sh (npm ci in tests/types)",
  timeout: 120_000,
}, () => {
  assert.ok(existsSync(tsc), `tsc not found at ${tsc}: run scripts/setup-test-deps.sh`);
  try {
    execFileSync(process.execPath, [tsc, "-p", path.join(root, "tests", "types", "tsconfig.json")], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    assert.fail(`tsc reported errors:\n${err.stdout}${err.stderr}`);
  }
});

test("the declared WsProxy object has exactly the runtime's members", () => {
  const dts = readFileSync(path.join(root, "src", "web", "wsproxy.d.ts"), "utf8");
  const block = /declare const WsProxy: \{([^}]*)\};/.exec(dts);
  assert.ok(block, "wsproxy.d.ts declares `const WsProxy: { … }`");
  const declared = [...block[1].matchAll(/^\s*(\w+):/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(WsProxy).sort());
  for (const name of declared) {
    assert.match(dts, new RegExp(`export (const|function|class) ${name}\\b`), `${name} is exported`);
  }
});

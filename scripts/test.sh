#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (against the real binary), the JavaScript
# client's unit tests (node --test), and the real-browser tests (Chromium via playwright-core,
# including noVNC against a real VNC server). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-test-deps.sh

echo "== cargo test"
cargo build --bins
cargo test --workspace --all-targets

echo "== node --test tests/js (wsproxy.js codecs)"
node --test tests/js/

echo "== node --test tests/browser (Chromium)"
WSPROXY_BIN="$PWD/target/debug/wsproxy" node --test --test-concurrency=1 tests/browser/

#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo, on a fresh Debian machine:
#   - Debian's chromium (real-browser tests; test tools cannot download browsers here),
#   - a VNC server and X utilities (the noVNC end-to-end test),
#   - playwright-core and noVNC from npm (tests/browser/node_modules),
#   - Node's ws package from npm (tests/peers/node_modules), a real client for tests/endings.rs.
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(chromium libnss3-tools tigervnc-standalone-server x11-xserver-utils x11-utils xfonts-base fonts-wqy-microhei openssl)
missing=()
for pkg in "${apt_packages[@]}"; do
    # (dpkg -s also succeeds for removed packages that left config files behind.)
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    install() {
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
    # One retry after finishing any interrupted dpkg run (seen once on these machines).
    install || { $sudo dpkg --configure -a; install; }
fi

if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/@novnc/novnc ]; then
    echo "setup: npm install in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d tests/peers/node_modules/ws ]; then
    echo "setup: npm ci in tests/peers (Node's ws, a real client for tests/endings.rs)"
    (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
fi

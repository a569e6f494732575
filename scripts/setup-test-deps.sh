#!/usr/bin/env bash
# Installs what the test suite needs beyond cargo, on a fresh Debian machine:
#   - Debian's chromium (real-browser tests; test tools cannot download browsers here),
#   - a VNC server and X utilities (the noVNC end-to-end test),
#   - HAProxy (wsproxy behind a real load balancer, PROXY protocol), apache2-utils
#     (`htpasswd -B` makes the auth tests' files), systemd (systemd-socket-activate,
#     systemd-analyze for the unit files),
#   - playwright-core and noVNC from npm (tests/browser/node_modules),
#   - Python peers pinned in tests/peers/requirements.txt (pip --target tests/peers/python),
#   - iproute2 and util-linux for the tests that run in private network namespaces,
#   - tshark (reads the recordings back) and prometheus (its promtool checks /metrics).
#   - TypeScript from npm (tests/types/node_modules: tsc --strict checks wsproxy.d.ts),
#   - Node's ws package from npm (tests/peers/node_modules), a real client for tests/endings.rs.
# Idempotent: skips what is already there. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(iproute2 util-linux python3 python3-pip chromium libnss3-tools tigervnc-standalone-server x11-xserver-utils x11-utils xfonts-base fonts-wqy-microhei openssl haproxy apache2-utils systemd
    tshark prometheus)
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
    # tshark's package asks whether non-root users may capture; answer "no" beforehand so the
    # install never prompts (the tests only read files).
    echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
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

# Python's `websockets` (a real third-party client for the Base64 tests), pinned, private.
peers_stamp=tests/peers/python/.requirements
if ! cmp -s tests/peers/requirements.txt "$peers_stamp" 2>/dev/null; then
    echo "setup: pip install --target tests/peers/python -r tests/peers/requirements.txt"
    rm -rf tests/peers/python
    python3 -m pip install --quiet --disable-pip-version-check --target tests/peers/python \
        -r tests/peers/requirements.txt
    cp tests/peers/requirements.txt "$peers_stamp"
fi

if [ ! -x tests/types/node_modules/typescript/bin/tsc ]; then
    echo "setup: npm install in tests/types"
    (cd tests/types && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d tests/peers/node_modules/ws ]; then
    echo "setup: npm ci in tests/peers (Node's ws, a real client for tests/endings.rs)"
    (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
fi

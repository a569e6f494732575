#!/usr/bin/env bash
# Benchmark driver for wsproxy (issue 5: "a benchmark that measures wsproxy side by side
# with its peers").
#
# It builds the release binaries, then runs `wsbench`, which starts its own TCP targets
# (echo, sink, source, idle), UDP targets (echo, sink) and wsproxy, plus websocat and
# websockify when they are installed (websocat also in its UDP mode), and measures them
# all with the same client. It prints a table (medians, with
# ratios to plain TCP), one `BENCH ...` line per figure, and a PASS/FAIL list against the
# targets of the issue. The whole output is also saved to target/wsbench-last.txt.
#
# Usage:
#   scripts/bench.sh [--install-peers] [--quick] [wsbench options...]
#
#   --quick           short run, under a minute (small sizes, 1,000 idle tunnels)
#   --install-peers   first install websocat (cargo) and websockify + numpy (pip) into
#                     scripts/.peers/ (git-ignored); never needed, only for the comparison
#   --tls / --no-tls  run / skip the wss:// vs ws:// measurement (default: run, except with
#                     --quick, where building the release test binary would take too long)
#   anything else     passed to wsbench, e.g. `--idle 1000,5000,9000`, `--only bulk,latency`,
#                     `--modes direct,binary`, `--runs 7`, `--only udp` (UDP datagrams
#                     only: round trips and one-way rate with loss, beside plain UDP and
#                     websocat); see `target/release/wsbench --help`
set -euo pipefail

# Work from the crate root, whatever the caller's directory.
cd "$(dirname "$0")/.."
root=$PWD
peers=$root/scripts/.peers
target_dir=${CARGO_TARGET_DIR:-$root/target}

# Split our own flag from the ones meant for wsbench.
install=0
tls=1
args=()
for arg in "$@"; do
    case $arg in
        --install-peers) install=1 ;;
        --tls) tls=2 ;;
        --no-tls) tls=0 ;;
        --quick) args+=("$arg"); ((tls == 1)) && tls=0 ;;
        *) args+=("$arg") ;;
    esac
done

# Optional: install the peers into scripts/.peers (bin/ holds what wsbench looks for).
install_peers() {
    mkdir -p "$peers/bin"
    # websocat 1.x (Rust, tokio), compiled from crates.io; this takes several minutes, so
    # it runs at low priority to leave the machine usable.
    if [[ ! -x $peers/bin/websocat ]]; then
        echo "bench.sh: installing websocat into $peers" >&2
        nice -n 10 cargo install --locked websocat --version '^1.14' --root "$peers"
    fi
    # websockify (Python) with numpy, which it uses to unmask frames quickly. pip puts them
    # in a private folder; a small wrapper script sets PYTHONPATH and execs Python, so the
    # pid wsbench measures is websockify's own.
    if [[ ! -x $peers/bin/websockify ]]; then
        echo "bench.sh: installing websockify and numpy into $peers" >&2
        python3 -m pip install --quiet --target "$peers/python" websockify numpy
        cat >"$peers/bin/websockify" <<EOF
#!/bin/sh
PYTHONPATH="$peers/python\${PYTHONPATH:+:\$PYTHONPATH}" exec python3 -m websockify "\$@"
EOF
        chmod +x "$peers/bin/websockify"
    fi
}
if ((install)); then
    install_peers
fi

# Build wsproxy and wsbench in release mode (wsbench finds wsproxy next to itself).
cargo build --release --workspace --bins

# The idle-tunnel test holds thousands of sockets: two descriptors per tunnel in wsbench,
# two in the proxy. Raise the open-files soft limit to the hard limit; the proxies that
# wsbench starts inherit it.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]]; then hard=1048576; fi
ulimit -n "$hard" 2>/dev/null || echo "bench.sh: could not raise the open-files limit" >&2

# Each wsproxy tunnel's two threads use 8 memory maps (stack, guard page, and Rust's signal
# stack with its guard, per thread); Linux's default vm.max_map_count (65530) holds about
# 8,000 tunnels, and wsproxy caps itself below it. For the 9,000-tunnel goal, raise the limit
# when we may (root), as databases like Elasticsearch also require. Say what we change.
maps=$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)
if ((maps > 0 && maps < 262144)); then
    if [[ $(id -u) == 0 ]] && sysctl -qw vm.max_map_count=262144 2>/dev/null; then
        echo "bench.sh: raised vm.max_map_count from $maps to 262144 for the idle-tunnel test" >&2
    else
        echo "bench.sh: vm.max_map_count is $maps: wsproxy will hold about $(((maps - 1024) / 8)) tunnels" >&2
    fi
fi

# Run. Progress goes to stderr; the table and the BENCH lines to stdout and the log file.
"$target_dir/release/wsbench" --peer-dir "$peers/bin" "${args[@]}" | tee "$target_dir/wsbench-last.txt"

# TLS: the same echo through one tunnel over ws:// and over wss:// (rustls on both ends,
# a test CA made on the fly), alternating five times; reports the wss/ws ratio and the
# proxy's CPU per byte. It lives in the TLS integration tests (tests/tls.rs), which already
# have the certificate and TLS-client machinery.
if ((tls)); then
    echo "bench.sh: wss:// vs ws:// (cargo test --release --test tls -- --ignored throughput)" >&2
    cargo test --release --test tls -- --ignored --nocapture throughput_ws_vs_wss 2>&1 |
        grep -E '^(ws|wss|median):' |
        sed -E '/^median:/{p; s/^median: .*wss\/ws = ([0-9.]+).*/BENCH mode=wss metric=wss_over_ws_echo value=\1/}' |
        tee -a "$target_dir/wsbench-last.txt"
fi

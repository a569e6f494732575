#!/usr/bin/env bash
# Does keeping finished threads (--spare-threads) pay? Tunnels opened+used+closed per second
# (wsbench's rate test, one client thread) and the proxy's CPU time per tunnel, with
# --spare-threads 0 (every thread exits with its job) and 32 (the default), alternating in
# one session so both see the same machine. Prints one line per run and the medians.
#
# Usage: scripts/bench-thread-reuse.sh [ROUNDS [SECONDS]]   (run it under flock /work/bench/lock
#        on a shared machine; needs a release build: cargo build --release --bins)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
secs=${2:-2}
bin=${CARGO_TARGET_DIR:-target}/release
ulimit -n "$(ulimit -Hn)"
tick=$(getconf CLK_TCK)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A rates cpus
for round in $(seq "$rounds"); do
    for spares in 0 32; do
        "$bin/wsproxy" -p 0 --spare-threads "$spares" 2>"$log" &
        pid=$!
        for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.05; done
        addr=$(sed -n 's/.*listening on //p' "$log")
        before=$(cpu_ticks "$pid")
        rate=$("$bin/wsbench" --only rate --modes binary --runs 1 --rate-secs "$secs" \
            --proxy-addr "$addr" --proxy-pid "$pid" --no-peers 2>&1 |
            sed -n 's/.*rate .*binary .*tunnels_per_s=\([0-9.]*\).*/\1/p')
        after=$(cpu_ticks "$pid")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        cpu=$(echo "($after - $before) * 1000000 / $tick / ($rate * $secs)" | bc -l)
        printf 'round %d  --spare-threads %2d  %6.0f tunnels/s  %5.0f µs proxy CPU per tunnel\n' \
            "$round" "$spares" "$rate" "$cpu"
        rates[$spares]+="$rate "
        cpus[$spares]+="$cpu "
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for spares in 0 32; do
    printf 'median   --spare-threads %2d  %6.0f tunnels/s  %5.0f µs proxy CPU per tunnel\n' "$spares" \
        "$(echo "${rates[$spares]}" | median)" "$(echo "${cpus[$spares]}" | median)"
done

#!/usr/bin/env bash
# Same-sitting comparison of two wxpush binaries on the same benchmark: runs
# `bench` with A, then B, PAIRS times, and prints each figure's median and the
# median of the pair-by-pair ratio A/B (pairing keeps the ratio meaningful when
# the machine's speed drifts).
#   scripts/bench-pairs.sh A_BIN B_BIN PAIRS [bench flags...]
# e.g. scripts/bench-pairs.sh target/release/wxpush /tmp/old/wxpush 5 --n 10000 --seq 0
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 pairs=$3
shift 3
bench=target/release/examples/bench
out=$(mktemp -d)
for i in $(seq 1 "$pairs"); do
    "$bench" --wxpush "$a" "$@" >"$out/a$i" 2>"$out/a$i.err"
    "$bench" --wxpush "$b" "$@" >"$out/b$i" 2>"$out/b$i.err"
done
python3 - "$out" "$pairs" <<'PY'
import os, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def read(p):
    d = {}
    for line in open(p):
        k, _, v = line.partition(":")
        try:
            d[k.strip()] = float(v.split()[0])
        except (ValueError, IndexError):
            pass
    return d
runs = [(read(f"{out}/a{i}"), read(f"{out}/b{i}")) for i in range(1, pairs + 1)]
keys = [k for k in ("send_wall_s", "run_s", "send_cpu_s", "cpu_us_per_message", "messages_per_s", "peak_rss_kib") if all(k in a and k in b for a, b in runs)]
print(f"{'figure':24} {'A median':>12} {'B median':>12} {'A/B median':>11} {'A/B min':>8} {'A/B max':>8}")
for k in keys:
    a = [r[0][k] for r in runs]; b = [r[1][k] for r in runs]
    ratios = [x / y for x, y in zip(a, b) if y]
    print(f"{k:24} {statistics.median(a):12.3f} {statistics.median(b):12.3f} {statistics.median(ratios):11.3f} {min(ratios):8.3f} {max(ratios):8.3f}")
PY

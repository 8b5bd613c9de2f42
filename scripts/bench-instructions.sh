#!/usr/bin/env bash
# Instructions per message, counted by valgrind (callgrind): a figure much
# steadier than CPU time (about 1 % run to run on a quiet machine; measure both
# sides in one quiet sitting), for A/B runs too small for CPU-time pairs.
# Runs the benchmark at --n (20000 by default) with `wxpush send` under
# callgrind, once for each --policy given (default: none open), and prints each
# send's instruction count, per message and against the first policy named.
#   scripts/bench-instructions.sh [--n 20000] [none open capped ...]
# Needs valgrind. The build is `--profile profiling` (release code with symbols),
# so `callgrind_annotate` on the files left in the printed folder shows where.
set -euo pipefail
cd "$(dirname "$0")/.."
n=20000
if [ "${1:-}" = "--n" ]; then n=$2; shift 2; fi
policies=("$@")
[ ${#policies[@]} -gt 0 ] || policies=(none open)
command -v valgrind >/dev/null || { echo "bench-instructions: valgrind is not installed" >&2; exit 2; }
cargo build --profile profiling --locked --bin wxpush >&2
cargo build --release --locked --example bench >&2
out=$(mktemp -d)
echo "callgrind files: $out"
first=""
for p in "${policies[@]}"; do
  BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=$out/$p.%p" \
    target/release/examples/bench --wxpush target/profiling/wxpush --n "$n" --seq 0 --policy "$p" >"$out/$p.out" 2>&1
  # The benchmark's two sends, in the order they ran: the first run, then the second.
  files=$(ls "$out/$p".[0-9]* | sort -t. -k2 -n)
  set -- $(for f in $files; do grep -m1 '^summary' "$f" | awk '{print $2}'; done)
  [ -n "$first" ] || first="$1 $2"
  read -r b1 b2 <<<"$first"
  awk -v p="$p" -v n="$n" -v a="$1" -v b="$2" -v b1="$b1" -v b2="$b2" 'BEGIN {
    printf "%-8s first run %6.1f k/message (%+.1f %%)   second run %6.1f k/message (%+.1f %%)\n",
      p, a / n / 1000, (a / b1 - 1) * 100, b / n / 1000, (b / b2 - 1) * 100 }'
done

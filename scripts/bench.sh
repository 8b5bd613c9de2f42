#!/usr/bin/env bash
# Builds wxpush and the benchmark in release mode, then runs the benchmark.
# Any arguments go to the benchmark, e.g.: scripts/bench.sh --n 100000 --latency-ms 20
# PostgreSQL (a throwaway cluster from testpg; needs the server binaries):
#   --database postgres [--instances K] [--kill-one] [--lease 1s]
# --instances K starts K-1 `wxpush run` daemons that join the measured send's
# run; --kill-one kills one of them with SIGKILL at 30 % accepted. The flags and
# every figure printed are described at the top of examples/bench.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wxpush --example bench >&2
exec target/release/examples/bench --wxpush target/release/wxpush "$@"

#!/usr/bin/env bash
# Builds wxpush and the benchmark in release mode, then runs the benchmark.
# Any arguments go to the benchmark, e.g.: scripts/bench.sh --n 100000 --latency-ms 20
# PostgreSQL: --database postgres [--instances 3] [--kill-one 1] (a throwaway cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wxpush --example bench >&2
exec target/release/examples/bench --wxpush target/release/wxpush "$@"

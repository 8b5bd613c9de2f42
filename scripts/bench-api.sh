#!/usr/bin/env bash
# Builds wxpush and the API benchmark in release mode, then runs the benchmark.
# Any arguments go to the benchmark, e.g.: scripts/bench-api.sh --requests 50000
# PostgreSQL (a throwaway cluster from testpg; needs the server binaries):
#   scripts/bench-api.sh --database postgres
# Scenarios: A accept throughput, B lag at 1,000 due a second, C a million
# scheduled sends in the store (--scenarios a,b or --skip-c). The flags and
# every figure printed are described at the top of examples/bench_api.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wxpush --example bench_api >&2
exec target/release/examples/bench_api --wxpush target/release/wxpush "$@"

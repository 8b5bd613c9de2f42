#!/usr/bin/env bash
# Builds wxpush and the status page's benchmark in release mode, then runs it.
# Arguments go to the benchmark (see examples/status_bench.rs), e.g.:
#   scripts/status-bench.sh --deliveries 1000000 --jobs 100 --requests 200
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin wxpush --example status_bench >&2
exec target/release/examples/status_bench --wxpush target/release/wxpush "$@"

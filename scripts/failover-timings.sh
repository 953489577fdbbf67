#!/usr/bin/env bash
# Measures how long writes stop when a node of a 3-node cluster dies (SIGKILL: its partitions'
# followers take over once its lease expires) or is stopped (SIGTERM: it hands its partitions
# over first). Runs the ignored test `failover_timings` (tests/e2e/cluster_failover.rs), which
# prints the longest insert wait around each departure and its p50/p99/max.
#
#   scripts/failover-timings.sh [RUNS]      (10 runs of each kind by default)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --bin shoal
SHOAL_FAILOVER_RUNS="${1:-10}" cargo test --workspace --all-targets -- \
    --ignored failover_timings --nocapture 2>&1 | grep -E '^(run |SIGKILL|SIGTERM)'

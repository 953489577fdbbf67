#!/usr/bin/env bash
# The long fault schedule: three Shoal nodes and a three-member etcd, each on a host of its own
# (network namespaces; needs root), run registers, a set and a bank while a random fault lands
# every ~20 s (SIGKILL and SIGSTOP of nodes, partitions between nodes and between a node and
# etcd, killing an etcd follower or the etcd leader, a full-cluster restart). Then it heals
# everything, waits for every replica to come back and checks every invariant. Writes a
# Markdown report (faults, how long acknowledged inserts paused after each, outcomes, checks).
#
#   scripts/fault-schedule.sh [MINUTES] [SEED]     (10 minutes, seed 1 by default)
#
# The report goes to target/fault-report.md (or SHOAL_FAULT_REPORT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --bin shoal
export SHOAL_FAULT_MINUTES="${1:-10}" SHOAL_FAULT_SEED="${2:-1}"
export SHOAL_FAULT_REPORT="${SHOAL_FAULT_REPORT:-$PWD/target/fault-report.md}"
cargo test --workspace --all-targets -- --ignored long_fault_schedule --nocapture

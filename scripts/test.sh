#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit tests and the end-to-end suite
# (real shoal processes, psql, tokio-postgres, a real PostgreSQL 15 for the .slt files).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
cargo build --workspace --all-targets
echo "== tests"
cargo test --workspace -- --test-threads 4

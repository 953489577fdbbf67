#!/usr/bin/env bash
# Regenerates docs/compatibility.md and tests/compat/baseline.txt: runs the recorded client
# traffic, the psql meta-commands and every .slt file (tests/slt and, when present,
# ../shared/slt; record by record, both wire engines) against Shoal and a real PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/install-deps.sh
mkdir -p docs
# Release mode: the SQLite corpus (~37 MB of .slt) takes hours in a debug build.
cargo build --release --bin shoal
SHOAL_COMPAT_REPORT="$PWD/docs/compatibility.md" \
    cargo test --release -p shoal-tests --test e2e clients_answer_like_postgres -- --nocapture
echo "wrote docs/compatibility.md and tests/compat/baseline.txt"

#!/usr/bin/env bash
# Builds Shoal (release) and starts a single node on the embedded metadata store.
# Connect with: psql -h 127.0.0.1 -p 15432 -U shoal -d shoal
# Extra arguments go to `shoal start` (see `shoal start --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/install-deps.sh
cargo build --release --bin shoal
if [[ -z "${SHOAL_PASSWORD:-}" ]]; then
    export SHOAL_PASSWORD=shoal
    echo "SHOAL_PASSWORD is not set: the superuser 'shoal' gets the password 'shoal' on first start" >&2
fi
exec ./target/release/shoal start --data-dir "${SHOAL_DATA_DIR:-./shoal-data}" "$@"

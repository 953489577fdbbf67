#!/usr/bin/env bash
# Benchmarks Shoal side by side with PostgreSQL 15 and DuckDB on this machine, in one run:
# pgbench (select-only and TPC-B-like), COPY of TPC-H data, and the 22 TPC-H queries checked
# against PostgreSQL's answers. Writes report.md, ratios.png and report.json.
#
#   bash scripts/bench.sh                 # TPC-H scale 1, release build (the figures we quote)
#   bash scripts/bench.sh --quick         # TPC-H scale 0.1, shorter pgbench runs
#   bash scripts/bench.sh --scale 0.01 --profile dev --pgbench-seconds 2   # proves the script
#
# Options: --scale SF, --quick, --profile release|dev, --out DIR (default target/bench/report),
# --shoal-bin PATH (skip the build); anything else goes to scripts/bench/run.py (see --help).
# SHOAL_BENCH_DIR (default target/bench) keeps the venv and the generated data between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

command="bash scripts/bench.sh $*"
scale=1
profile=release
out=""
shoal_bin=""
extra=(--runs 2 --pgbench-scale 10 --pgbench-seconds 30)
pass=()
while (($#)); do
    case "$1" in
        --scale) scale="$2"; shift 2 ;;
        --quick) scale=0.1; extra=(--runs 3 --pgbench-scale 10 --pgbench-seconds 10); shift ;;
        --profile) profile="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --shoal-bin) shoal_bin="$2"; shift 2 ;;
        *) pass+=("$1"); shift ;;
    esac
done

bash scripts/install-deps.sh
target_dir=${CARGO_TARGET_DIR:-target}
# The venv and generated data are kept between runs here.
bench_dir=${SHOAL_BENCH_DIR:-$target_dir/bench}
out=${out:-$bench_dir/report}

# The benchmark's Python packages live in a venv of their own, reinstalled when the pinned
# versions change.
venv="$bench_dir/venv"
requirements=scripts/bench/requirements.txt
if ! cmp -s "$requirements" "$venv/installed-requirements.txt"; then
    echo "installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
    python3 -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/installed-requirements.txt"
fi

if [[ -z "$shoal_bin" ]]; then
    cargo build --profile "$profile" --bin shoal
    dir=$profile
    [[ "$profile" == dev ]] && dir=debug
    shoal_bin="$target_dir/$dir/shoal"
fi

exec "$venv/bin/python" scripts/bench/run.py --shoal-bin "$shoal_bin" --shoal-profile "$profile" \
    --scale "$scale" --data-dir "$bench_dir/data" --out "$out" \
    --command "$command" "${extra[@]}" ${pass[@]+"${pass[@]}"}

#!/usr/bin/env bash
# Runs the GPU checks on a machine with CUDA and no Rust toolchain, from binaries built here:
#   cargo build --release -p shoal-gpu --bin shoal-gpu-check -p shoal-executor --bin shoal-gpu-bench
# then, on the GPU machine: bash scripts/gpu-device-run.sh [BIN_DIR] [OUT_DIR]
# It prints the device, compares the GPU with the CPU reference on random data (exit status 1 on
# any difference), and times the filter + GROUP BY benchmark; both outputs land in OUT_DIR.
set -uo pipefail
bin=${1:-target/release}
out=${2:-${OUT:-/tmp/shoal-gpu-run}}
mkdir -p "$out"
# NVRTC from the CUDA toolkit when it is not on the loader's path.
if [[ -z "${SHOAL_NVRTC_LIBRARY:-}" ]]; then
    for candidate in /usr/local/cuda/lib64/libnvrtc.so.12 /usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so.12; do
        [[ -e $candidate ]] && export SHOAL_NVRTC_LIBRARY=$candidate && break
    done
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
"$bin/shoal-gpu-check" "${SEEDS:-300}" 2>&1 | tee "$out/check.txt"
check=${PIPESTATUS[0]}
"$bin/shoal-gpu-bench" ${ROWS:-1e6 1e7 1e8} 2>&1 | tee "$out/bench.txt"
exit "$check"

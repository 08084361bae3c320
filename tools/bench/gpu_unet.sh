#!/usr/bin/env bash
# GPU UNet benchmark, sharpen (burn CUDA) beside diffusers (torch) on the same card: SDXL base
# 1.0 architecture with random weights, forward at 1024x1024, batch 2, bf16 by default.
#
#   tools/bench/gpu_unet.sh [SHARPEN_BENCH_BINARY] [OUT_DIR]
#
# Needs: a binary built with `cargo build --release -p sharpen-bench --features cuda`, python3
# with torch + diffusers, nvidia-smi. Each run's device memory is also sampled with nvidia-smi
# (whole-process figure, CUDA context included), so both sides are measured the same way.
set -uo pipefail
BIN=${1:-target/release/sharpen-bench}
OUT=${2:-out/bench}
SIZE=${SIZE:-1024}
BATCH=${BATCH:-2}
DTYPE=${DTYPE:-bf16}
REPEATS=${REPEATS:-10}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

# Runs a command while sampling the GPU's used memory every 50 ms; prints the peak (MiB) last.
sampled() {
    local name=$1; shift
    local base
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"$OUT/$name.mem" &
    local sampler=$!
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
    local peak
    peak=$(sort -n "$OUT/$name.mem" | tail -1)
    echo "$name: exit $rc, nvidia-smi peak $((peak - base)) MiB above the idle $base MiB" | tee -a "$OUT/summary.txt"
}

"$BIN" unet --preset sdxl --repeats 0 --write-config "$OUT/sdxl_unet_config.json" >/dev/null 2>&1 || true
sampled torch timeout "${TORCH_TIMEOUT:-150}" python3 tools/bench/unet_gpu_torch.py "$OUT/sdxl_unet_config.json" \
    --size "$SIZE" --batch "$BATCH" --dtype "$DTYPE" --repeats "$REPEATS"
# The first sharpen run compiles and autotunes its kernels (cached on disk for the next runs).
for attention in ${ATTENTION:-fused composed}; do
    sampled "sharpen-$attention" timeout "${SHARPEN_TIMEOUT:-300}" "$BIN" unet --preset sdxl \
        --size "$SIZE" --batch "$BATCH" --dtype "$DTYPE" --repeats "$REPEATS" --warmup 2 \
        --attention "$attention" --device cuda
done
echo; echo "== summary"; cat "$OUT/summary.txt"
grep -h '^{' "$OUT"/*.log

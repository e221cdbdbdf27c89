#!/usr/bin/env bash
# On the GPU host: the baseline `engine bench` of llama-3.1-8b's shape (dummy weights, bf16)
# and, in the same session on the same GPU, Hugging Face transformers on the very same
# weights (exported by `engine export-dummy`) as the peer.
# Usage: bash scripts/gpu-bench.sh [batches] [runs]   (writes under $OUT)
set -uo pipefail
BATCH=${1:-1,8,32,128}
RUNS=${2:-3}
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
E=/tmp/engine
export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ENGINE_GPU_RUN_QUIET=1 bash scripts/gpu-run.sh --version || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,power.draw --format=csv,noheader
echo "== engine bench"
$E bench --model dummy:llama-3.1-8b --device cuda --batch "$BATCH" --input-len 128 --output-len 128 \
  --runs "$RUNS" --warmup 1 --out "$OUT/engine" 2>&1 | grep -v '^\s*\[' | tail -40
echo "== transformers peer"
$E export-dummy --manifest llama-3.1-8b --seed 0 --dtype bf16 --out /tmp/llama8b || exit 1
python3 scripts/hf_peer_bench.py /tmp/llama8b --batch "$BATCH" --input-len 128 --output-len 128 --runs "$RUNS" \
  2>/dev/null | tee "$OUT/peer.jsonl"

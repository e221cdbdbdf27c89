#!/usr/bin/env bash
# On the GPU host (repo root, .device/engine.xz carried): check the CUDA path.
#  - dummy weights of real shapes (4 layers) written as safetensors by `engine export-dummy`
#  - `engine logits` on cuda (bf16) and on cpu (f32), same weights, same prompt
#  - transformers (bf16, sdpa) on the same weights as the independent reference
#  - greedy tokens of a mixed batch vs each sequence alone (cuda)
#  - compute-sanitizer memcheck over a short run
# Usage: bash scripts/gpu-check.sh [layers]   (results also under $OUT when set)
#        KERNELS=candle|fused|auto picks the GPU runs' hot-path ops (default auto: candle until a fused GPU run is recorded)
set -uo pipefail
LAYERS=${1:-4}
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
E=/tmp/engine
K=${KERNELS:-auto}
export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bash scripts/gpu-run.sh --version >/dev/null || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
check() { # manifest extra-export-args...
  local m=$1; shift
  local d=/tmp/w-$m
  echo "== $m ($LAYERS layers) $*"
  $E export-dummy --manifest "$m" --num-layers "$LAYERS" --seed 1 --dtype bf16 --out "$d" "$@" || return
  $E logits --model "$d" --device cuda --kernels "$K" --dtype bf16 --prompt-len 48 --steps 32 --batch 8 --out "$d/gpu" || return
  # CPU f32 follows the GPU's tokens (teacher forcing), so every row stays comparable.
  $E logits --model "$d" --device cpu --dtype f32 --follow "$d/gpu.json" --out "$d/cpu" || return
  # Batch invariance in f32 on the GPU: bf16 GEMMs of different batch shapes round
  # differently, which flips near-ties of these flat dummy distributions.
  $E logits --model "$d" --device cuda --kernels "$K" --dtype f32 --prompt-len 48 --steps 32 --batch 8 --out "$d/gpu32" || return
  python3 scripts/gpu_reference.py "$d" "$d/gpu.json" "$d/cpu.json"
  cp "$d"/gpu.json "$OUT/$m-gpu.json"; cp "$d"/cpu.json "$OUT/$m-cpu.json"
}
check llama-3.1-8b
check mistral-7b-v0.3 --sliding-window 16
check qwen2.5-7b
echo "== compute-sanitizer memcheck (tiny run)"
compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
  $E logits --model /tmp/w-qwen2.5-7b --device cuda --kernels "$K" --dtype bf16 --prompt-len 20 --steps 4 --batch 3 --out /tmp/san 2>&1 | tail -5

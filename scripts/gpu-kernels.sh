#!/usr/bin/env bash
# On the GPU host (repo root, .device/engine.xz carried; see docs/cuda.md): the fused
# kernels' acceptance checks (docs/kernels.md). Each phase fits one device call.
#
#   bash scripts/gpu-kernels.sh test       # every kernel vs its reference, all dtypes
#   bash scripts/gpu-kernels.sh sanitize   # compute-sanitizer memcheck + racecheck on the tests
#   bash scripts/gpu-kernels.sh bench      # time, GB/s and % of the copy ceiling per kernel
#   bash scripts/gpu-kernels.sh e2e [batches] [runs]
#                                          # engine bench --kernels fused vs candle, same session
#   bash scripts/gpu-kernels.sh check      # the decoder: fused vs candle vs CPU vs transformers
#   bash scripts/gpu-kernels.sh sample     # the sampler: checks, 100,000-draw chi-square, bench
#   bash scripts/gpu-kernels.sh sample-e2e [batches] [runs]
#                                          # engine bench at T 0 vs T 0.7 / top-p 0.9 (#13)
#
# Output also goes under $OUT (default /tmp/gpu-kernels).
set -uo pipefail
PHASE=${1:-test}
OUT=${OUT:-/tmp/gpu-kernels}
mkdir -p "$OUT"
E=/tmp/engine
export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ENGINE_GPU_RUN_QUIET=1 bash scripts/gpu-run.sh --version || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm --format=csv,noheader
case "$PHASE" in
  test)
    $E kernels test --device cuda 2>&1 | tee "$OUT/test.txt"
    ;;
  sanitize)
    # Small shapes keep the sanitizers within the call's time limit.
    for tool in memcheck racecheck; do
      echo "== compute-sanitizer --tool $tool"
      compute-sanitizer --tool "$tool" --print-limit 20 \
        $E kernels test --device cuda --dtype bf16 2>&1 | tail -15 | tee "$OUT/$tool.txt"
    done
    ;;
  bench)
    $E kernels bench --device cuda --dtype bf16 2>&1 | tee "$OUT/bench.txt"
    ;;
  e2e)
    BATCH=${2:-1,8,32,128}
    RUNS=${3:-3}
    for k in fused candle; do
      echo "== engine bench --kernels $k"
      $E bench --model dummy:llama-3.1-8b --device cuda --kernels "$k" --batch "$BATCH" \
        --input-len 128 --output-len 128 --runs "$RUNS" --warmup 1 --out "$OUT/$k" 2>&1 \
        | grep -v '^\s*\[' | tail -25
    done
    $E report "$OUT/candle" "$OUT/fused" 2>&1 | tee "$OUT/compare.txt"
    ;;
  check)
    KERNELS=fused bash scripts/gpu-check.sh 4
    ;;
  sample)
    # docs/kernels.md, "The sampler": every dtype against the reference and the CPU port
    # (same tokens), rows alone / reversed; the chi-square of 100,000 draws per knob on the
    # device (max_abs = smallest p-value); time at batch 128 x 128256 against the copy
    # ceiling (mix 1 greedy, 2 T 0.7 / top-p 0.9, 3 + top-k 50 / min-p / logprobs, 4 T 1).
    {
      $E kernels test sample --device cuda
      $E kernels test sample --device cuda --dtype f32 --shapes '100000,256,5'
      $E kernels test sample --device cuda --dtype bf16 --shapes '100000,4096,5'
      $E kernels bench sample --device cuda --dtype bf16
      $E kernels bench sample --device cuda --dtype f32
    } 2>&1 | tee "$OUT/sample.txt"
    ;;
  sample-e2e)
    # #13's acceptance: output tok/s at T 0.7 / top-p 0.9 within 10 % of greedy at batch
    # 128 (same session; every step samples all rows in one launch either way), with the
    # sample phase per decode step (decode_sample_p50_ms) apart from the forward.
    BATCH=${2:-128}
    RUNS=${3:-3}
    $E bench --model dummy:llama-3.1-8b --device cuda --kernels fused --batch "$BATCH" \
      --temperature 0,0.7 --top-p 1,0.9 --input-len 128 --output-len 128 --runs "$RUNS" \
      --warmup 1 --out "$OUT/sample-e2e" 2>&1 | grep -v '^\s*\[' | tail -25 \
      | tee "$OUT/sample-e2e.txt"
    ;;
  *)
    echo "unknown phase $PHASE: test, sanitize, bench, e2e, check, sample or sample-e2e" >&2
    exit 2
    ;;
esac

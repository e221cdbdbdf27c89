#!/usr/bin/env bash
# ONE command for the GPU host: every check the GPU issues need (#12 decode, #13 device
# sampling, #17 quantized weights), in priority order, each stage under its own time
# budget inside one overall deadline, so that a failure or a slow stage still returns the
# rest.
#
# Here (no GPU needed):   bash scripts/build-cuda.sh       # packs .device/engine.xz
# On the GPU host:        bash scripts/gpu-verify.sh       # device tool: carry [".device"]
#
# Stages (budget in seconds; the deadline cuts the last ones short, never the first):
#   env        nvidia-smi, torch and transformers versions                       5
#   kernels    engine kernels test --device cuda (every kernel, every dtype)    25
#   memcheck   compute-sanitizer memcheck over the bf16 kernel tests             35
#   check      3 shapes x 4 layers: fused bf16 with graphs vs --enforce-eager
#              (same greedy tokens), vs the CPU f32 build (logits, teacher
#              forced), vs transformers on the same weights; f32 batch
#              invariance with graphs                                           110
#   graphs     engine bench dummy:llama-3.1-8b, batch 1..256, fused + graphs     55
#   peer       transformers on the same weights: eager generate (all batches),
#              static cache + torch.compile (batch 1); PyTorch's copy bandwidth  90
#   eager      the same bench with --enforce-eager                               40
#   candle     the same bench with --kernels candle                              50
#   sequential batch 1 and 128 with --disable-overlap (no step overlap)          25
#   sampling   batch 128 at T 0 / 0.7 x top-p 1 / 0.9; the sample kernel's
#              checks, chi-square draws and time vs the copy ceiling            35
#   quant      batch-1 decode of the 8B shape quantized to Q8_0 and Q4_K (Q4_K
#              quantizes at load: 80-90 s); engine-quant's CUDA matmul tests and
#              timing at the 8B shapes                                          150
#   serve      what HTTP and serving add: engine bench --endpoint against engine
#              serve vs the in-process bench, same workload; engine report A B   45
#
# $OUT (default /tmp/gpu-verify) gets three files: summary.md (the acceptance table,
# scripts/gpu_verify_summary.py), verify.log (everything printed) and results.tar.gz,
# which unpacks to DATE-h200-verify/ ready to commit under benches/results/.
# VERIFY_DEADLINE_S (default 570) is the overall budget: the stages through sampling fit
# in 8 minutes; quant and serve come last. VERIFY_DRY_RUN=1 runs the same
# stages here on the CPU build (target/release/engine, small dummy shapes), to check the
# script itself before device time is spent on it. VERIFY_ONLY="peer serve" runs only
# the named stages (a rerun of what failed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-verify}
DEADLINE_S=${VERIFY_DEADLINE_S:-570}
START=$(date +%s)
NAME="$(date -u +%Y-%m-%d)-h200-verify"
R=/tmp/gpu-verify-work/$NAME
rm -rf /tmp/gpu-verify-work && mkdir -p "$R" "$OUT"
exec > >(tee "$OUT/verify.log") 2>&1
E=/tmp/engine DEV=cuda MODEL=llama-3.1-8b LEN=128 BATCHES=1,8,32,128,256 SAMPLE_BATCH=128
SHAPES="llama-3.1-8b;mistral-7b-v0.3 --sliding-window 16;qwen2.5-7b"
if [[ ${VERIFY_DRY_RUN:-0} == 1 ]]; then
  E=$PWD/target/release/engine DEV=cpu MODEL=smollm2-135m LEN=16 BATCHES=1,4 SAMPLE_BATCH=4
  SHAPES="smollm2-135m;qwen2.5-0.5b"
fi
W=/tmp/gpu-verify-weights
mkdir -p "$W"
export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
# Every bench: the 8B shape (seeded dummy weights, bf16), 128 in / 128 out.
BENCH="--model dummy:$MODEL --device $DEV --dtype bf16 --input-len $LEN --output-len $LEN --warmup 1 --quiet"
printf 'stage\tstatus\tseconds\tbudget\n' >"$R/stages.tsv"

left() { echo $((DEADLINE_S - ($(date +%s) - START))); }

# stage NAME BUDGET COMMAND...: runs COMMAND (an exported function or a program) under
# min(BUDGET, time left - 15 s for packing), output to NAME.txt and the log.
stage() {
  local name=$1 budget=$2; shift 2
  local avail=$(($(left) - 15)) t0 rc status
  if [[ -n ${VERIFY_ONLY:-} && " $VERIFY_ONLY " != *" $name "* ]]; then
    printf '%s\tnot selected\t0\t0\n' "$name" >>"$R/stages.tsv"
    return
  fi
  ((budget > avail)) && budget=$avail
  if ((budget < 5)); then
    echo "== $name: skipped (deadline)"
    printf '%s\tskipped\t0\t0\n' "$name" >>"$R/stages.tsv"
    return
  fi
  echo "== $name (budget ${budget}s, $(left)s left overall)"
  t0=$(date +%s)
  timeout --signal=INT --kill-after=5 "$budget" bash -c "set -o pipefail; $*" 2>&1 | tee "$R/$name.txt"
  rc=${PIPESTATUS[0]}
  case $rc in 0) status=ok ;; 124 | 130 | 137) status=timeout ;; *) status="failed($rc)" ;; esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" $(($(date +%s) - t0)) "$budget" >>"$R/stages.tsv"
  echo "== $name: $status in $(($(date +%s) - t0))s"
}

env_info() {
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.mem --format=csv
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  $E --version
}

kernels_test() { $E kernels test --device "$DEV"; }

memcheck() {
  compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
    $E kernels test --device "$DEV" --dtype bf16
}

# One shape: 4-layer dummy; GPU bf16 (graphs) and --enforce-eager must agree on greedy
# tokens; the CPU f32 build follows the GPU's tokens; f32 on the GPU with 8 prompts
# together vs alone (batch invariance, graphs on); transformers on the same weights.
check_shape() {
  local m=$1; shift
  local d=$W/$m
  $E export-dummy --manifest "$m" --num-layers 4 --seed 1 --dtype bf16 --out "$d" "$@" || return 1
  $E logits --model "$d" --device "$DEV" --kernels fused --dtype bf16 --prompt-len 48 --steps 32 \
    --out "$d/gpu" || return 1
  $E logits --model "$d" --device "$DEV" --kernels fused --dtype bf16 --prompt-len 48 --steps 32 \
    --enforce-eager --out "$d/eager" || return 1
  python3 - "$d/gpu.json" "$d/eager.json" <<'EOF'
import json, sys
a, b = (json.load(open(p))["generated"] for p in sys.argv[1:3])
same = sum(x == y for x, y in zip(a, b))
print(f"graphs vs eager: {same}/{len(a)} greedy tokens equal" + ("" if a == b else " MISMATCH"))
EOF
  $E logits --model "$d" --device cpu --dtype f32 --follow "$d/gpu.json" --out "$d/cpu" || return 1
  $E logits --model "$d" --device "$DEV" --kernels fused --dtype f32 --prompt-len 48 --steps 32 \
    --batch 8 --out "$d/gpu32" || return 1
  python3 scripts/gpu_reference.py "$d" "$d/gpu.json" "$d/cpu.json"
}

check() {
  local rc=0
  local spec specs
  IFS=';' read -ra specs <<<"$SHAPES"
  for spec in "${specs[@]}"; do
    # shellcheck disable=SC2086
    echo "-- ${spec%% *}" && check_shape $spec || { echo "-- ${spec%% *}: FAILED"; rc=1; }
  done
  return $rc
}

bench() { # DIR extra-args...
  local dir=$1; shift
  # shellcheck disable=SC2086
  $E bench $BENCH --out "$R/$dir" "$@" && sed -n '1,60p' "$R/$dir/report.md"
}
bench_graphs() { bench bench-graphs --kernels fused --batch $BATCHES --runs 2; }
bench_eager() { bench bench-eager --kernels fused --enforce-eager --batch $BATCHES --runs 1; }
bench_candle() { bench bench-candle --kernels candle --batch $BATCHES --runs 1; }
bench_sequential() { bench bench-sequential --kernels fused --disable-overlap --batch "${BATCHES%%,*},$SAMPLE_BATCH" --runs 1; }

peer() {
  # The full-size weights were exported in the background since the start; if they are
  # not there within a minute, the peer times random weights of the same config (speed
  # does not depend on the values; the check stage compares numbers on the same weights).
  local waited=0
  while [[ ! -e $W/llama8b.done ]] && ((waited < 60)); do sleep 1; waited=$((waited + 1)); done
  local src=("$W/llama8b")
  [[ -e $W/llama8b.done ]] || src=(--random-init "$W/$MODEL" --num-layers 32)
  echo "peer weights: ${src[*]}"
  python3 scripts/hf_peer_bench.py "${src[@]}" --copy --batch $BATCHES --input-len $LEN \
    --output-len $LEN --runs 1 --mode eager | tee "$R/peer.jsonl"
  python3 scripts/hf_peer_bench.py "${src[@]}" --batch 1 --input-len $LEN --output-len $LEN \
    --runs 2 --mode compile | tee -a "$R/peer.jsonl"
}

sampling() {
  # shellcheck disable=SC2086
  $E bench $BENCH --kernels fused --batch $SAMPLE_BATCH --runs 1 --temperature 0,0.7 --top-p 1,0.9 \
    --out "$R/bench-sampling"
  $E kernels test sample --device "$DEV"
  $E kernels test sample --device "$DEV" --dtype f32 --shapes '100000,256,5'
  $E kernels bench sample --device "$DEV" --dtype bf16
}

quant() {
  local q rc=0 x=/tmp/gpu-verify-quant
  # Q8_0 first: it quantizes in seconds; Q4_K of the 8B shape takes 80-90 s of 16 cores.
  for q in q8_0 q4_k; do
    # shellcheck disable=SC2086
    $E bench $BENCH --kernels fused --quant "$q" --batch 1 --runs 2 --out "$R/bench-$q" \
      && sed -n '1,30p' "$R/bench-$q/report.md" || rc=1
  done
  # engine-quant's CUDA matmul checks and timing (packed by scripts/build-cuda.sh).
  mkdir -p $x
  if [[ -f .device/quant-cuda-tests.xz && -f .device/matmul_bench.xz ]]; then
    xz -dc .device/quant-cuda-tests.xz >$x/tests && xz -dc .device/matmul_bench.xz >$x/bench \
      && chmod +x $x/tests $x/bench || return 1
    $x/tests --include-ignored --test-threads 1 || rc=1
    $x/bench --device cuda --types q4_k,q8_0 --shapes 4096x4096,14336x4096,4096x14336,128256x4096 \
      --m 1,8,64 || rc=1
  else
    echo "no .device/quant-cuda-tests.xz: the CUDA matmul checks were not packed"
  fi
  return $rc
}

serve_overhead() {
  local port=18765 url=http://127.0.0.1:18765
  local work="--concurrency 16 --num-requests 64 --input-len $LEN --output-len $LEN --quiet --no-roofline"
  $E serve --model "dummy:$MODEL" --device "$DEV" --dtype bf16 --kernels fused --port $port &
  local pid=$! i
  for i in $(seq 1 60); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "$url/health" 2>/dev/null && break
    sleep 1
  done
  # shellcheck disable=SC2086
  $E bench --model "dummy:$MODEL" --device "$DEV" --dtype bf16 --kernels fused $work \
    --out "$R/serve-in-process" \
    && $E bench --endpoint "$url" --model "dummy:$MODEL" $work --out "$R/serve-endpoint" \
    && $E report "$R/serve-in-process" "$R/serve-endpoint"
  local rc=$?
  kill -TERM $pid 2>/dev/null
  wait $pid 2>/dev/null
  return $rc
}

if [[ ${VERIFY_DRY_RUN:-0} != 1 ]]; then
  ENGINE_GPU_RUN_QUIET=1 bash scripts/gpu-run.sh --version || { echo "no engine binary"; exit 1; }
fi
# Full-size weights for the peer (the seed of `dummy:`), written while the GPU checks
# run (CPU and disk only).
(nice -n 10 $E export-dummy --manifest $MODEL --seed 0 --dtype bf16 --out "$W/llama8b" \
  >"$R/export.txt" 2>&1 && touch "$W/llama8b.done") &
EXPORT_PID=$!
export E W R OUT DEV MODEL LEN BATCHES SAMPLE_BATCH BENCH SHAPES
export -f env_info kernels_test memcheck check_shape check bench bench_graphs bench_eager \
  bench_candle bench_sequential peer sampling quant serve_overhead

stage env 5 env_info
stage kernels 25 kernels_test
stage memcheck 35 memcheck
stage check 110 check
stage graphs 55 bench_graphs
stage peer 90 peer
stage eager 40 bench_eager
stage candle 50 bench_candle
stage sequential 25 bench_sequential
stage sampling 35 sampling
stage quant 150 quant
stage serve 45 serve_overhead
kill "$EXPORT_PID" 2>/dev/null

python3 scripts/gpu_verify_summary.py "$R" | tee "$R/README.md" "$OUT/summary.md"
find "$R" -name '*.svg' -delete
tar -C "$(dirname "$R")" -czf "$OUT/results.tar.gz" "$NAME"
echo "== done in $(($(date +%s) - START))s; $OUT: summary.md verify.log results.tar.gz"

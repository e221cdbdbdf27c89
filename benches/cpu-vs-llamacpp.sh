#!/usr/bin/env bash
# This engine against llama.cpp on the CPU: same GGUF, same thread count, one run.
#
#   bash benches/cpu-vs-llamacpp.sh [--threads N] [--model FILE.gguf] [--runs N]
#                                   [--out DIR] [--no-micro] [--no-e2e] [--micro-cpu-time]
#                                   [--greedy] [--e2e-cpu-time]
#
# 1. llama.cpp: the pinned llama-cpp-python sdist (`pip download`), its vendor/llama.cpp
#    built with cmake (from a venv if the system has none) into $CACHE/llama.cpp, once:
#    llama-bench, llama-batched-bench and the ggml libraries, plus
#    benches/llamacpp/ggml_mul_mat_bench.c linked against them. Native ISA with AMX
#    off: these VMs advertise AMX but fault on its tile instructions.
# 2. End to end (the default model unless --model): llama-bench pp512 / tg128,
#    llama-batched-bench S_TG with 16 sequences (128-token prompts, 128 new tokens), and
#    `engine bench` on the same file: batch 1 and 16 with 128 + 128 tokens, and a
#    512-token prefill. The engine gets RAYON_NUM_THREADS=N (its CPU matmul threads) and
#    $ENGINE_ARGS (default `--quant native`: the GGUF's weights stay quantized;
#    `ENGINE_ARGS="--quant none"` measures the f32 path, the engine's own default).
# 3. Micro: the quantized matmul of crates/quant (examples/matmul_bench.rs) and ggml's
#    mul_mat at the default model's shapes (576x576, 576x1536, 1536x576, 49152x576;
#    Q4_1, and Q8_0 for the tied 49152x576 head; plus Q4_0, Q4_K, Q6_K at 1536x576 or
#    1536x512) with 1, 16 and 512 activation rows, fastest of the runs. By default on N
#    threads, wall clock, weights streamed from memory (`cold`). --micro-cpu-time: one
#    thread timed by its CPU time, weights in cache: the comparison that survives a
#    machine loaded by other work (both sides measured the same way).
# --e2e-cpu-time: step 2 on ONE thread each, timed by CPU time (user + sys of the
#    process), which survives a machine loaded by other work where the wall clock does
#    not (llama.cpp's spinning thread barriers collapse when its threads are descheduled).
#    Each figure is a difference of two runs that differ only in the tokens measured
#    (decode: 128 vs 16 new tokens after a 128-token prompt, 1 and 16 sequences, both
#    sides through their batched tools; prefill: a 512- vs a 64-token prompt), so loading
#    and warm-up cancel out: tokens per CPU-second.
# --greedy instead: build benches/llamacpp/llama_greedy.c against the same llama.cpp and
#    run the engine-model test quant_vs_llamacpp (ignored by default): llama.cpp decodes
#    5 prompts x 64 tokens greedily; the engine (--quant native, and none for context)
#    must pick the same top-1 wherever llama.cpp's top-2 margin exceeds 0.1.
# 4. Prints the ratios (engine / llama.cpp, higher is better for the engine) and writes
#    everything to --out (default bench-out/cpu-vs-llamacpp-DATE): logs, jsonl, csv,
#    summary.md with the machine, its load before and after, and the commit.
#
# $CACHE is $ENGINE_CACHE_DIR, else $XDG_CACHE_HOME/engine, else ~/.cache/engine.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SDIST_VERSION=0.3.36
THREADS=2
RUNS=3
MODEL=""
OUT=""
MICRO=1
E2E=1
MICRO_CPU=0
GREEDY=0
E2E_CPU=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --model) MODEL="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --no-micro) MICRO=0; shift ;;
        --no-e2e) E2E=0; shift ;;
        --micro-cpu-time) MICRO_CPU=1; shift ;;
        --greedy) GREEDY=1; shift ;;
        --e2e-cpu-time) E2E_CPU=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ -n "${ENGINE_CACHE_DIR:-}" ]]; then
    CACHE="$ENGINE_CACHE_DIR"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    CACHE="$XDG_CACHE_HOME/engine"
else
    CACHE="$HOME/.cache/engine"
fi
LCPP="$CACHE/llama.cpp"
SRC="$LCPP/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
BUILD="$LCPP/build"
OUT="${OUT:-$REPO/bench-out/cpu-vs-llamacpp-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" "$LCPP"
say() { echo "== $*" >&2; }

setup_llamacpp() {
    if [[ ! -d "$SRC" ]]; then
        say "fetching llama-cpp-python==$SDIST_VERSION (sdist) with pip"
        # Only this package as a source distribution: `:all:` would also build its
        # build backend's dependencies from source just to read the metadata.
        python3 -m pip download --no-deps --no-binary llama-cpp-python \
            "llama-cpp-python==$SDIST_VERSION" -d "$LCPP" >&2
        tar -xzf "$LCPP/llama_cpp_python-$SDIST_VERSION.tar.gz" -C "$LCPP" \
            "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
    fi
    local cmake=cmake ninja=()
    if ! command -v cmake >/dev/null; then
        if [[ ! -x "$LCPP/venv/bin/cmake" ]]; then
            say "no cmake: installing cmake and ninja from PyPI into $LCPP/venv"
            python3 -m venv "$LCPP/venv"
            "$LCPP/venv/bin/pip" install -q cmake ninja >&2
        fi
        cmake="$LCPP/venv/bin/cmake"
        ninja=(-G Ninja "-DCMAKE_MAKE_PROGRAM=$LCPP/venv/bin/ninja")
    fi
    local noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    if [[ ! -x "$BUILD/bin/llama-batched-bench" ]]; then
        say "building llama.cpp (llama-bench, llama-batched-bench; AMX off) in $BUILD"
        "$cmake" -S "$SRC" -B "$BUILD" "${ninja[@]}" -DCMAKE_BUILD_TYPE=Release \
            -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
            -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" >"$LCPP/cmake.log" 2>&1
        nice -n 10 "$cmake" --build "$BUILD" -j "$(nproc)" \
            --target llama-bench llama-batched-bench ggml >"$LCPP/build.log" 2>&1 ||
            { tail -30 "$LCPP/build.log" >&2; exit 1; }
    fi
    local bench_c="$REPO/benches/llamacpp/ggml_mul_mat_bench.c"
    if [[ ! -x "$LCPP/ggml_mul_mat_bench" || "$bench_c" -nt "$LCPP/ggml_mul_mat_bench" ]]; then
        say "building ggml_mul_mat_bench against $BUILD"
        # shellcheck disable=SC2086
        gcc -O2 -march=native $noamx -I"$SRC/ggml/include" -o "$LCPP/ggml_mul_mat_bench" \
            "$bench_c" "$BUILD/ggml/src/libggml.a" "$BUILD/ggml/src/libggml-cpu.a" \
            "$BUILD/ggml/src/libggml-base.a" -lstdc++ -lgomp -lpthread -lm
    fi
}

run_greedy() {
    local c="$REPO/benches/llamacpp/llama_greedy.c" bin="$LCPP/llama_greedy"
    if [[ ! -x "$bin" || "$c" -nt "$bin" ]]; then
        say "building llama_greedy against $BUILD"
        # shellcheck disable=SC2086
        g++ -O2 -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -x c "$c" -x none \
            -I"$SRC/include" -I"$SRC/ggml/include" -o "$bin" "$BUILD/src/libllama.a" \
            "$BUILD/ggml/src/libggml.a" "$BUILD/ggml/src/libggml-cpu.a" \
            "$BUILD/ggml/src/libggml-base.a" -lgomp -lpthread -lm
    fi
    say "greedy top-1: engine (--quant native) vs llama.cpp, 5 prompts x 64 steps"
    (cd "$REPO" && LLAMA_GREEDY="$bin" RAYON_NUM_THREADS="$THREADS" cargo test --release -q \
        -p engine-model --test quant_vs_llamacpp -- --ignored --nocapture) 2>&1 |
        tee "$OUT/greedy.log"
}

setup_engine() {
    say "building the matmul bench$([[ "$E2E" == 1 ]] && echo ' and the engine') (release)"
    (cd "$REPO" && cargo build --release -q -p engine-quant --example matmul_bench) >&2
    if [[ "$E2E" == 1 ]]; then
        (cd "$REPO" && cargo build --release -q -p engine-cli) >&2
    fi
    ENGINE="$REPO/target/release/engine"
    MATMUL="$REPO/target/release/examples/matmul_bench"
    if [[ "$E2E" == 1 && -z "$MODEL" ]]; then
        MODEL="$CACHE/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
        [[ -f "$MODEL" ]] || "$ENGINE" info --model smollm2-135m >/dev/null
    fi
}

machine() {
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
        echo "flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512(f|bw|vl|_vnni)|avx_vnni|amx_tile)$' | tr '\n' ' ')"
        echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
        echo "commit: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet || echo '+dirty')"
        echo "llama.cpp: llama-cpp-python $SDIST_VERSION vendor/llama.cpp"
        echo "model: ${MODEL:-(end-to-end runs skipped)}"
        echo "threads: $THREADS, runs: $RUNS, ENGINE_ARGS: ${ENGINE_ARGS---quant native}"
    } >"$OUT/machine.txt"
}

run_e2e() {
    say "llama-bench pp512 / tg128 ($THREADS threads)"
    "$BUILD/bin/llama-bench" -m "$MODEL" -t "$THREADS" -p 512 -n 128 -r "$RUNS" -o jsonl \
        >"$OUT/llama-bench.jsonl" 2>"$OUT/llama-bench.log"
    say "llama-batched-bench 128 + 128 tokens, 1 and 16 sequences"
    "$BUILD/bin/llama-batched-bench" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -c 4608 \
        -b 2048 -ub 512 -npp 128 -ntg 128 -npl 1,16 --output-format jsonl \
        >"$OUT/llama-batched-bench.jsonl" 2>"$OUT/llama-batched-bench.log"
    say "engine bench: batch 1 and 16, 128 + 128 tokens"
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS="$THREADS" "$ENGINE" bench --model "$MODEL" --device cpu \
        --batch 1,16 --input-len 128 --output-len 128 --runs "$RUNS" --quiet \
        --no-roofline --out "$OUT/engine-decode" ${ENGINE_ARGS---quant native} >"$OUT/engine-decode.log" 2>&1
    say "engine bench: 512-token prefill"
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS="$THREADS" "$ENGINE" bench --model "$MODEL" --device cpu \
        --batch 1 --input-len 512 --output-len 1 --runs "$RUNS" --quiet \
        --no-roofline --out "$OUT/engine-prefill" ${ENGINE_ARGS---quant native} >"$OUT/engine-prefill.log" 2>&1
}

# CPU seconds (user + sys) of a command, its output to the log.
cpu_s() {
    /usr/bin/time -f "%U %S" -o "$OUT/.cpu_s" "$@" >>"$OUT/e2e-cpu.log" 2>&1
    awk '{printf "%.3f\n", $1 + $2}' "$OUT/.cpu_s"
}

run_e2e_cpu() {
    say "end to end, 1 thread each, CPU time (differences of two runs)"
    local bb=("$BUILD/bin/llama-batched-bench" -m "$MODEL" -t 1 -tb 1 -c 4608 -b 2048 -ub 512 -npp 128)
    local lb=("$BUILD/bin/llama-bench" -m "$MODEL" -t 1 -r "$RUNS" --no-warmup -n 0)
    # shellcheck disable=SC2206
    local eb=(env RAYON_NUM_THREADS=1 "$ENGINE" bench --model "$MODEL" --device cpu --runs "$RUNS"
        --warmup 0 --quiet --no-roofline --out "$OUT/engine-cpu" ${ENGINE_ARGS---quant native})
    echo "what tokens_llama llama_cpu_s_a llama_cpu_s_b tokens_engine engine_cpu_s_a engine_cpu_s_b" >"$OUT/e2e-cpu.tsv"
    for n in 1 16; do
        local la lb_ ea eb_
        la=$(cpu_s "${bb[@]}" -npl "$n" -ntg 128)
        lb_=$(cpu_s "${bb[@]}" -npl "$n" -ntg 16)
        ea=$(cpu_s "${eb[@]}" --batch "$n" --input-len 128 --output-len 128)
        eb_=$(cpu_s "${eb[@]}" --batch "$n" --input-len 128 --output-len 16)
        echo "decode@$n $((n * 112)) $la $lb_ $((RUNS * n * 112)) $ea $eb_" >>"$OUT/e2e-cpu.tsv"
    done
    local la lb_ ea eb_
    la=$(cpu_s "${lb[@]}" -p 512)
    lb_=$(cpu_s "${lb[@]}" -p 64)
    ea=$(cpu_s "${eb[@]}" --batch 1 --input-len 512 --output-len 1)
    eb_=$(cpu_s "${eb[@]}" --batch 1 --input-len 64 --output-len 1)
    echo "pp512 $((RUNS * 448)) $la $lb_ $((RUNS * 448)) $ea $eb_" >>"$OUT/e2e-cpu.tsv"
}

run_micro() {
    local threads="$THREADS" ours=(--cold) theirs=(cold) how="$THREADS threads, wall clock, cold weights"
    if [[ "$MICRO_CPU" == 1 ]]; then
        threads=1 ours=(--cpu-time) theirs=(cpu) how="1 thread, thread CPU time, weights in cache"
    fi
    echo "micro: $how" >>"$OUT/machine.txt"
    say "micro: quantized matmul, engine-quant vs ggml ($how)"
    local cases=("q4_1 576x576" "q4_1 576x1536" "q4_1 1536x576" "q4_1 49152x576" "q8_0 49152x576"
        "q4_0 1536x576" "q4_k 1536x512" "q6_k 1536x512")
    : >"$OUT/micro-engine.tsv"
    : >"$OUT/micro-ggml.tsv"
    for c in "${cases[@]}"; do
        read -r ty shape <<<"$c"
        for m in 1 16 512; do
            "$MATMUL" --threads "$threads" --types "$ty" --shapes "$shape" --m "$m" \
                --seconds 0.5 "${ours[@]}" | grep -v '^#' | grep -v '^type' >>"$OUT/micro-engine.tsv"
            "$LCPP/ggml_mul_mat_bench" "$threads" "$ty" "$shape" "$m" 0.5 "${theirs[@]}" \
                >>"$OUT/micro-ggml.tsv"
        done
    done
}

report() {
    python3 - "$OUT" "$E2E" "$MICRO" "$E2E_CPU" <<'EOF'
import csv, json, os, sys
out, e2e, micro, e2e_cpu = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4] == "1"
lines = ["# CPU: engine vs llama.cpp", "", "```", open(os.path.join(out, "machine.txt")).read().strip(), "```", ""]

def jsonl(name):
    with open(os.path.join(out, name)) as f:
        return [json.loads(l) for l in f if l.startswith("{")]

def engine_csv(name):
    with open(os.path.join(out, name, "summary.csv")) as f:
        return list(csv.DictReader(f))

if e2e and e2e_cpu:
    names = {"decode@1": "decode, 1 sequence, 128-token prompt", "decode@16": "decode, 16 sequences",
             "pp512": "prompt processing, 512 vs 64 tokens"}
    targets = {"decode@1": 1.0, "decode@16": 2.0, "pp512": 0.8}
    lines += ["One thread each, tokens per CPU-second (the difference of two runs):", "",
              "| what | llama.cpp tok/CPU-s | engine tok/CPU-s | engine / llama.cpp | target (2 threads, wall) |",
              "|---|---:|---:|---:|---:|"]
    with open(os.path.join(out, "e2e-cpu.tsv")) as f:
        for r in list(csv.DictReader(f, delimiter=" ")):
            l = int(r["tokens_llama"]) / max(float(r["llama_cpu_s_a"]) - float(r["llama_cpu_s_b"]), 1e-9)
            e = int(r["tokens_engine"]) / max(float(r["engine_cpu_s_a"]) - float(r["engine_cpu_s_b"]), 1e-9)
            w = r["what"]
            lines.append(f"| {names[w]} | {l:.1f} | {e:.1f} | {e / l:.2f}x | {targets[w]:.1f}x |")
    lines.append("")
elif e2e:
    lb = jsonl("llama-bench.jsonl")
    pp = next(r["avg_ts"] for r in lb if r["n_prompt"] == 512 and r["n_gen"] == 0)
    tg = next(r["avg_ts"] for r in lb if r["n_gen"] == 128 and r["n_prompt"] == 0)
    bb = {r["pl"]: r for r in jsonl("llama-batched-bench.jsonl")}
    dec = {int(r["load"]): r for r in engine_csv("engine-decode")}
    pre = engine_csv("engine-prefill")[0]
    rows = [
        ("prompt processing, 512 tokens (tok/s)", "pp512", pp, float(pre["prefill_tok_per_s"]), 0.8),
        ("decode, batch 1, after 128 prompt tokens (tok/s)", "tg128", tg, float(dec[1]["decode_tok_per_s"]), 1.0),
        ("decode, 16 sequences (tok/s)", "S_TG @16", bb[16]["speed_tg"], float(dec[16]["decode_tok_per_s"]), 2.0),
        ("decode, 1 sequence, batched-bench (tok/s)", "S_TG @1", bb[1]["speed_tg"], float(dec[1]["decode_tok_per_s"]), None),
    ]
    lines += ["| what | llama.cpp | llama.cpp | engine | engine / llama.cpp | target |",
              "|---|---|---:|---:|---:|---:|"]
    for what, name, l, e, target in rows:
        t = f"{target:.1f}x" if target else ""
        lines.append(f"| {what} | {name} | {l:.1f} | {e:.1f} | {e / l:.2f}x | {t} |")
    lines.append("")

if micro:
    def tsv(name):
        with open(os.path.join(out, name)) as f:
            return {(r[0], r[1], r[2], r[3]): float(r[4]) for r in (l.split("\t") for l in f if l.strip())}
    eng, ggml = tsv("micro-engine.tsv"), tsv("micro-ggml.tsv")
    how = [l for l in open(os.path.join(out, "machine.txt")) if l.startswith("micro:")]
    lines += ["Quantized matmul alone (" + (how[0][6:].strip() if how else "") +
              "; fastest run, us per call; speedup = ggml time / engine-quant time):", "",
              "| type | rows x cols | m | ggml us | engine-quant us | speedup |", "|---|---|---:|---:|---:|---:|"]
    for k in eng:
        if k in ggml:
            lines.append(f"| {k[0]} | {k[1]}x{k[2]} | {k[3]} | {ggml[k]:.1f} | {eng[k]:.1f} | {ggml[k] / eng[k]:.2f}x |")
    lines.append("")

text = "\n".join(lines)
open(os.path.join(out, "summary.md"), "w").write(text + "\n")
print(text)
EOF
}

setup_llamacpp
if [[ "$GREEDY" == 1 ]]; then
    run_greedy # set -e and pipefail: a failed test ends the script with its status
    exit 0
fi
setup_engine
machine
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
if [[ "$E2E" == 1 && "$E2E_CPU" == 1 ]]; then
    echo "end to end: 1 thread each, CPU time" >>"$OUT/machine.txt"
    run_e2e_cpu
elif [[ "$E2E" == 1 ]]; then
    run_e2e
fi
if [[ "$MICRO" == 1 ]]; then run_micro; fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
report
say "results in $OUT"

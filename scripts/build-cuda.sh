#!/usr/bin/env bash
# Build the `engine` binary with `--features cuda` on a machine without a GPU,
# strip it and pack it as .device/engine.xz for the GPU host (see docs/cuda.md).
#
#   nice -n 19 bash scripts/build-cuda.sh [extra cargo args]
#
# Target dir: target-cuda/ (git-ignored), so the CPU build in target/ is not
# invalidated. The first build takes 20+ minutes on 2 cores (candle-kernels' nvcc).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

log() { echo "[build-cuda] $*"; }

ENV_SH="$(bash scripts/cuda-toolchain.sh --print-env)"
if [[ ! -f "$ENV_SH" || ! -f "$(dirname "$ENV_SH")/lib/stubs/libcuda.so" ]]; then
    log "toolchain not set up yet: running scripts/cuda-toolchain.sh"
    bash scripts/cuda-toolchain.sh
fi
# shellcheck disable=SC1090
. "$ENV_SH"
log "CUDA_HOME=$CUDA_HOME CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION CUDAFORGE_THREADS=$CUDAFORGE_THREADS"
log "nvcc: $(command -v nvcc) ($(nvcc --version | grep -o 'release [0-9.]*'))"

export CARGO_TARGET_DIR="$REPO/target-cuda"
start=$(date +%s)
log "cargo build --release -p engine-cli --features cuda $* (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --release -p engine-cli --features cuda "$@"
end=$(date +%s)
log "cargo build took $((end - start)) s"

BIN="$CARGO_TARGET_DIR/release/engine"
STRIPPED="$CARGO_TARGET_DIR/release/engine.stripped"
[[ -x "$BIN" ]] || { echo "[build-cuda] ERROR: $BIN not found" >&2; exit 1; }
strip -o "$STRIPPED" "$BIN"

mkdir -p .device
xz -T2 -6 -c "$STRIPPED" > .device/engine.xz.tmp
mv .device/engine.xz.tmp .device/engine.xz

log "binary:   $BIN ($(stat -c %s "$BIN") bytes)"
log "stripped: $STRIPPED ($(stat -c %s "$STRIPPED") bytes)"
log "packed:   .device/engine.xz ($(stat -c %s .device/engine.xz) bytes, $(du -h .device/engine.xz | cut -f1))"
log "sha256 of the stripped binary: $(sha256sum "$STRIPPED" | cut -d' ' -f1)"
log "NEEDED: $(readelf -d "$STRIPPED" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
log "highest GLIBC symbol version: $(objdump -T "$STRIPPED" | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -n 1)"
# engine-quant's CUDA matmul tests and bench, for scripts/gpu-verify.sh's quant stage.
log "engine-quant: the cuda test binary and the matmul bench"
QT=$(cargo test --release -p engine-quant --features cuda --test cuda --no-run \
  --message-format=json 2>/dev/null | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])' | tail -n 1)
cargo build --release -p engine-quant --features cuda --example matmul_bench
for pair in "$QT:quant-cuda-tests" "$CARGO_TARGET_DIR/release/examples/matmul_bench:matmul_bench"; do
  src=${pair%%:*} name=${pair##*:}
  [[ -x "$src" ]] || { echo "[build-cuda] ERROR: $src not built" >&2; exit 1; }
  strip -o "$CARGO_TARGET_DIR/$name.stripped" "$src"
  xz -T2 -6 -c "$CARGO_TARGET_DIR/$name.stripped" > ".device/$name.xz"
  log "packed:   .device/$name.xz ($(du -h ".device/$name.xz" | cut -f1))"
done
log "carry .device to the GPU host and run: bash scripts/gpu-verify.sh"

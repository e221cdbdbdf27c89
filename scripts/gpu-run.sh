#!/usr/bin/env bash
# Run ON the GPU host, from the repo root, after `.device/` was carried there
# (built by scripts/build-cuda.sh). Unpacks .device/engine.xz to /tmp/engine and
# runs it with the given arguments:
#
#   bash scripts/gpu-run.sh --help
#
# The ldd listing goes to stderr, so the engine's stdout stays clean.
# ENGINE_GPU_RUN_QUIET=1 skips it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$REPO/.device/engine.xz"
DST=/tmp/engine

[[ -f "$SRC" ]] || { echo "[gpu-run] ERROR: $SRC not found (build with scripts/build-cuda.sh, carry .device)" >&2; exit 1; }

# Unpack to a temporary name and rename, so concurrent runs never see half a file.
TMP="$DST.$$.tmp"
if command -v xz >/dev/null 2>&1; then
    xz -dc "$SRC" > "$TMP"
else
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as f, open(sys.argv[2], "wb") as o:
    shutil.copyfileobj(f, o)' "$SRC" "$TMP"
fi
chmod +x "$TMP"
mv -f "$TMP" "$DST"

# The real driver (libcuda.so.1) lives in /usr/local/nvidia/lib64; the toolkit's
# libcublas/libcublasLt/libcurand/libcudart/libnvrtc in the CUDA 13.0 target dir.
# Never put .../lib/stubs on this path.
export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

if [[ "${ENGINE_GPU_RUN_QUIET:-0}" != "1" ]]; then
    echo "[gpu-run] ldd $DST:" >&2
    ldd "$DST" >&2 || true
    if ldd "$DST" 2>/dev/null | grep -q 'not found'; then
        echo "[gpu-run] WARNING: unresolved libraries above" >&2
    fi
fi

exec "$DST" "$@"

#!/bin/bash
# Submit a sharded `engine run` job to Slurm: an array of SHARDS tasks (one GPU each),
# then the merge, which starts once every task has ended (afterany: a task's failure is
# for the merge to report, not to block it).
#
#   INPUT=prompts.jsonl OUT_DIR=/shared/run1 SHARDS=8 [MODEL=...] [ENGINE=...] \
#     [DEVICE=cuda] [ENGINE_ARGS="--max-tokens 256"] examples/slurm/submit.sh [SBATCH_OPTION...]
#
# SBATCH_OPTIONs go to the array job (e.g. --partition=gpu --time=4:00:00).
# Logs: OUT_DIR/logs/shard-<task>.log (appended across requeues) and merge.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${INPUT:?set INPUT to the JSONL of requests}"
INPUT=$(realpath "$INPUT")
OUT_DIR=$(realpath -m "${OUT_DIR:-results}")
SHARDS=${SHARDS:-8}
export INPUT OUT_DIR SHARDS
mkdir -p "$OUT_DIR/logs"
array=$(sbatch --parsable --array="0-$((SHARDS - 1))" --output="$OUT_DIR/logs/shard-%a.log" \
  "$@" "$here/engine-array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --dependency="afterany:$array" --output="$OUT_DIR/logs/merge.log" \
  "$here/merge.sbatch")
merge=${merge%%;*}
echo "submitted array job $array ($SHARDS tasks) and merge job $merge"
echo "results: $OUT_DIR/merged.jsonl once job $merge has ended (squeue -j $array,$merge)"

#!/usr/bin/env bash
# A sharded `engine run` job on a real Slurm (Debian's slurm-wlm, one node: this machine),
# submitted with the very scripts of examples/slurm/, with one task requeued mid-run:
#
#   1. install slurm-wlm and munge if missing; write a slurm.conf for this host with three
#      fake GPUs (so each task gets its own CUDA_VISIBLE_DEVICES); start munged,
#      slurmctld and slurmd (stopped again on exit);
#   2. run the whole input in one process on the default model (CPU): the reference;
#   3. submit a 3-task array of `engine run --shard auto` and the merge job
#      (examples/slurm/submit.sh); once task 1 has written some results, requeue it
#      (`scontrol requeue`, as a preemption does) and release it at once;
#   4. wait for the merge job; check that it reports the job complete (exit 0), that task
#      1 ran twice and resumed, that every input id is in the merged output exactly once,
#      and that the greedy texts equal the single-process run.
#
# Usage: tests/slurm/run-slurm-test.sh   (as root; ENGINE=path/to/engine, default
# target/release/engine; KEEP=1 keeps the work directory; PROMPTS=N, default 48)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ENGINE=${ENGINE:-$ROOT/target/release/engine}
PROMPTS=${PROMPTS:-48}
WORK=$(mktemp -d /tmp/engine-slurm-test.XXXXXX)
# Greedy, short outputs; few requests in flight so that results trickle out and a
# requeue lands mid-run.
JOB_ARGS="--max-in-flight 4 --temperature 0"
T0=$(date +%s)

# shellcheck source=tests/slurm/cluster.sh
. "$ROOT/tests/slurm/cluster.sh"
cleanup() {
  slurm_stop
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
say() { echo "[slurm-test $(($(date +%s) - T0))s] $*"; }
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/out/logs/*.log; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
  done
  squeue >&2 || true
  exit 1
}
# wait_for SECONDS COMMAND...: run COMMAND five times a second until it succeeds.
wait_for() {
  local i limit=$(($1 * 5))
  shift
  for ((i = 0; i < limit; i++)); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  return 1
}
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }
state() { squeue -h -j "$1" -o '%T' 2>/dev/null | head -1; }
has_results() { [ "$(lines "$1")" -ge "$2" ]; }
in_state() { [ "$(state "$1")" = "$2" ]; }
all_done() { [ -z "$(squeue -h -j "$1" 2>/dev/null)" ]; }

[ -x "$ENGINE" ] || fail "no engine binary at $ENGINE (cargo build --release)"
say "install slurm-wlm and munge (if missing)"
slurm_install

say "input: $PROMPTS prompts"
python3 - "$PROMPTS" >"$WORK/prompts.jsonl" <<'EOF'
import json, sys
topics = ["the sea", "a red fox", "bread", "rain in April", "a lighthouse", "chess",
          "the moon", "a small robot", "tea", "winter", "a violin", "maps"]
for i in range(int(sys.argv[1])):
    req = {"id": f"p{i:03d}" if i % 4 else i,
           "prompt": f"Write one sentence about {topics[i % len(topics)]} ({i}).",
           "max_tokens": 6 + (i * 5) % 13}
    print(json.dumps(req))
EOF

say "reference: the whole input in one process"
# shellcheck disable=SC2086
"$ENGINE" run --input "$WORK/prompts.jsonl" --output "$WORK/reference.jsonl" --no-progress \
  $JOB_ARGS 2>"$WORK/reference.log" || fail "reference run: $(tail -n 3 "$WORK/reference.log")"

say "start slurmctld and slurmd"
slurm_start "$WORK/slurm" 3 || fail "slurm did not start"
sinfo

say "submit the array and the merge (examples/slurm/submit.sh)"
OUT="$WORK/out"
submitted=$(cd "$WORK" && INPUT=prompts.jsonl OUT_DIR="$OUT" SHARDS=3 ENGINE="$ENGINE" \
  DEVICE=cpu ENGINE_ARGS="$JOB_ARGS" RAYON_NUM_THREADS=1 \
  bash "$ROOT/examples/slurm/submit.sh" --cpus-per-task=1)
echo "$submitted"
read -r ARRAY MERGE < <(echo "$submitted" | sed -n 's/^submitted array job \([0-9]*\) .* merge job \([0-9]*\)$/\1 \2/p')
[ -n "${MERGE:-}" ] || fail "cannot read the job ids from submit.sh"

TASK="${ARRAY}_1"
SHARD1="$OUT/shard-1-of-3.jsonl"
say "wait for task $TASK to write results, then requeue it"
wait_for 600 has_results "$SHARD1" 2 || fail "task $TASK wrote nothing"
in_state "$TASK" RUNNING || fail "task $TASK finished before the requeue: more PROMPTS"
before=$(lines "$SHARD1")
scontrol requeue "$TASK"
say "requeued $TASK after $before result(s)"
# A requeued job goes back to the queue with a begin time about two minutes ahead,
# set once its processes are gone: wait for that, then release it now.
wait_for 60 in_state "$TASK" PENDING || fail "task $TASK was not requeued"
scontrol update JobId="$TASK" StartTime=now

say "wait for the array and the merge"
wait_for 900 all_done "$ARRAY,$MERGE" || fail "jobs still queued"
merge_exit=$(scontrol show job "$MERGE" | sed -n 's/.* ExitCode=\([0-9]*\):.*/\1/p')
cat "$OUT/logs/merge.log"
[ "$merge_exit" = 0 ] || fail "merge job exit status $merge_exit (want 0: complete)"

say "check: task 1 ran twice and resumed; each task had its own GPU"
log1="$OUT/logs/shard-1.log"
grep -q "restart 1," "$log1" || fail "task 1 did not run again after the requeue"
grep -q "resuming: [0-9]* results already in" "$log1" || fail "task 1 did not resume"
grep -h "CUDA_VISIBLE_DEVICES" "$OUT"/logs/shard-*.log
if grep -h "CUDA_VISIBLE_DEVICES=unset" "$OUT"/logs/shard-*.log; then
  fail "a task got no GPU from Slurm"
fi

say "check: every id exactly once, texts equal the single-process run"
python3 - "$WORK/prompts.jsonl" "$OUT/merged.jsonl" "$WORK/reference.jsonl" <<'EOF' || fail "merged output differs"
import json, sys
def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]
ids = [json.dumps(r["id"]) for r in records(sys.argv[1])]
merged, reference = records(sys.argv[2]), records(sys.argv[3])
got = [json.dumps(r["id"]) for r in merged]
dups = sorted({i for i in got if got.count(i) > 1})
lost = sorted(set(ids) - set(got))
print(f"input {len(ids)} ids, merged {len(got)} results, {len(lost)} lost, {len(dups)} duplicated")
assert not dups and not lost and len(got) == len(ids), (lost, dups)
want = {json.dumps(r["id"]): r["text"] for r in reference}
diff = [i for i in got if want[i] != next(r["text"] for r in merged if json.dumps(r["id"]) == i)]
print(f"texts equal to the single-process run: {len(got) - len(diff)} of {len(got)}")
assert not diff, diff[:5]
EOF
say "PASS (requeued task 1 after $before result(s))"

#!/usr/bin/env bash
# What HTTP and serving add: tests/serve.rs's endpoint test (three alternating pairs of
# `engine bench` in-process and `engine bench --endpoint` against `engine serve`, same
# workload, one compute thread on both sides), with its timing target asserted: the
# median decode ITL p50 ratio within 10 %. Run it on a quiet machine; it prints each
# pair's ITL ratio and TTFT difference (the serving overhead) and `engine report A B`.
#
#   bash benches/serve-overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE_SERVE_OVERHEAD_CHECK=1 cargo test --release --workspace --test serve -- \
  endpoint --nocapture

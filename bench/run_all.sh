#!/usr/bin/env bash
# Every measurement of bench/README.md "Results", in order, printing as it goes (about 9 minutes, plus
# ~5 for `floor` (needs `wrk`), ~10 for `growth` — it seeds two databases of 1M spend events — and ~2 for `memory`).
# Output is also appended to $OUT/results.txt (default /tmp/spendgate-bench), with py-spy profiles there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-/tmp/spendgate-bench}
mkdir -p "$OUT"
run() { echo "\$ $*" | tee -a "$OUT/results.txt"; "$@" 2>>"$OUT/stderr.txt" | tee -a "$OUT/results.txt"; echo | tee -a "$OUT/results.txt"; }
if [ "${1:-all}" = all ] || [ "$1" = micro ]; then
  run $PY bench/lua_floor.py
  run $PY bench/policy_eval.py
  run $PY bench/redis_pool.py
  run $PY bench/redis_writes.py
  run $PY bench/cost_split.py --end-users 1
  run $PY bench/cost_split.py
  run $PY bench/cost_split.py --no-pre-ping
fi
if [ "${1:-all}" = all ] || [ "$1" = load ]; then
  run $PY bench/decisions.py --replicas 2 --rates 50,100,250,500 --duration 8
  run $PY bench/decisions.py --replicas 1 --rates 50,100,250 --duration 8
  run $PY bench/decisions.py --replicas 2 --closed-loop --concurrency 4,16,64 --duration 8
  run $PY bench/decisions.py --replicas 1 --closed-loop --concurrency 4,16,64 --duration 8
fi
if [ "${1:-all}" = all ] || [ "$1" = floor ]; then
  run $PY bench/floor.py  # needs wrk (apt-get install -y wrk); ~5 minutes
fi
if [ "${1:-all}" = all ] || [ "$1" = growth ]; then
  run $PY bench/data_growth.py --plans
fi
if [ "${1:-all}" = all ] || [ "$1" = memory ]; then
  run $PY bench/memory.py --replicas 2 --rate 40 --steps 3 --duration 20
fi
if [ "${1:-all}" = all ] || [ "$1" = profile ]; then
  run $PY bench/decisions.py --replicas 1 --closed-loop --concurrency 16 --duration 10 --py-spy "$OUT/pyspy"
  run $PY bench/profile_summary.py "$OUT/pyspy-closed-1r-redis-c16.txt" --top 16
fi

#!/usr/bin/env bash
# `make test`'s suites, run side by side rather than one after another:
#   * the unit suite;
#   * the integration suite in two halves, each its own pytest session with its own Ray head and
#     MLflow server (every port is a free one, every temp dir and LMREC_HOME its own): the serving
#     half (Serve apps, their faults and metrics, the exploration loop over served logs) and the
#     training half (everything else: Train, Tune, Jobs, the pipeline, several nodes).
# Much of an integration test's wall time is waiting (Ray starting actors, replicas loading models,
# the retries and recoveries under test), which the other sessions fill. No unit test starts Ray,
# Serve or a server on a fixed port, and the two integration halves share nothing but the CPUs.
#   tests/run_suites.sh PYTHON [pytest args...]
set -uo pipefail
py=$1
shift
serving=(tests/integration/test_serve_*.py tests/integration/test_metrics.py tests/integration/test_exploration_loop.py)
ignore=()
for f in "${serving[@]}"; do ignore+=("--ignore=$f"); done
unit_log=$(mktemp -t lmrec-unit-XXXXXX.log)
serving_log=$(mktemp -t lmrec-serving-XXXXXX.log)
start=$(date +%s)
"$py" -m pytest tests/unit --durations=10 "$@" >"$unit_log" 2>&1 &
unit_pid=$!
"$py" -m pytest "${serving[@]}" --durations=15 "$@" >"$serving_log" 2>&1 &
serving_pid=$!
"$py" -m pytest tests/integration "${ignore[@]}" --durations=15 "$@"
training_rc=$?
wait "$serving_pid"
serving_rc=$?
wait "$unit_pid"
unit_rc=$?
echo "================ integration, serving half (ran beside the training half) ================"
cat "$serving_log"
echo "================ unit suite (ran beside the integration suite) ================"
cat "$unit_log"
rm -f "$unit_log" "$serving_log"
echo "unit: exit $unit_rc; integration training half: exit $training_rc; serving half: exit $serving_rc;" \
  "all suites: $(($(date +%s) - start)) s wall"
[ "$unit_rc" -eq 0 ] && [ "$training_rc" -eq 0 ] && [ "$serving_rc" -eq 0 ]

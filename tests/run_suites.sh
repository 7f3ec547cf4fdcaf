#!/usr/bin/env bash
# `make test`'s suites: the unit suite runs beside the integration suite, not before it. The
# integration suite spends much of its wall time waiting (Ray and Serve starting actors, replicas
# loading models, retries and recoveries it is testing), which the unit suite fills. No unit test
# starts Ray, Serve or a server on a fixed port, so the two do not meet except on the CPUs.
#   tests/run_suites.sh PYTHON [pytest args...]
set -uo pipefail
py=$1
shift
unit_log=$(mktemp -t lmrec-unit-XXXXXX.log)
start=$(date +%s)
"$py" -m pytest tests/unit --durations=10 "$@" >"$unit_log" 2>&1 &
unit_pid=$!
"$py" -m pytest tests/integration --durations=25 "$@"
integration_rc=$?
wait "$unit_pid"
unit_rc=$?
echo "================ unit suite (ran beside the integration suite) ================"
cat "$unit_log"
rm -f "$unit_log"
echo "unit: exit $unit_rc; integration: exit $integration_rc; both suites: $(($(date +%s) - start)) s wall"
[ "$unit_rc" -eq 0 ] && [ "$integration_rc" -eq 0 ]

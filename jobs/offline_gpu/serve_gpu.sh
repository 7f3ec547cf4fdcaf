#!/usr/bin/env bash
# On a lent GPU machine: install Ray from .devbundle, smoke-check Serve, then run the serving
# benchmark with the model replica on the GPU (jobs/device/README.md). From the repository root:
#   bash jobs/device/serve_gpu.sh            # writes $OUT/benchmark_serve_gpu.json (+ .log)
# Knobs (env): GPUS, VARIANTS, LEVELS, REQUESTS, SIZE, BATCH, BUDGET_S (the benchmark's own time limit).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out}
SITE=${SITE:-/tmp/lmrec-site}
mkdir -p "$OUT" "$SITE"
t0=$(date +%s)
if [ ! -d "$SITE/ray" ]; then
  xz -dc .devbundle/ray-*-stripped.tar.xz | tar -C "$SITE" -xf -
  python3 -m pip install -q --no-index --no-deps --target "$SITE" .devbundle/wheels/*.whl
fi
export PYTHONPATH="$PWD/platform:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"
export LMREC_HOME=${LMREC_HOME:-/tmp/lmrec-home}
[ -d .devbundle/data ] && export LMREC_DATA_DIR="$PWD/.devbundle/data"
echo "installed in $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
python3 jobs/device/check_bundle.py 2>&1 | tail -3
timeout "${BUDGET_S:-420}" python3 jobs/benchmark_serve.py --gpus "${GPUS:-1}" --size "${SIZE:-small}" --batch "${BATCH:-64}" \
  --variants "${VARIANTS:-serve_haproxy_throughput_fused}" --levels "${LEVELS:-1,16,64,256}" \
  --requests "${REQUESTS:-1500}" --out "$OUT/benchmark_serve_gpu.json" 2>&1 \
  | grep -v -E "^\s|INFO|WARN" | tee "$OUT/benchmark_serve_gpu.log"
echo "done in $(( $(date +%s) - t0 )) s"

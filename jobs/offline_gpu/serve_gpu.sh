#!/usr/bin/env bash
# On a GPU host with no network and no Ray: install the bundle build_bundle.sh wrote into a virtualenv,
# smoke-check Ray Serve, then run lmrec's serving benchmark with the model replica on the GPU; its whole
# output goes to $OUT/benchmark_serve_gpu.log, the lines without Ray's INFO/WARN chatter to the terminal
# (jobs/offline_gpu/README.md). Either
#   bash lmrec-offline-gpu/serve_gpu.sh [flags]                          # from the unpacked bundle
#   BUNDLE=path/to/lmrec-offline-gpu.tar.xz bash jobs/offline_gpu/serve_gpu.sh [flags]
# Flags go to `python -m lmrec.benchmarks.serve` after the defaults below, so they override them.
# Knobs (env): BUNDLE, PYTHON, WORK, VENV, OUT, LMREC_HOME, LMREC_DATA_DIR, LMREC_SRC (a checkout to run
# lmrec from instead of the bundled wheel), GPUS, SIZE, BATCH, VARIANTS, LEVELS, REQUESTS,
# BUDGET_S (a time limit for the benchmark; 0: none), SKIP_CHECK=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}  # the host's Python that holds torch with CUDA
WORK=${WORK:-${TMPDIR:-/tmp}/lmrec-offline-gpu}
VENV=${VENV:-$WORK/venv}
OUT=${OUT:-$PWD/out}
BUNDLE=${BUNDLE:-$HERE}
t0=$(date +%s)
mkdir -p "$WORK" "$OUT"
if [ -f "$BUNDLE" ]; then  # the archive: unpack it with Python's tarfile (no xz binary needed)
  rm -rf "$WORK/bundle" && mkdir -p "$WORK/bundle"
  "$PYTHON" - "$BUNDLE" "$WORK/bundle" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    try:
        tar.extractall(sys.argv[2], filter="data")
    except TypeError:  # a Python without extraction filters
        tar.extractall(sys.argv[2])
EOF
  BUNDLE="$WORK/bundle/lmrec-offline-gpu"
fi
[ -f "$BUNDLE/bundle.json" ] || { echo "serve_gpu.sh: $BUNDLE is not a bundle: set BUNDLE to what build_bundle.sh wrote" >&2; exit 2; }
"$PYTHON" - "$BUNDLE/bundle.json" <<'EOF'
import json, sys
want = json.load(open(sys.argv[1]))["python"]
have = "%d.%d" % sys.version_info[:2]
if have != want:
    sys.exit(f"serve_gpu.sh: the bundle's wheels are for Python {want}, {sys.executable} is {have}: "
             f"rebuild with TARGET_PYTHON={have}, or set PYTHON")
EOF

# The virtualenv, made once per bundle. It sees the host's own packages (torch with CUDA, numpy, ...)
# behind what the bundle installs; that also holds when the host's Python is itself a virtualenv,
# which `venv --system-site-packages` would not see through.
STAMP=$(cksum < "$BUNDLE/bundle.json")
if [ "$(cat "$VENV/.lmrec-bundle" 2>/dev/null)" != "$STAMP" ]; then
  if [ -e "$VENV" ] && [ ! -f "$VENV/.lmrec-bundle" ]; then
    echo "serve_gpu.sh: $VENV exists and was not made by this script; set VENV elsewhere" >&2; exit 2
  fi
  rm -rf "$VENV"
  if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    PIP=("$VENV/bin/python" -m pip)
  else  # a Python without ensurepip: the host's pip installs into the venv
    "$PYTHON" -m venv --without-pip "$VENV"
    PIP=("$PYTHON" -m pip --python "$VENV/bin/python")
  fi
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PYTHON" -c 'import site, sys
dirs = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
print("import site; list(map(site.addsitedir, %r))" % dirs)' > "$SITE/zz_lmrec_host_site.pth"
  "${PIP[@]}" install -q --no-index --no-deps --disable-pip-version-check "$BUNDLE"/wheels/*.whl
  echo "$STAMP" > "$VENV/.lmrec-bundle"
fi
VPY="$VENV/bin/python"
if [ -n "${LMREC_SRC:-}" ]; then
  LMREC_SRC=$(cd "$LMREC_SRC" && pwd)
  export PYTHONPATH="$LMREC_SRC/platform:$LMREC_SRC${PYTHONPATH:+:$PYTHONPATH}"
fi
export LMREC_HOME=${LMREC_HOME:-$WORK/home}
if [ -d "$BUNDLE/data" ] && [ -z "${LMREC_DATA_DIR:-}" ]; then export LMREC_DATA_DIR="$BUNDLE/data"; fi
echo "installed in $(( $(date +%s) - t0 )) s: $VENV"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$VPY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"
[ "${SKIP_CHECK:-0}" = 1 ] || "$VPY" "$BUNDLE/check_bundle.py" 2>&1 | tail -5
LIMIT=()
[ "${BUDGET_S:-0}" = 0 ] || LIMIT=(timeout "$BUDGET_S")
${LIMIT[@]+"${LIMIT[@]}"} "$VPY" -m lmrec.benchmarks.serve --gpus "${GPUS:-1}" --size "${SIZE:-small}" \
  --batch "${BATCH:-64}" --variants "${VARIANTS:-serve_haproxy_throughput_fused}" --levels "${LEVELS:-1,16,64,256}" \
  --requests "${REQUESTS:-1500}" --out "$OUT/benchmark_serve_gpu.json" "$@" 2>&1 \
  | tee "$OUT/benchmark_serve_gpu.log" | grep -v -E "INFO|WARN|^\s*$"
echo "done in $(( $(date +%s) - t0 )) s"

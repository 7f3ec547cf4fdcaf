# syntax=docker/dockerfile:1
# The lmrec image: the official Ray 2.60 image plus the lmrec wheel, torch, and the PostgreSQL and S3
# clients the MLflow server needs. The KubeRay manifests (docs/kuberay/) and docs/cluster.md name it;
# docs/cluster.md says how to push it. From the repository root:
#
#   docker build -t lmrec:0.1.0 .                               # CUDA (default): GPU and CPU pods alike
#   docker build --build-arg VARIANT=cpu -t lmrec:0.1.0-cpu .   # CPU only: smaller, no NVIDIA runtime
#
# VARIANT picks the Ray base (rayproject/ray:<RAY_VERSION>-<PYTHON_TAG>-<VARIANT>) and the PyTorch wheel
# index together: `cpu` -> CPU wheels; `gpu` (Ray's default CUDA base) -> the wheels of TORCH_CUDA; a CUDA tag
# such as `cu128` -> that CUDA for both. torch wheels carry their own CUDA libraries; the node's NVIDIA driver
# must support that CUDA (13.x needs a newer driver than 12.x). Pins: Ray by the base tag, torch and lmrec's
# dependencies by constraints.txt, the MLflow server's clients below: a rebuild installs the same versions.

ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG VARIANT=gpu

# Builder: the wheel, from exactly the files a wheel needs (tests/unit/test_packaging.py builds it the same
# way), in the home of the image's user `ray`, who runs pip here; only the wheel leaves this stage.
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT} AS builder
WORKDIR /home/ray
COPY --chown=ray:users pyproject.toml README.md /home/ray/
COPY --chown=ray:users platform/ /home/ray/platform/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels .

# Runtime: the same base, the wheel installed (no source tree), the serve-deploy files for RayService.
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=cu128
LABEL org.opencontainers.image.title="lmrec" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="Train, compress, tune and serve large-model sequential recommenders on Ray."
# ray:users of the Ray image, numeric so that Kubernetes can check runAsNonRoot; pip installs into its
# own Python environment.
USER 1000:100
WORKDIR /home/ray
RUN --mount=type=bind,from=builder,source=/home/ray/wheels,target=/tmp/wheels \
    --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    case "${VARIANT}" in \
      cpu) torch_index=cpu ;; \
      gpu) torch_index="${TORCH_CUDA}" ;; \
      cu*) torch_index="${VARIANT}" ;; \
      *) echo "VARIANT must be cpu, gpu or a CUDA tag such as cu128, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
    && pip install --no-cache-dir --constraint /tmp/constraints.txt \
        --index-url "https://download.pytorch.org/whl/${torch_index}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir --constraint /tmp/constraints.txt /tmp/wheels/lmrec-*.whl \
        psycopg2-binary==2.9.13 boto3==1.44.18 \
    && lmrec models > /dev/null
# The serve-deploy YAMLs, for `serve deploy` from inside the image; the app they name
# (lmrec.serving.app:build_app) comes from the installed wheel.
COPY --chown=ray:users serve_apps/ /home/ray/lmrec/serve_apps/

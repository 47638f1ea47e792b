# velnet's GPU image: TensorFlow with CUDA from the base image, velnet with its nbodykit /
# fastpm stack from a wheelhouse made on the host, so the build needs no network beyond the
# base's own package manager (apt). README, "Running velnet on a GPU node".
#
#   make wheelhouse-docker        # dist/wheelhouse-docker-py3.11 (on a host that reaches PyPI)
#   docker build -t velnet-gpu .  # base tensorflow/tensorflow:2.21.0-gpu
#   docker run --gpus all -v $PWD/runs:/runs velnet-gpu python -m experiments.wu2021 --out /runs/wu2021
#   make docker-check             # this Dockerfile on a local Debian 12 base, and a tiny job in it
#
# Build arguments:
#   BASE_IMAGE  an image with Python 3 and apt (Debian or Ubuntu). Where it lacks TensorFlow,
#               tensorflow-cpu comes from the wheelhouse, so the same file builds on plain Debian.
#   WHEELHOUSE  the folder `make wheelhouse-docker` made, for the base's Python version.
#   JAX         cpu (default: jax and jaxlib, Keras's JAX backend on the CPU), none, or cuda12
#               (also jax-cuda12-plugin and -pjrt, using the CUDA libraries of the base; the
#               wheelhouse must be made with `make wheelhouse-docker DOCKER_JAX=cuda12`).
ARG BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu

# --- build stage: the virtual environment, from the wheelhouse alone ---
FROM ${BASE_IMAGE} AS build
# Runtime libraries of the wheels compiled on the host (Open MPI through openmpi-bin, GSL,
# OpenMP), and Python where the base has none (never apt's python3 over the base's own).
# Kept identical to the final stage's line so that Docker reuses the layer.
RUN pkgs="openmpi-bin libgsl27 libgomp1 ca-certificates"; \
    command -v python3 >/dev/null || pkgs="python3 $pkgs"; \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
 && rm -rf /var/lib/apt/lists/*
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG WHEELHOUSE=dist/wheelhouse-docker-py3.11
ARG JAX=cpu
COPY ${WHEELHOUSE} /tmp/wheelhouse
# A venv that sees the base's packages (TensorFlow with CUDA in a TensorFlow image), with
# pip bootstrapped from its own wheel (the base may lack ensurepip).
RUN set -eu; W=/tmp/wheelhouse; V=/opt/velnet/venv; \
    [ -f "$W/TARGET" ] || { echo "velnet image: $W has no TARGET file: not a wheelhouse of 'make wheelhouse-docker'" >&2; exit 1; }; \
    . "$W/TARGET"; \
    have=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
    [ "$have" = "$PYTHON_VERSION" ] || { echo "velnet image: the base has Python $have, the wheelhouse $W is for Python $PYTHON_VERSION: make it with 'make wheelhouse-docker DOCKER_PYTHON=$have' on a host with that Python" >&2; exit 1; }; \
    glibc=$(python3 -c 'import platform; print(platform.libc_ver()[1])'); \
    python3 -c "import sys; v=lambda s: tuple(map(int, s.split('.'))); sys.exit(v('$glibc') < v('$GLIBC_NEEDED'))" \
      || { echo "velnet image: the base has glibc $glibc; the wheels compiled on the host need $GLIBC_NEEDED" >&2; exit 1; }; \
    python3 -m venv --without-pip --system-site-packages "$V"; \
    "$V/bin/python" "$(ls $W/pip-*.whl)/pip" install -q --no-index --no-warn-script-location $W/pip-*.whl; \
    pip=("$V/bin/python" -m pip install --no-index --find-links "$W" -c "$W/constraints.txt" --no-warn-script-location); \
    extra="tensorboard"; backends="tensorflow"; \
    if python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is None)'; then \
      echo "velnet image: TensorFlow from the base: $(python3 -c 'import importlib.metadata as m; print(m.version("tensorflow"))' 2>/dev/null || echo '?')"; \
    else \
      echo "velnet image: the base has no TensorFlow: tensorflow-cpu from the wheelhouse"; extra="$extra tensorflow-cpu"; \
    fi; \
    case $JAX in \
      none) ;; \
      cpu) extra="$extra jax jaxlib"; backends="$backends jax" ;; \
      cuda12) extra="$extra jax jaxlib jax-cuda12-plugin jax-cuda12-pjrt"; backends="$backends jax" ;; \
      *) echo "velnet image: JAX must be none, cpu or cuda12. Received: $JAX" >&2; exit 1 ;; \
    esac; \
    "${pip[@]}" "velnet[tune,prep]" $extra; \
    echo "$backends" > /opt/velnet/backends; \
    "$V/bin/python" -m pip check || true; \
    find "$V" -name __pycache__ -prune -exec rm -rf {} +

# --- the image ---
FROM ${BASE_IMAGE}
RUN pkgs="openmpi-bin libgsl27 libgomp1 ca-certificates"; \
    command -v python3 >/dev/null || pkgs="python3 $pkgs"; \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/velnet /opt/velnet
COPY benchmarks /opt/velnet/lib/benchmarks
ENV PATH=/opt/velnet/venv/bin:$PATH \
    PYTHONPATH=/opt/velnet/lib \
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl_vader_single_copy_mechanism=none \
    TF_CPP_MIN_LOG_LEVEL=2
LABEL org.opencontainers.image.title="velnet" \
      org.opencontainers.image.description="velnet: cosmic velocity fields from density with 3D U-nets (Keras 3), with nbodykit and fastpm"
WORKDIR /runs
# The Wu et al. 2021 experiment into the mounted /runs (docker run -v HOST_DIR:/runs ...).
CMD ["python", "-m", "experiments.wu2021", "--out", "/runs/wu2021"]

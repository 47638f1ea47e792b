#!/usr/bin/env bash
# Install velnet and its stack (TensorFlow, Keras, keras-tuner, nbodykit, fastpm) into a
# virtual environment, on a Debian 12 machine that reaches PyPI and Debian but not GitHub.
#
# pfft-python and classylss download C sources from GitHub at build time; we give them
# those sources from two PyPI sdists instead (pfft-python 0.1.12 bundles PFFT+FFTW, the
# classy sdist holds the CLASS tree). Every wheel built here is kept in a wheelhouse, so a
# second install, or an install on an air-gapped node given that folder, takes seconds.
#
# Environment: VELNET_VENV (default .venv), VELNET_WHEELHOUSE (default
# ~/.cache/velnet/wheelhouse), PYTHON (default python3).
set -euo pipefail

VENV=$(realpath -m "${VELNET_VENV:-.venv}")
WHEELHOUSE=${VELNET_WHEELHOUSE:-$HOME/.cache/velnet/wheelhouse}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PINS="$HERE/scripts/requirements.txt"
mkdir -p "$WHEELHOUSE"

log() { printf '[install] %s\n' "$*"; }

# 1. System libraries: MPI, FFTW, GSL.
if ! command -v mpicc >/dev/null || [ ! -e /usr/include/fftw3.h ] || [ ! -e /usr/include/gsl/gsl_math.h ]; then
  log "apt: libopenmpi-dev openmpi-bin libfftw3-dev libgsl-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libopenmpi-dev openmpi-bin libfftw3-dev libgsl-dev >/dev/null
fi
# Open MPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# 2. The virtual environment and the build tools the C packages need.
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --find-links "$WHEELHOUSE" -c "$PINS" pip setuptools wheel numpy 'cython<3'
if ! ls "$WHEELHOUSE"/mpi4py-*.whl >/dev/null 2>&1; then
  log "building mpi4py against the system MPI"
  "${PIP[@]}" wheel -q --no-deps --no-binary mpi4py -w "$WHEELHOUSE" -c "$PINS" mpi4py
fi
"${PIP[@]}" install -q --no-index --find-links "$WHEELHOUSE" mpi4py

# 3. pfft-python and classylss from repacked sdists.
build_from_repacked() {  # $1 package name glob in the wheelhouse, $2 function that prepares the source
  if ls "$WHEELHOUSE"/$1-*.whl >/dev/null 2>&1; then return; fi
  local tmp; tmp=$(mktemp -d)
  ( cd "$tmp" && "$2" )
  log "building $1 (minutes)"
  "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$WHEELHOUSE" "$tmp/src"
  rm -rf "$tmp"
}
fetch_sdist() { "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -d . "$1"; }
prepare_pfft() {
  fetch_sdist pfft-python==0.1.12; mkdir old && tar xzf pfft*0.1.12.tar.gz -C old
  fetch_sdist pfft-python==0.1.24; mkdir new && tar xzf pfft*0.1.24.tar.gz -C new
  mv new/* src
  mkdir lib && tar xzf old/*/depends/pfft-1.0.8-alpha2-fftw3.tar.gz -C lib
  mv lib/* lib/pfft-1.0.8-alpha3-fftw3-2don2d
  tar czf src/depends/pfft-1.0.8-alpha3-fftw3-2don2d.tar.gz -C lib pfft-1.0.8-alpha3-fftw3-2don2d
}
prepare_classylss() {
  fetch_sdist classylss==0.3.1; mkdir new && tar xzf classylss-*.tar.gz -C new && mv new/* src
  fetch_sdist classy==3.3.1.0; mkdir class && tar xzf classy-3*.tar.gz -C class
  mv class/* class/class_public-3.3.1
  tar czf src/depends/class-v3.3.1.tar.gz -C class class_public-3.3.1
}
MAKEFLAGS="-j$(nproc)" build_from_repacked pfft_python prepare_pfft
build_from_repacked classylss prepare_classylss

# 4. The other compiled packages, built once into the wheelhouse, then everything
#    (Corrfunc's own Makefile fails under a parallel MAKEFLAGS).
"${PIP[@]}" wheel -q --no-build-isolation --find-links "$WHEELHOUSE" -w "$WHEELHOUSE" -c "$PINS" \
  pmesh mpsort kdcount bigfile mcfit Corrfunc fastpm
log "installing velnet and its dependencies"
"${PIP[@]}" install -q --no-build-isolation --find-links "$WHEELHOUSE" -c "$PINS" -e "$HERE[all]"
log "done: $VENV"

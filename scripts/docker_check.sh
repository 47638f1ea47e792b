#!/usr/bin/env bash
# `make docker-check`: build velnet's GPU image (the Dockerfile) on a local Debian 12 base and
# run it: `velnet --help`, the import of every backend the image claims, and a tiny
# end-to-end job (simulate, paint, prep, baseline, train one epoch, predict, evaluate).
#
# On a machine without Docker it installs docker.io (apt, as root) and starts dockerd. The
# base image is made with debootstrap from the Debian mirror of apt's sources, once (kept as
# $VELNET_DOCKER_BASE). The image installs velnet from the wheelhouse of `make
# wheelhouse-docker`, which this script makes first (PyPI, or pip's cache, must be reachable).
# A failed build stops the check with the build's own output and exit status.
#
# Environment: VELNET_DOCKER_BASE (default velnet-base:bookworm), VELNET_IMAGE (default
# velnet-gpu:check), PYTHON (default .venv/bin/python), DOCKER_CHECK_DIR (default
# runs/docker-check: logs, timings.json and the tiny job's files).
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
BASE=${VELNET_DOCKER_BASE:-velnet-base:bookworm}
IMAGE=${VELNET_IMAGE:-velnet-gpu:check}
PYTHON=${PYTHON:-$HERE/.venv/bin/python}
DIR=$(realpath -m "${DOCKER_CHECK_DIR:-runs/docker-check}")
WHEELHOUSE=dist/wheelhouse-docker-py3.11
mkdir -p "$DIR"
START=$(date +%s)
TIMINGS=()

log() { printf '[docker-check] %s\n' "$*"; }
die() { printf '[docker-check] error: %s\n' "$*" >&2; exit 1; }
step() {  # step NAME COMMAND...: run in a subshell with errexit, time, record; stop on failure
  local name=$1 t0 rc; shift
  log "--- $name"
  t0=$(date +%s)
  set +e
  ( set -e; "$@" )
  rc=$?
  set -e
  TIMINGS+=("\"$name\": $(( $(date +%s) - t0 ))")
  if [ "$rc" != 0 ]; then
    log "$name: FAILED (exit $rc) after $(( $(date +%s) - t0 )) s; its output is above (logs in $DIR)"
    summary FAILED
    exit "$rc"
  fi
  log "$name: $(( $(date +%s) - t0 )) s"
}
as_root() { [ "$(id -u)" = 0 ] || die "$* needs root (apt-get, dockerd); run as root or start Docker first"; }

ensure_docker() {
  if ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    as_root "installing docker.io"
    log "apt-get install docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker.io >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    as_root "starting dockerd"
    log "starting dockerd (log: $DIR/dockerd.log)"
    setsid nohup dockerd >"$DIR/dockerd.log" 2>&1 < /dev/null &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -20 "$DIR/dockerd.log" >&2; die "dockerd did not start"; }
  fi
  log "Docker $(docker version -f '{{.Server.Version}}'), storage $(docker info -f '{{.Driver}}')"
}

debian_mirror() {  # the first Debian URI in apt's sources (deb822 or one-line format)
  local uri
  uri=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v -- '-security' | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -h -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                         2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

ensure_base() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base image $BASE exists (docker rmi $BASE to remake it)"
    return
  fi
  as_root "debootstrap"
  command -v debootstrap >/dev/null || {
    log "apt-get install debootstrap"
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null; }
  local mirror rootfs
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/velnet-rootfs.XXXXXX")
  log "debootstrap --variant=minbase bookworm from $mirror (log: $DIR/debootstrap.log)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$DIR/debootstrap.log" 2>&1; then
    tail -20 "$DIR/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed"
  fi
  if ! tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null; then
    rm -rf "$rootfs"; die "docker import of the debootstrapped tree failed"
  fi
  rm -rf "$rootfs"
  log "base image $BASE: $(docker image inspect -f '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1/1e6}')"
}

make_wheelhouse() {
  [ -x "$PYTHON" ] || die "no $PYTHON: run 'make install' first (the wheelhouse is made from that environment)"
  PYTHON=$PYTHON bash scripts/wheelhouse.sh --profile docker --python-version 3.11 --out "$WHEELHOUSE"
}

build_image() {
  log "docker build --build-arg BASE_IMAGE=$BASE -t $IMAGE . (log: $DIR/build.log)"
  # The build's own output goes to the terminal and the log; its status is the check's.
  DOCKER_BUILDKIT=0 docker build --build-arg "BASE_IMAGE=$BASE" --build-arg "WHEELHOUSE=$WHEELHOUSE" \
    -t "$IMAGE" . 2>&1 | tee "$DIR/build.log"
}

in_image() { docker run --rm -v "$DIR/job:/runs" "$IMAGE" "$@"; }

check_help() { in_image velnet --help; }

check_backends() {  # in one container: each backend the image claims (/opt/velnet/backends) and the stack
  in_image bash -euc '
    echo "the image claims the Keras backends: $(cat /opt/velnet/backends)"
    for b in $(cat /opt/velnet/backends); do
      KERAS_BACKEND=$b python -c "
import keras
assert keras.backend.backend() == \"$b\", keras.backend.backend()
x = keras.ops.convert_to_tensor([[1.0, 2.0], [3.0, 4.0]])
print(\"$b: keras\", keras.__version__, \"matmul sum\", float(keras.ops.sum(keras.ops.matmul(x, x))))"
    done
    python -c "
import importlib.metadata as m
import fastpm, mpi4py.MPI, nbodykit.lab, keras_tuner, tensorboard, velnet.cli
print(\"imports:\", \", \".join(f\"{p} {m.version(p)}\" for p in (\"nbodykit\", \"fastpm\", \"mpi4py\", \"keras\", \"keras-tuner\", \"velnet\")))"'
}

tiny_job() {
  rm -rf "$DIR/job"; mkdir -p "$DIR/job"
  # The smallest sizes the command-line tests use: 64 Mpc/h, 32^3 particles, 32^3 cells, 16^3 tiles.
  in_image bash -euxc '
    mpirun -n 2 velnet simulate --box 64 --particles 32 --steps 4 --seed 1 --out sim1
    for s in 2 3; do velnet simulate --box 64 --particles 32 --steps 4 --seed $s --out sim$s; done
    for s in 1 2 3; do velnet paint sim$s/snapshot_z0.000 --nmesh 32 --out box$s.h5; done
    velnet prep box1.h5 box2.h5 --split train val --tile 16 --out data
    velnet baseline box1.h5 --radii 0 2 4 --out baseline.json
    velnet train data --preset tiny --epochs 1 --steps-per-epoch 2 --out model
    velnet predict box3.h5 model/model.keras --out pred3.h5
    velnet evaluate box3.h5 pred3.h5 --names U-net --baseline baseline.json --smoothing 2 --out report
    head -20 report/report.md'
  [ -s "$DIR/job/report/report.md" ] || die "the tiny job wrote no report"
}

summary() {  # summary [FAILED]
  local total=$(( $(date +%s) - START )) size result=${1:-passed}
  size=$(docker image inspect -f '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
  printf '{"result": "%s", "image": "%s", "base": "%s", "image_bytes": %s, "total_s": %s, "steps_s": {%s}, "date": "%s"}\n' \
    "$result" "$IMAGE" "$BASE" "$size" "$total" "$(IFS=,; echo "${TIMINGS[*]}")" "$(date -u +%FT%TZ)" \
    > "$DIR/timings.json"
  if [ "$result" = passed ]; then
    log "image $IMAGE: $(awk -v s="$size" 'BEGIN {printf "%.2f GB", s/1e9}'), default command: $(docker image inspect -f '{{json .Config.Cmd}}' "$IMAGE")"
    # The build stage and the images this tag replaced stay behind untagged (3.5 + 2.9 GB a run).
    docker image prune -f >/dev/null || true
  fi
  log "$result in $((total / 60)) min $((total % 60)) s ($DIR/timings.json)"
}

step docker ensure_docker
step base ensure_base
step wheelhouse make_wheelhouse
step build build_image
step help check_help
step backends check_backends
step tiny-job tiny_job
summary

#!/usr/bin/env bash
# Gather into one folder everything velnet needs that a target node lacks, for a named
# CPython version and platform, so the node installs with no network (see INSTALL.txt,
# written into the folder). Run on a machine that reaches PyPI.
#
# Profiles (the air-gapped GPU node velnet plans for: Python 3.12, JAX, PyTorch, no TensorFlow):
#   gpu-node  a node with numpy, h5py, matplotlib, scipy, JAX and PyTorch: keras and
#             keras-tuner with the small dependencies that stack lacks, google-crc32c,
#             tqdm and velnet's own wheel (about 16 MB: grpcio 7, keras 2.4, velnet 3.3).
#   prep      gpu-node plus the nbodykit / fastpm stack to build on the node: the mpich
#             and mpi4py wheels, nbodykit and its dependencies but pandas (12 MB; the
#             node's must do) and Corrfunc (pair counts only), the sdists of pmesh, mpsort,
#             kdcount, bigfile, fastpm and mcfit, and the pfft-python and classylss sources
#             repacked with the C sources they would fetch from GitHub (made by
#             scripts/install.sh's own functions); about 60 MB.
#   docker    what the Dockerfile installs: every package of the PYTHON environment (velnet's
#             tested versions, pinned in the folder's constraints.txt), the compiled ones
#             from install.sh's wheelhouse ($VELNET_WHEELHOUSE, default
#             ~/.cache/velnet/wheelhouse), velnet's own wheel and pip's; tensorflow-cpu for a
#             base without TensorFlow; with --jax cuda12 also jax-cuda12-plugin and -pjrt.
#             For PYTHON's own version only (--python-version must match it; default 3.11);
#             TARGET in the folder names it and the oldest glibc the compiled wheels run on.
#             About 700 MB (tensorflow-cpu is 260 of it).
#
# Usage: scripts/wheelhouse.sh [--profile gpu-node|prep|docker] [--python-version 3.12]
#            [--platform "manylinux2014_x86_64 manylinux_2_28_x86_64"] [--out DIR]
#            [--add "PKG ..."] [--max-mb 64] [--jax cpu|cuda12]
#   --add: more binary wheels to carry (e.g. "pandas" for a node without it).
# Environment: PYTHON (default .venv/bin/python, else python3; the prep profile needs
# numpy, cython<3 and mpi4py in it to read the sdists' metadata).
set -euo pipefail
shopt -s nullglob

HERE=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=gpu-node
PYVER=""
# pip does not widen a manylinux tag to older ones, so name both: most wheels are
# manylinux2014, a few (mpich, numexpr) manylinux_2_28 only. The node needs glibc >= 2.28.
PLATFORMS="manylinux2014_x86_64 manylinux_2_28_x86_64"
OUT=""
MAX_MB=""
ADD=""
JAX=cpu

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --profile) PROFILE=$2; shift 2 ;;
    --python-version) PYVER=$2; shift 2 ;;
    --platform) PLATFORMS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --max-mb) MAX_MB=$2; shift 2 ;;
    --add) ADD=$2; shift 2 ;;
    --jax) JAX=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "wheelhouse: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case $PROFILE in
  gpu-node | prep) PYVER=${PYVER:-3.12}; MAX_MB=${MAX_MB:-64} ;;
  docker) PYVER=${PYVER:-3.11}; MAX_MB=${MAX_MB:-4096} ;;
  *) echo "wheelhouse: --profile must be gpu-node, prep or docker. Received: $PROFILE" >&2; exit 2 ;;
esac
case $JAX in
  cpu | cuda12) ;;
  *) echo "wheelhouse: --jax must be cpu or cuda12. Received: $JAX" >&2; exit 2 ;;
esac
OUT=$(realpath -m "${OUT:-$HERE/dist/wheelhouse-$PROFILE-py$PYVER}")
PYTHON=${PYTHON:-$HERE/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
PIP=("$PYTHON" -m pip --disable-pip-version-check)
PINS="$HERE/scripts/requirements.txt"
TARGET=(--only-binary :all: --python-version "$PYVER" --implementation cp)
for p in $PLATFORMS; do TARGET+=(--platform "$p"); done

log() { printf '[wheelhouse] %s\n' "$*"; }

# What each profile's node lacks. keras: absl-py, rich (markdown-it-py, mdurl, pygments),
# namex, optree; keras-tuner: kt-legacy, protobuf, grpcio, requests (and its four), six
# (imported though not declared); velnet: google-crc32c, tqdm.
GPU_NODE_WHEELS=(keras namex optree absl-py rich markdown-it-py mdurl pygments
                 keras-tuner kt-legacy six protobuf grpcio requests charset-normalizer idna
                 urllib3 certifi google-crc32c tqdm)
BUILD_WHEELS=(mpich mpi4py setuptools wheel)  # to build the sdists with --no-build-isolation
PREP_WHEELS=(nbodykit numexpr astropy pyerfa astropy-iers-data pyyaml dask click cloudpickle
             fsspec toolz partd locket cachey HeapDict)
PREP_SDISTS=(pmesh mpsort kdcount bigfile fastpm mcfit)

mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d "$(dirname "$OUT")/.wheelhouse.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

START=$(date +%s)
if [ "$PROFILE" = docker ]; then
  have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$have" != "$PYVER" ]; then
    echo "wheelhouse: the docker profile carries the compiled wheels of $PYTHON (Python $have);" \
         "--python-version $PYVER needs PYTHON set to a Python $PYVER environment made by" \
         "scripts/install.sh" >&2
    exit 2
  fi
  CACHE=${VELNET_WHEELHOUSE:-$HOME/.cache/velnet/wheelhouse}
  log "docker: the $PYTHON environment's packages for CPython $PYVER (compiled ones from $CACHE)"
  # Every installed distribution at its installed version, but velnet itself (its wheel is
  # built below) and anything installed from a path. --all: pip, setuptools and wheel too.
  "${PIP[@]}" freeze --all --exclude-editable | grep -v -i -E '^(velnet)==| @ |^-e ' \
    > "$tmp/constraints.txt"
  extra=()
  if [ "$JAX" = cuda12 ]; then
    jaxlib=$(sed -n 's/^jaxlib==//p' "$tmp/constraints.txt")
    [ -n "$jaxlib" ] || { echo "wheelhouse: --jax cuda12 needs jaxlib in $PYTHON's environment" >&2; exit 2; }
    extra=("jax-cuda12-plugin==$jaxlib" "jax-cuda12-pjrt==$jaxlib")
  fi
  # The wheels of install.sh's wheelhouse are taken as they are, the very build the
  # environment installed where there are two (mpi4py: compiled here, and PyPI's); pip
  # wheel fetches the rest.
  "$PYTHON" - "$tmp/constraints.txt" "$CACHE" "$tmp" > "$tmp/.fetch.txt" <<'PYEOF'
import importlib.metadata, pathlib, re, shutil, sys
pins, cache, out = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
built = {}
for whl in cache.glob("*.whl"):
    name, version = whl.name.split("-")[:2]
    built.setdefault((norm(name), version), []).append(whl)
def installed_tags(name):
    try:
        wheel = importlib.metadata.distribution(name).read_text("WHEEL") or ""
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {t.split(":", 1)[1].strip() for t in wheel.splitlines() if t.startswith("Tag:")}
for line in open(pins):
    name, _, version = line.strip().partition("==")
    found = built.get((norm(name), version), [])
    if len(found) > 1:
        tags = installed_tags(name)
        found = [w for w in found
                 if any(t in w.name for t in tags)] or found[-1:]
        print(f"[wheelhouse] {name}: the installed build, {found[0].name}", file=sys.stderr)
    if found:
        shutil.copy(found[0], out)
    elif line.strip():
        print(line.strip())
PYEOF
  # shellcheck disable=SC2086  # $ADD is a list of names
  "${PIP[@]}" wheel -q --no-deps -w "$tmp" -r "$tmp/.fetch.txt" "${extra[@]}" $ADD
  rm "$tmp/.fetch.txt"
  # The oldest glibc the wheels compiled here run on: the newest GLIBC_x.y symbol version
  # their shared libraries ask for (manylinux wheels state theirs in their tags).
  GLIBC_NEEDED=$("$PYTHON" - "$tmp" <<'PYEOF'
import pathlib, re, subprocess, sys, tempfile, zipfile
need = (2, 17)
for whl in pathlib.Path(sys.argv[1]).glob("*-linux_x86_64.whl"):
    with zipfile.ZipFile(whl) as z, tempfile.TemporaryDirectory() as d:
        for name in z.namelist():
            if re.search(r"\.so(\.|$)", name):
                out = subprocess.run(["objdump", "-T", z.extract(name, d)], capture_output=True,
                                     text=True).stdout
                for v in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
                    need = max(need, tuple(map(int, v)))
print("%d.%d" % need)
PYEOF
)
else
  log "$PROFILE wheels for CPython $PYVER on $PLATFORMS"
  # shellcheck disable=SC2086  # $ADD is a list of names
  "${PIP[@]}" download -q --no-deps "${TARGET[@]}" -c "$PINS" -d "$tmp" "${GPU_NODE_WHEELS[@]}" $ADD
fi

log "velnet's own wheel"
src="$tmp/.velnet-src"  # a clean copy: an in-tree build/ could carry stale modules
mkdir "$src"
(cd "$HERE" && tar cf - --exclude=__pycache__ setup.cfg pyproject.toml README.md \
  velnet data_prep experiments) | tar xf - -C "$src"
"${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$tmp" "$src"
rm -rf "$src"

repack() {  # $1 project name, $2 scripts/install.sh function leaving the source tree in ./src
  local work version
  work=$(mktemp -d "$tmp/.repack.XXXXXX")
  (cd "$work" && "$2")
  version=$(sed -n 's/^Version: //p' "$work/src/PKG-INFO" | head -1)
  mv "$work/src" "$work/$1-$version"
  tar czf "$tmp/$1-$version.tar.gz" -C "$work" "$1-$version"
  rm -rf "$work"
}

if [ "$PROFILE" = prep ]; then
  log "nbodykit / fastpm stack: wheels, sdists, repacked pfft-python and classylss (minutes)"
  "${PIP[@]}" download -q --no-deps "${TARGET[@]}" -c "$PINS" -d "$tmp" "${BUILD_WHEELS[@]}" \
    "${PREP_WHEELS[@]}"
  "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation -c "$PINS" -d "$tmp" \
    "${PREP_SDISTS[@]}"
  # The install script's own repacking functions, without running the install.
  eval "$(sed -n '/^fetch_sdist()/p; /^prepare_pfft()/,/^}/p; /^prepare_classylss()/,/^}/p' \
    "$HERE/scripts/install.sh")"
  for f in fetch_sdist prepare_pfft prepare_classylss; do
    declare -F "$f" >/dev/null || { echo "wheelhouse: scripts/install.sh lacks $f()" >&2; exit 1; }
  done
  repack pfft-python prepare_pfft
  repack classylss prepare_classylss
fi

own=("$tmp"/velnet-*.whl)
VERSION=$(basename "${own[0]}" | cut -d- -f2)
if [ "$PROFILE" = docker ]; then
  PLATFORMS="linux_x86_64 (compiled on $(. /etc/os-release && echo "$PRETTY_NAME"))"
  { echo "PYTHON_VERSION=$PYVER"; echo "GLIBC_NEEDED=$GLIBC_NEEDED"; echo "VELNET_VERSION=$VERSION"
    echo "JAX=$JAX"; } > "$tmp/TARGET"
fi
{
  echo "velnet $VERSION wheelhouse, profile $PROFILE, for CPython $PYVER on $PLATFORMS"
  if [ "$PROFILE" = docker ]; then
    echo "(glibc >= $GLIBC_NEEDED), made $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/wheelhouse.sh."
    echo
    echo "The Dockerfile installs from it (docker build --build-arg WHEELHOUSE=<this folder>"
    echo "from the repository root); by hand, in a Python $PYVER environment, with the system's"
    echo "Open MPI, GSL and FFTW runtime libraries (Debian: libopenmpi3 libgsl27 libfftw3-double3):"
    echo "  pip install --no-index --find-links . -c constraints.txt 'velnet[tune,prep]' tensorboard"
    echo "      tensorflow-cpu jax jaxlib   # tensorflow-cpu where there is no TensorFlow"
  else
    echo "(glibc >= 2.28), made $(date -u +%Y-%m-%dT%H:%M:%SZ) by scripts/wheelhouse.sh."
  fi
  echo
  [ "$PROFILE" = docker ] || echo "On the node, with no network, in its Python $PYVER environment (venv \$VENV):"
  if [ "$PROFILE" = prep ]; then
    echo "  pip install --no-index --find-links . ${BUILD_WHEELS[*]}   # into \$VENV, not --target"
    echo "  export PATH=\$VENV/bin:\$PATH MPICC=\$VENV/bin/mpicc LDFLAGS=-L\$VENV/lib \\"
    echo "         LD_LIBRARY_PATH=\$VENV/lib:\${LD_LIBRARY_PATH:-}"
    echo "  # --no-deps: nbodykit declares Corrfunc (left out) and pandas (the node's)"
    echo "  MAKEFLAGS=-j\$(nproc) pip install --no-index --find-links . --no-build-isolation --no-deps \\"
    echo "      pfft-python classylss ${PREP_SDISTS[*]} ${PREP_WHEELS[*]}"
  fi
  if [ "$PROFILE" != docker ]; then
    echo "  pip install --no-index --find-links . 'velnet[tune]' six   # keras-tuner imports six"
    echo "                                                            # without declaring it"
    echo "  export KERAS_BACKEND=jax   # no TensorFlow on the node; shards are read without it"
    echo "  python -c 'import keras, keras_tuner, velnet.training.train'"
  fi
  echo
  echo "Files (sha256 in SHA256SUMS):"
  (cd "$tmp" && printf '  %s\n' *.whl *.tar.gz)
} > "$tmp/INSTALL.txt"
(cd "$tmp" && sha256sum -- *.whl *.tar.gz > SHA256SUMS)

size_kb=$(du -sk "$tmp" | cut -f1)
if [ "$size_kb" -gt $((MAX_MB * 1024)) ]; then
  echo "wheelhouse: $((size_kb / 1024)) MB exceeds --max-mb $MAX_MB" >&2
  exit 1
fi
rm -rf "$OUT"
mv "$tmp" "$OUT"
trap - EXIT
chmod 755 "$OUT"
files=("$OUT"/*.whl "$OUT"/*.tar.gz)
log "${#files[@]} files, $(du -sh "$OUT" | cut -f1) in $OUT ($(( $(date +%s) - START )) s)"

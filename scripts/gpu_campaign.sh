#!/usr/bin/env bash
# velnet's GPU campaign: one script for a short window on a GPU node (one NVIDIA H200, 16
# cores, no network, Python 3.12 with JAX and PyTorch but no TensorFlow), proven before the
# window by its --tiny dry run on a CPU (tests/test_gpu_campaign.py). In order, each step
# time-boxed, each writing its results under $OUT as it goes (a stop loses nothing):
#   1 install     the carried wheelhouse's packages the node lacks (--target, never replacing its own)
#   2 throughput  the Wu et al. U-net (wu2021-text, 27.0 M parameters), Keras on JAX against the
#                 plain PyTorch reference, mixed bf16, batch 32, in one run; the ratio
#   3 data        the carried float16 fields -> shards with the carried classical estimator
#                 (fitted on the training boxes by --pack) as the v_L input and residual base
#   4 train       the full-width residual U-net (wu2021-text-residual) with KERAS_BACKEND=jax,
#                 mixed bf16, batch 32, stopped at an epoch's end so that 90 s remain; then,
#                 in the same process, its weights as float16 in parts of at most 15 MiB
#   5 export      the same, only where training ended without exporting
#   6 evaluate    the model rebuilt from those parts predicts the test box; whole-box errors
#                 against the classical estimator (and `velnet evaluate` where nbodykit is)
# $OUT then holds at most 8 files: report.md, campaign.json, campaign.log,
# prediction-f16.h5 (the test box's predicted velocity) and the weights parts.
#
# Usage:
#   bash scripts/gpu_campaign.sh --pack          # here: simulate and pack the carried data
#   bash scripts/gpu_campaign.sh                 # on the node (env OUT; see README)
#   bash scripts/gpu_campaign.sh --tiny          # here, on a CPU: the same steps at toy sizes
#   bash scripts/gpu_campaign.sh --import DIR --name NAME   # here: DIR's model -> velnet/pretrained/NAME
# Options: --out DIR (default $OUT, else runs/gpu-campaign/out); --work DIR (scratch; default
#   /tmp/velnet-campaign, --pack's runs/gpu-campaign/pack); --budget S (seconds for the whole
#   run, default 555: one command of at most 10 minutes); --data DIR (default
#   dist/campaign-data); --wheelhouse DIR (default dist/wheelhouse-gpu-node-py3.12; "none":
#   install nothing); --np N (MPI ranks of --pack's simulations; default 1); --skip STEP,...
#   (e.g. throughput, in a second window that measured it already).
# Environment: PYTHON (default python3; tests: .venv/bin/python); CAMPAIGN_LR (3e-4),
#   CAMPAIGN_DTYPE (mixed_bfloat16), CAMPAIGN_CONTEXT (0; F adds prep's --context F),
#   CAMPAIGN_REPEAT (4: each training box given to prep that many times; an epoch is longer).
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
SELF="$HERE/scripts/gpu_campaign.sh"

if [ "${1:-}" != __step ]; then
  MODE=run; OUT_DIR=${OUT:-$HERE/runs/gpu-campaign/out}; WORK=""; BUDGET=555
  DATA=$HERE/dist/campaign-data; WHEELHOUSE=$HERE/dist/wheelhouse-gpu-node-py3.12; NP=1
  IMPORT=""; NAME=""; SKIP=""
  while [ $# -gt 0 ]; do
    case $1 in
      --tiny) MODE=tiny; shift ;;
      --pack) MODE=pack; shift ;;
      --import) MODE=import; IMPORT=$2; shift 2 ;;
      --name) NAME=$2; shift 2 ;;
      --out) OUT_DIR=$2; shift 2 ;;
      --work) WORK=$2; shift 2 ;;
      --budget) BUDGET=$2; shift 2 ;;
      --data) DATA=$2; shift 2 ;;
      --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
      --np) NP=$2; shift 2 ;;
      --skip) SKIP=$2; shift 2 ;;
      -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) echo "gpu_campaign: unknown argument $1 (--help lists them)" >&2; exit 2 ;;
    esac
  done
  # --pack keeps its simulations and float32 fields (the test box, to evaluate with here).
  [ -n "$WORK" ] || { [ "$MODE" = pack ] && WORK=$HERE/runs/gpu-campaign/pack || WORK=/tmp/velnet-campaign; }
  export MODE WORK BUDGET DATA WHEELHOUSE NP HERE SELF SKIP
  export OUT_DIR=$(realpath -m "$OUT_DIR") WORK=$(realpath -m "$WORK")
  export PYTHON=${PYTHON:-python3}
  export SITE=$WORK/site STATE=$WORK/state
  export PYTHONPATH=$SITE:$HERE${PYTHONPATH:+:$PYTHONPATH}
  export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # Sizes: the node's, or the dry run's toy ones (same steps, same code).
  if [ "$MODE" = tiny ]; then
    # (mixed bf16 is emulated on a CPU, slowly: the training keeps it, at one batch an epoch)
    export BOX=64 PARTICLES=32 SIM_STEPS=4 NMESH=32 TILE=8 TRAIN_SEEDS=1 VAL_SEEDS=2 TEST_SEEDS=3
    export PRESET=tiny-residual BATCH=2 MAX_EPOCHS=2 STEPS_PER_EPOCH=1 PART_BYTES=$((256 * 1024)) REPEAT=2
    export BENCH_ARGS="--preset tiny --tile 16 --batch-sizes 2 --dtypes float32 --steps 1 --warmup 1"
    export DATA=$WORK/pack
    # XLA compiles without LLVM's optimisations: a dry run proves the steps, it times nothing (110 s, not 190)
    case ${XLA_FLAGS:-} in
      *xla_backend_optimization_level*) ;;
      *) export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0" ;;
    esac
  else
    # 10 boxes of 160 Mpc/h, 3.5 MiB each packed: with the tree (5 MiB) and the gpu-node
    # wheelhouse (16 MiB), 55 MiB go up. Seed 100 is velnet's own test box (experiments/wu2021.py).
    export BOX=160 PARTICLES=160 SIM_STEPS=10 NMESH=80 TILE=20 TRAIN_SEEDS="1 2 3 4 5 6 7 8" VAL_SEEDS=9
    export TEST_SEEDS=100 PRESET=wu2021-text-residual BATCH=32 MAX_EPOCHS=100000 STEPS_PER_EPOCH=""
    export PART_BYTES=$((15 << 20)) REPEAT=${CAMPAIGN_REPEAT:-4}
    export BENCH_ARGS="--preset wu2021-text --batch-sizes 32 --dtypes mixed_bfloat16 --steps 20 --warmup 3"
  fi
  export CONTEXT=${CAMPAIGN_CONTEXT:-0} LR=${CAMPAIGN_LR:-3e-4} DTYPE=${CAMPAIGN_DTYPE:-mixed_bfloat16}
fi

VELNET=("$PYTHON" -m velnet.cli)
CAMPAIGN=("$PYTHON" "$HERE/scripts/campaign.py")
log() { printf '[campaign %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
now() { date +%s; }

# ---------------------------------------------------------------------------------------------
# The steps (each run as `gpu_campaign.sh __step NAME` under `timeout`).

step_env() {
  "$PYTHON" - <<'EOF'
import datetime, importlib.metadata as m, json, os, platform, shutil, subprocess
def version(name):
    try:
        return m.version(name)
    except m.PackageNotFoundError:
        return None
names = ("jax", "jaxlib", "jax-cuda13-plugin", "torch", "keras", "numpy", "h5py", "nbodykit")
versions = {"python": platform.python_version(), **{n: version(n) for n in names if version(n)}}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.machine())
device = f"cpu: {cpu}"
if shutil.which("nvidia-smi"):
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    device = out or device
data = {}
path = os.path.join(os.environ["DATA"], "data.json")
if os.path.exists(path):
    data = json.load(open(path))
env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "host": platform.node(), "device": device, "cores": os.cpu_count(), "versions": versions,
       "mode": os.environ["MODE"], "budget_s": int(os.environ["BUDGET"]),
       "data_commit": data.get("commit"), "keras_backend": os.environ.get("KERAS_BACKEND")}
os.makedirs(os.environ["STATE"], exist_ok=True)
json.dump(env, open(os.path.join(os.environ["STATE"], "env.json"), "w"), indent=1)
print(json.dumps(env))
EOF
}

step_install() {
  local wh=$WHEELHOUSE
  [ "$wh" = none ] && wh=""
  if [ -n "$wh" ] && [ ! -d "$wh" ]; then
    echo "gpu_campaign: error: $wh: no such wheelhouse; make it with 'make wheelhouse' and carry it" >&2
    return 2
  fi
  "${CAMPAIGN[@]}" install --wheelhouse "$wh" --site "$SITE" --state "$STATE"
  "$PYTHON" -c "import keras, velnet.training.train, velnet.prediction.predict; print('keras', keras.__version__, 'backend', keras.backend.backend())"
}

step_throughput() {
  # JAX takes at most 45 % of the GPU's memory here, leaving room for the PyTorch reference.
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
  # The driver reads the table from the log, also after a stop at the time box.
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 "$PYTHON" -m benchmarks.train_throughput $BENCH_ARGS \
    > >(tee "$WORK/throughput.log") 2>&1
}

step_data() {
  local f name train=() val=() test=() splits=() base=()
  [ -f "$DATA/data.json" ] || { echo "gpu_campaign: error: $DATA/data.json: no data pack (make it with --pack and carry it)" >&2; return 2; }
  mkdir -p "$WORK/fields"
  for f in "$DATA"/*.h5; do
    name=$(basename "$f")
    "${CAMPAIGN[@]}" unpack-fields "$f" "$WORK/fields/$name"
    case $name in
      train-*) train+=("$WORK/fields/$name"); splits+=(train) ;;
      val-*) val+=("$WORK/fields/$name") ;;
      test-*) test+=("$WORK/fields/$name") ;;
      *) echo "gpu_campaign: error: $f: not named train-*, val-* or test-*" >&2; return 2 ;;
    esac
  done
  [ ${#train[@]} -gt 0 ] && [ ${#val[@]} -gt 0 ] && [ ${#test[@]} -gt 0 ] \
    || { echo "gpu_campaign: error: $DATA: needs train-*, val-* and test-* fields files" >&2; return 2; }
  for _ in "${val[@]}"; do splits+=(val); done
  # The classical estimator (velnet baseline: classical estimators combined per k), fitted on
  # the training boxes where the pack was made (its fit needs nbodykit, which the node lacks):
  # the v_L input channels and the residual base of the network.
  [ -f "$DATA/classical.json" ] || { echo "gpu_campaign: error: $DATA/classical.json: no classical estimator in the data pack (--pack fits it)" >&2; return 2; }
  cp "$DATA/classical.json" "$WORK/classical.json"
  base=(--base "$WORK/classical.json")
  local context=() repeated=() r
  [ "$CONTEXT" = 0 ] || context=(--context "$CONTEXT")
  # Each training box REPEAT times (each copy drawn its own rotations): longer epochs, so that
  # velnet's per-epoch checkpoints (a 325 MB .keras with Adam's state, and the backup) cost
  # less of the window.
  for ((r = 1; r < REPEAT; r++)); do
    repeated+=("${train[@]}"); for _ in "${train[@]}"; do splits=(train "${splits[@]}"); done
  done
  "${VELNET[@]}" prep "${train[@]}" "${repeated[@]}" "${val[@]}" --split "${splits[@]}" --tile "$TILE" \
    --linear-input "${base[@]}" "${context[@]}" --out "$WORK/data"
  ln -sf "${test[0]}" "$WORK/test.h5"
  "$PYTHON" - <<'EOF'
import json, os, sys
work, state = os.environ["WORK"], os.environ["STATE"]
manifest = json.load(open(os.path.join(work, "data", "manifest.json")))
data = {"classical": "classical.json", "prep": "--linear-input --base classical.json",
        "training_boxes_repeated": int(os.environ["REPEAT"]),
        "classical_model": json.load(open(os.path.join(work, "classical.json"))),
        "counts": manifest["split"]["counts"], "input_shape": manifest["input_shape"],
        "target_scale": manifest["normalisation"]["target_scale"],
        "pack": json.load(open(os.path.join(os.environ["DATA"], "data.json"))),
        "test_box": os.path.realpath(os.path.join(work, "test.h5"))}
pack = data["pack"]
data["summary"] = (f"{len(pack['train'])} training, {len(pack['val'])} validation and {len(pack['test'])} "
                   f"test boxes of {pack['box']:g} Mpc/h on {pack['nmesh']}^3 cells (fastpm, seeds "
                   f"{pack['train']} / {pack['val']} / {pack['test']}); each training box "
                   f"{data['training_boxes_repeated']} times; tiles {data['counts']}, "
                   f"inputs {data['input_shape']}; the classical estimator fitted on the training "
                   "boxes is the v_L input and residual base")
json.dump(data, open(os.path.join(state, "data.json"), "w"), indent=1)
print(data["summary"])
EOF
}

step_train() {
  # Stop training so that it has ended, and saved and exported the weights, 25 s before this
  # step's own time box ends.
  local steps=()
  [ -z "$STEPS_PER_EPOCH" ] || steps=(--steps-per-epoch "$STEPS_PER_EPOCH" --validation-steps "$STEPS_PER_EPOCH")
  "${CAMPAIGN[@]}" train "$WORK/data" "$WORK/run" --deadline "$(( $(now) + STEP_CAP - 25 ))" \
    --preset "$PRESET" --batch-size "$BATCH" --learning-rate "$LR" --dtype "$DTYPE" \
    --max-epochs "$MAX_EPOCHS" "${steps[@]}" --export-to "$OUT_DIR" --part-bytes "$PART_BYTES" \
    --state "$STATE"
}

step_export() {  # only where training stopped before exporting (model.keras, else best.keras)
  if [ -f "$STATE/weights.json" ]; then
    echo "the weights were exported by the training step"
    return
  fi
  "${CAMPAIGN[@]}" export-weights "$WORK/run/model.keras" "$OUT_DIR" --part-bytes "$PART_BYTES" \
    --state "$STATE"
}

step_evaluate() {
  # What ships is the model rebuilt from the float16 parts: that one predicts the test box.
  "${CAMPAIGN[@]}" evaluate-box "$WORK" "$OUT_DIR" --state "$STATE"
  # (the dry run hides nbodykit from the steps, but not from this optional report)
  if VELNET_HIDE_MODULES=tensorflow "$PYTHON" -c "import nbodykit" 2>/dev/null; then
    VELNET_HIDE_MODULES=tensorflow "${VELNET[@]}" evaluate "$WORK/test.h5" "$WORK/pred.h5" \
      --names "U-net $PRESET" --baseline "$WORK/classical.json" --out "$WORK/report"
  else
    log "nbodykit is not installed here: no power spectra; evaluate the returned prediction"
    log "(prediction-f16.h5) with velnet evaluate on a machine with it (README)"
  fi
}

if [ "${1:-}" = __step ]; then
  "step_$2"
  exit
fi

# ---------------------------------------------------------------------------------------------
# The driver.

STEPS_JSON=()
FAILED=()
record() {  # record NAME STATUS SECONDS CAP
  STEPS_JSON+=("\"$1\": {\"status\": \"$2\", \"seconds\": $3, \"cap\": $4}")
  mkdir -p "$STATE"
  printf '{%s}\n' "$(IFS=,; echo "${STEPS_JSON[*]}")" > "$STATE/steps.json"
  "${CAMPAIGN[@]}" report "$WORK" "$OUT_DIR" || true
}

run_step() {  # run_step NAME CAP_S [NEEDS...]: time-boxed at min(CAP_S, time left)
  local name=$1 cap=$2 t0 rc left; shift 2
  if [[ ",$SKIP," == *",$name,"* ]]; then
    log "=== $name: skipped (--skip)"; record "$name" "skipped (--skip)" 0 0
    return 0
  fi
  for need in "$@"; do
    if [[ " ${FAILED[*]:-} " == *" $need "* ]]; then
      log "=== $name: skipped ($need failed)"; record "$name" "skipped ($need failed)" 0 0; FAILED+=("$name")
      return 0
    fi
  done
  left=$(( DEADLINE - $(now) ))
  [ "$cap" -le "$left" ] || cap=$left
  if [ "$cap" -lt 5 ]; then
    log "=== $name: skipped (no time left)"; record "$name" "skipped (no time left)" 0 0; FAILED+=("$name")
    return 0
  fi
  log "=== $name (time box $cap s)"
  t0=$(now)
  set +e
  STEP_CAP=$cap timeout -k 10 "$cap" bash "$SELF" __step "$name"
  rc=$?
  set -e
  local status=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then status="stopped at its time box"; elif [ $rc != 0 ]; then status="failed (exit $rc)"; fi
  [ "$status" = ok ] || FAILED+=("$name")
  log "=== $name: $status, $(( $(now) - t0 )) s"
  record "$name" "$status" "$(( $(now) - t0 ))" "$cap"
}

pack() {  # simulate, paint and pack the carried boxes into $DATA (one process, or NP under mpirun)
  local mpi=()
  [ "$NP" -gt 1 ] && mpi=(mpirun -n "$NP")
  # shellcheck disable=SC2086  # the seed lists are lists
  "${mpi[@]}" "${CAMPAIGN[@]}" pack "$DATA" --work "$WORK" --train $TRAIN_SEEDS --val $VAL_SEEDS \
    --test $TEST_SEEDS --box "$BOX" --particles "$PARTICLES" --steps "$SIM_STEPS" --nmesh "$NMESH" \
    --commit "$(git -C "$HERE" rev-parse HEAD 2>/dev/null || echo unknown)"
  # The classical estimator, fitted here on the float32 training fields (nbodykit does its FFTs).
  local seed train=()
  for seed in $TRAIN_SEEDS; do train+=("$WORK/fields/seed$seed.h5"); done
  "${VELNET[@]}" baseline "${train[@]}" --out "$DATA/classical.json"
}

upload_size() {  # what goes up to the node: the working tree and the carried folders
  local tree wh data
  tree=$(cd "$HERE" && git ls-files -z -co --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  wh=$(du -sb "$WHEELHOUSE" 2>/dev/null | cut -f1 || echo 0)
  data=$(du -sb "$DATA" | cut -f1)
  log "upload: tree $((tree >> 20)) MiB + wheelhouse $((${wh:-0} >> 20)) MiB + data $((data >> 20)) MiB = $(( (tree + ${wh:-0} + data) >> 20 )) MiB (limit 64 MiB)"
  [ -d "$WHEELHOUSE" ] || log "no $WHEELHOUSE yet: make it with 'make wheelhouse' (about 16 MB)"
  log "carry: [\"${WHEELHOUSE#"$HERE"/}\", \"${DATA#"$HERE"/}\"]"
  [ $(( tree + ${wh:-0} + data )) -le $((64 << 20)) ] || { log "error: over the 64 MiB upload limit"; return 1; }
}

case $MODE in
  import)
    [ -n "$NAME" ] || { echo "gpu_campaign: --import needs --name NAME (folder under velnet/pretrained)" >&2; exit 2; }
    "${CAMPAIGN[@]}" import-model "$IMPORT" "$HERE/velnet/pretrained/$NAME"
    exit ;;
  pack)
    START=$(now)
    log "packing ${BOX} Mpc/h boxes (${PARTICLES}^3 particles, ${NMESH}^3 cells) into $DATA"
    pack
    upload_size
    log "pack: $(( $(now) - START )) s"
    exit ;;
esac

# run and tiny
START=$(now)
# A fresh scratch folder (training would resume from an old one's backup); only one this
# script made is removed.
if [ -e "$WORK" ]; then
  [ -e "$WORK/.velnet-campaign-work" ] || { echo "gpu_campaign: error: $WORK exists and is not a work folder of this script: give another --work" >&2; exit 2; }
  rm -rf "$WORK"
fi
mkdir -p "$WORK" "$STATE" "$OUT_DIR"
touch "$WORK/.velnet-campaign-work"
rm -f "$OUT_DIR"/campaign.log "$OUT_DIR"/report.md "$OUT_DIR"/campaign.json "$OUT_DIR"/prediction-f16.h5 \
  "$OUT_DIR"/weights-f16.npz.part*
exec > >(tee -a "$OUT_DIR/campaign.log") 2>&1
log "velnet GPU campaign, mode $MODE, budget $BUDGET s, out $OUT_DIR, work $WORK, python $PYTHON"
if [ "$MODE" = tiny ]; then
  log "dry run: packing toy boxes first"
  pack
  START=$(now)  # the budget covers the campaign's own steps, as on the node
  # As on the node, the steps see no TensorFlow and no nbodykit (scripts/as_node).
  export VELNET_HIDE_MODULES="tensorflow nbodykit" PYTHONPATH=$HERE/scripts/as_node:$PYTHONPATH
  log "dry run: tensorflow and nbodykit hidden from the steps, as on the node"
fi
DEADLINE=$(( START + BUDGET ))
bash "$SELF" __step env
# Time boxes (s) on the node: install 90, throughput 210, data 120, then training takes what
# is left but 90 s, which evaluate needs (export runs only where training did not export).
run_step install 90
run_step throughput 210 install
"${CAMPAIGN[@]}" throughput "$WORK/throughput.log" --state "$STATE" && "${CAMPAIGN[@]}" report "$WORK" "$OUT_DIR" || true
run_step data 120 install
TRAIN_CAP=$(( DEADLINE - $(now) - 90 ))
[ "$MODE" != tiny ] || TRAIN_CAP=$(( TRAIN_CAP > 300 ? 300 : TRAIN_CAP ))
run_step train "$TRAIN_CAP" data
run_step export 60 data
run_step evaluate $(( DEADLINE - $(now) )) export
"${CAMPAIGN[@]}" report "$WORK" "$OUT_DIR"

# What comes back: at most 8 files of at most 16 MiB.
n=0; big=()
for f in "$OUT_DIR"/*; do
  n=$((n + 1))
  [ "$(stat -c %s "$f")" -le $((16 << 20)) ] || big+=("$(basename "$f")")
done
log "out: $n files, $(du -sh "$OUT_DIR" | cut -f1): $(cd "$OUT_DIR" && ls | tr '\n' ' ')"
[ "$n" -le 8 ] || log "warning: more than 8 files in $OUT_DIR: not all will come back"
[ ${#big[@]} = 0 ] || log "warning: over 16 MiB, will not come back: ${big[*]}"
log "campaign: $(( $(now) - START )) s; $([ ${#FAILED[@]} = 0 ] && echo "every step ok" || echo "not ok: ${FAILED[*]}")"
[ ${#FAILED[@]} = 0 ]

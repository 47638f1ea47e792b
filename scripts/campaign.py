"""The Python steps of scripts/gpu_campaign.sh (a GPU node's short window), one subcommand each.

    pack OUTDIR --seeds ...         simulate (fastpm) and paint boxes, packed as below (MPI-aware)
    pack-fields IN.h5 OUT.h5        a fields file as float16 density + velocity (to carry)
    unpack-fields IN.h5 OUT.h5      back to float32, momentum = density * velocity
    install --wheelhouse W --site S install the wheels of W whose packages are missing (--target S)
    throughput LOG                  the benchmark's table -> JSON with the Keras / PyTorch ratio
    train DATA RUN --deadline T     velnet's training, stopped at an epoch's end before T; with
                                    --export-to, then its float16 weights (as export-weights)
    export-weights MODEL DIR        float16 weights in parts of at most --part-bytes, + JSON
    evaluate-box WORK OUT           the model rebuilt from OUT's parts predicts the test box;
                                    whole-box rms errors against the classical estimator
    import-model RESULTS DEST       those parts -> DEST/velocity.keras (velnet/pretrained layout)
    report WORK OUT                 every step's JSON -> OUT/campaign.json and OUT/report.md

Each step that measures something writes WORK/state/<step>.json; `report` gathers them.
"""
import argparse
import hashlib
import importlib.metadata
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WEIGHTS_PREFIX = "weights-f16.npz.part"
MiB = 1 << 20


def say(message):
    print(f"[campaign] {message}", flush=True)


def write_json(path, data):
    """Write JSON atomically (a stop mid-write leaves the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def fail(path, problem):
    """Stop with a message naming the file and the problem."""
    sys.exit(f"campaign: error: {path}: {problem}")


# --- data ------------------------------------------------------------------------------------

def pack(args):
    """Simulate and paint each seed's box (velnet's fastpm driver, wu2021 preset, z = 0) and pack
    it as OUTDIR/<split>-seed<seed>.h5; collective under mpirun, rank 0 packs."""
    from nbodykit import CurrentMPIComm

    from data_prep.paint import paint_snapshot
    from data_prep.simulate import SimulationConfig, simulate

    rank = CurrentMPIComm.get().rank
    out, work = Path(args.out), Path(args.work)
    for split, seeds in (("train", args.train), ("val", args.val), ("test", args.test)):
        for seed in seeds:
            start = time.time()
            sim, fields = work / "sims" / f"seed{seed}", work / "fields" / f"seed{seed}.h5"
            if not (sim / "snapshot_z0.000").exists():
                config = SimulationConfig.from_preset("wu2021", box_size=args.box, nparticles=args.particles,
                                                      steps=args.steps, output_redshifts=(0.0,), seed=seed)
                simulate(config, sim)
            if not fields.exists():
                paint_snapshot(sim / "snapshot_z0.000", args.nmesh, fields)
            if rank == 0:
                pack_fields(argparse.Namespace(input=fields, output=out / f"{split}-seed{seed}.h5",
                                               fields=["density", "velocity"]))
                say(f"seed {seed} ({split}): {time.time() - start:.0f} s")
    if rank == 0:
        write_json(out / "data.json", {
            "box": args.box, "particles": args.particles, "steps": args.steps, "nmesh": args.nmesh,
            "redshift": 0.0, "preset": "wu2021", "train": args.train, "val": args.val, "test": args.test,
            "commit": args.commit, "format": "float16 density and velocity (scripts/campaign.py pack-fields)"})


def pack_fields(args):
    """float16 density and velocity (or --fields) with the file's attributes, compressed: 7 bytes
    a cell instead of 28."""
    import h5py
    src = Path(args.input)
    if not src.is_file():
        fail(src, "no such fields file")
    try:
        h5 = h5py.File(src, "r")
    except OSError as err:
        fail(src, f"not a readable HDF5 fields file ({err})")
    with h5:
        missing = set(args.fields) - set(h5)
        if missing:
            fail(src, f"has no {sorted(missing)} field(s) (it holds {sorted(h5)})")
        attrs = dict(h5.attrs)
        data = {name: (h5[name][...], dict(h5[name].attrs)) for name in args.fields}
    for name, (value, _) in data.items():
        if not np.all(np.isfinite(value)) or np.abs(value).max() > 6e4:
            fail(src, f"field {name!r} is not finite or exceeds float16's range")
    tmp = Path(args.output).with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update(attrs)
        h5.attrs["velnet_campaign_packed"] = f"float16 {' and '.join(args.fields)}"
        for name, (value, ds_attrs) in data.items():  # gzip + shuffle: 11 % smaller, 0.3 s a box
            ds = h5.create_dataset(name, data=value.astype(np.float16), compression="gzip",
                                   compression_opts=4, shuffle=True)
            ds.attrs.update(ds_attrs)
    os.replace(tmp, args.output)
    say(f"{src} -> {args.output} ({Path(args.output).stat().st_size / MiB:.1f} MiB)")


def unpack_fields(args):
    """A packed file back to a velnet fields file (float32; momentum recomputed)."""
    import h5py
    src = Path(args.input)
    if not src.is_file():
        fail(src, "no such packed fields file")
    try:
        with h5py.File(src, "r") as h5:
            attrs = dict(h5.attrs)
            fields = {n: (h5[n][...].astype(np.float32), dict(h5[n].attrs)) for n in ("density", "velocity")}
    except (OSError, KeyError) as err:
        fail(src, f"not a packed fields file of `campaign.py pack-fields` ({err})")
    density, velocity = fields["density"][0], fields["velocity"][0]
    fields["momentum"] = (density[..., None] * velocity, {"units": "km/s (rho / rho_mean) v"})
    attrs.pop("velnet_campaign_packed", None)
    tmp = Path(args.output).with_suffix(".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update(attrs)
        for name, (value, ds_attrs) in fields.items():
            ds = h5.create_dataset(name, data=value)
            ds.attrs.update(ds_attrs)
    os.replace(tmp, args.output)


# --- install ---------------------------------------------------------------------------------

def _installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install(args):
    """pip install --no-deps --target SITE every wheel of the wheelhouse whose package is missing.

    The node's own packages (JAX, numpy, h5py, ...) are never replaced; velnet itself runs
    from the carried tree, so its wheel is skipped.
    """
    start = time.time()
    wheelhouse = Path(args.wheelhouse) if args.wheelhouse else None
    wheels = sorted(wheelhouse.glob("*.whl")) if wheelhouse and wheelhouse.is_dir() else []
    if wheelhouse and not wheels:
        fail(wheelhouse, "holds no wheels: make it with `make wheelhouse` (scripts/wheelhouse.sh "
                         "--profile gpu-node) and carry it")
    missing, present = [], {}
    for whl in wheels:
        name = whl.name.split("-")[0]
        if name.lower() == "velnet":
            continue
        version = _installed(name)
        if version:
            present[name] = version
        else:
            missing.append(whl)
    say(f"{len(present)} of the wheelhouse's packages are already installed; installing "
        f"{len(missing)}: {', '.join(w.name.split('-')[0] for w in missing) or 'none'}")
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--disable-pip-version-check", "--target", args.site,
                        *map(str, missing)], check=True)
    write_json(Path(args.state) / "install.json", {
        "installed": [w.name for w in missing], "already_there": present,
        "wheelhouse": str(wheelhouse) if wheelhouse else None, "seconds": round(time.time() - start, 1)})


# --- throughput ------------------------------------------------------------------------------

ROW = re.compile(r"^\| (keras|torch) \| (\S+) \| (\d+) \| ([\d.e+]+) \| ([\d.e+]+) \| ([\d,]+) \|$")


def throughput(args):
    """Parse benchmarks.train_throughput's output into rows and the Keras / PyTorch ratios."""
    text = Path(args.log).read_text() if Path(args.log).is_file() else ""
    rows = [{"framework": m[1], "dtype": m[2], "batch": int(m[3]), "train_samples_s": float(m[4]),
             "inference_samples_s": float(m[5]), "parameters": int(m[6].replace(",", ""))}
            for m in (ROW.match(line.strip()) for line in text.splitlines()) if m]
    environment = [line for line in text.splitlines()
                   if line.split(":")[0] in ("date", "host", "keras backend", "torch device", "versions")]
    result = {"rows": rows, "environment": environment, "goal": "Keras >= 0.9 x PyTorch (training)"}
    keras_row = next((r for r in rows if r["framework"] == "keras"), None)
    torch_row = next((r for r in rows if r["framework"] == "torch"), None)
    if keras_row and torch_row:
        result["train_ratio"] = keras_row["train_samples_s"] / torch_row["train_samples_s"]
        result["inference_ratio"] = keras_row["inference_samples_s"] / torch_row["inference_samples_s"]
        result["goal_met"] = result["train_ratio"] >= 0.9
        say(f"Keras / PyTorch: training {result['train_ratio']:.2f}, inference "
            f"{result['inference_ratio']:.2f} (goal >= 0.90 in training)")
    else:
        say("no Keras / PyTorch pair of rows: no ratio" + ("" if rows else " (no rows at all)"))
    write_json(Path(args.state) / "throughput.json", result)


# --- training --------------------------------------------------------------------------------

def train_step(args):
    """`velnet.training.train.train` under a dtype policy, stopped before the deadline at an epoch's end."""
    import keras

    from velnet.training.train import train

    deadline = float(args.deadline)
    if args.dtype != "float32":
        keras.config.set_dtype_policy(args.dtype)
    epochs_log = []

    class Deadline(keras.callbacks.Callback):
        """Stop when the next epoch would not end before the deadline (or, past it, at once)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.begin = time.time()

        def on_epoch_end(self, epoch, logs=None):
            took = time.time() - self.begin
            left = deadline - time.time()
            logs = logs or {}
            epochs_log.append({"epoch": epoch + 1, "seconds": round(took, 2),
                               "loss": logs.get("loss"), "val_loss": logs.get("val_loss")})
            say(f"epoch {epoch + 1}: {took:.1f} s, loss {logs.get('loss', float('nan')):.4g}, "
                f"val_loss {logs.get('val_loss', float('nan')):.4g}, {left:.0f} s left")
            if left < 1.2 * took:
                say("the next epoch would end past the deadline: stopping")
                self.model.stop_training = True

        def on_train_batch_end(self, batch, logs=None):
            if time.time() > deadline:
                self.model.stop_training = True

    start = time.time()
    path = train(args.data, args.run, args.preset, epochs=args.max_epochs, batch_size=args.batch_size,
                 learning_rate=args.learning_rate, seed=args.seed, callbacks=[Deadline()],
                 steps_per_epoch=args.steps_per_epoch, validation_steps=args.validation_steps)
    record = json.loads((Path(args.run) / "train_config.json").read_text())
    write_json(Path(args.state) / "train.json", {
        "model": str(path), "preset": args.preset, "dtype_policy": args.dtype,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "steps_per_epoch": args.steps_per_epoch, "parameters": record.get("parameters"),
        "best": record.get("best"), "epochs": epochs_log, "seconds": round(time.time() - start, 1),
        "backend": keras.backend.backend(), "device": keras.distribution.list_devices()[0]})
    if args.export_to:  # in this process: no second start-up of Keras and the backend
        export_weights(argparse.Namespace(model=path, out=args.export_to, part_bytes=args.part_bytes,
                                          state=args.state))


# --- the test box, without nbodykit ---------------------------------------------------------

def evaluate_box(args):
    """Rebuild the model from OUT's float16 parts (what ships), predict the test box with it and
    with the classical estimator, write OUT/prediction-f16.h5 and the whole-box rms error of one
    velocity component (km/s) of each: a pixel statistic (`velnet evaluate`'s "all k" error),
    so no power spectra and no nbodykit are needed."""
    from velnet.fields.field import load_fields
    from velnet.physics.linear import linear_prediction
    from velnet.prediction.predict import predict_file

    work, out = Path(args.work), Path(args.out)
    shipped = work / "shipped"
    import_model(argparse.Namespace(results=out, dest=shipped, variant="gpu-residual"))
    test = work / "test.h5"
    start = time.time()
    predict_file([shipped / "velocity.keras"], test, work / "pred.h5")
    predict_seconds = time.time() - start
    predict_file([work / "classical.json"], test, work / "classical-pred.h5")
    pack_fields(argparse.Namespace(input=work / "pred.h5", output=out / "prediction-f16.h5",
                                   fields=["velocity"]))

    truth = load_fields(test, ["density", "velocity"])
    v = truth["velocity"].value.astype(np.float64)
    rms = lambda pred: float(np.sqrt(np.mean((np.asarray(pred, np.float64) - v) ** 2)))  # noqa: E731
    result = {"truth_rms": float(np.sqrt(np.mean((v - v.mean(axis=(0, 1, 2))) ** 2))),
              "unet": rms(load_fields(work / "pred.h5", ["velocity"])["velocity"].value),
              "classical": rms(load_fields(work / "classical-pred.h5", ["velocity"])["velocity"].value),
              "classical_name": "classical estimator (velnet baseline, fitted on the training boxes)",
              "linear": rms(linear_prediction(truth["density"])["velocity"].value),
              "predict_seconds": round(predict_seconds, 1), "test_box": str(test.resolve())}
    result["unet_over_classical"] = result["unet"] / result["classical"]
    result["goal"] = "U-net whole-box error at least 20 % below the classical estimator's"
    result["goal_met"] = result["unet_over_classical"] <= 0.8
    say("whole-box rms error of one velocity component: " + ", ".join(
        f"{k} {result[k]:.1f} km/s" for k in ("truth_rms", "unet", "classical", "linear")) +
        f"; U-net / classical {result['unet_over_classical']:.3f}")
    write_json(Path(args.state) / "metrics.json", result)


# --- weights out and back --------------------------------------------------------------------

def export_weights(args):
    """The trained model's weights as float16 arrays in one .npz, cut into parts, + a JSON
    manifest (config, scale, metadata, sha256) from which `import-model` rebuilds it."""
    from velnet.training.train import load_model

    model, metadata = load_model(args.model)
    weights = model.get_weights()
    buffer = io.BytesIO()
    np.savez(buffer, **{f"w{i:04d}": w.astype(np.float16) for i, w in enumerate(weights)})
    blob = buffer.getvalue()
    n_parts = max(1, -(-len(blob) // args.part_bytes))
    size = -(-len(blob) // n_parts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(WEIGHTS_PREFIX + "*"):
        old.unlink()
    parts = []
    for i in range(n_parts):
        part = out / f"{WEIGHTS_PREFIX}{i}"
        part.write_bytes(blob[i * size:(i + 1) * size])
        parts.append({"file": part.name, "bytes": part.stat().st_size})
    layer = model.get_layer("to_physical")
    manifest = {"parts": parts, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
                "dtype": "float16", "arrays": len(weights), "parameters": int(model.count_params()),
                "scale": layer.scale, "metadata": metadata.to_dict(),
                "max_abs_rounding": float(max(np.abs(w - w.astype(np.float16).astype(w.dtype)).max()
                                              for w in weights if w.size))}
    write_json(Path(args.state) / "weights.json", manifest)
    say(f"{len(weights)} weight arrays, {model.count_params():,} parameters -> {n_parts} part(s) of "
        f"<= {size / MiB:.2f} MiB in {out} (float16 npz, {len(blob) / MiB:.1f} MiB)")


def import_model(args):
    """Rebuild the km/s model from a results folder's parts and JSON: DEST/velocity.keras (float32),
    with the logs and experiment.json that velnet/pretrained folders hold."""
    results = Path(args.results)
    state_file = results / "campaign.json"
    if not state_file.is_file():
        fail(state_file, "missing: not a results folder of scripts/gpu_campaign.sh")
    state = json.loads(state_file.read_text())
    manifest = state.get("weights")
    if not manifest:
        fail(state_file, "holds no weights (the campaign stopped before exporting them)")
    blob = b""
    for part in manifest["parts"]:
        path = results / part["file"]
        if not path.is_file():
            fail(path, "missing weights part")
        blob += path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
        fail(results, f"the weights parts do not match the sha256 in {state_file} (truncated copy?)")
    with np.load(io.BytesIO(blob)) as npz:
        weights = [npz[f"w{i:04d}"].astype(np.float32) for i in range(manifest["arrays"])]
    import keras  # (after the checks: a broken results folder is named at once)

    from velnet.networks.unet3d import physical_model
    from velnet.training.train import save_keras

    keras.config.set_dtype_policy("float32")
    metadata = manifest["metadata"]
    model = physical_model(metadata["model_config"], weights, manifest["scale"], metadata)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = metadata["target_name"]
    save_keras(model, dest / f"{target}.keras")
    train = state.get("train", {})
    data = state.get("data", {})
    spec = metadata.get("input_spec", {})
    variant = args.variant
    (dest / "experiment.json").write_text(json.dumps({
        "name": dest.name, "source": "scripts/gpu_campaign.sh", "date": state.get("env", {}).get("date"),
        "device": state.get("env", {}).get("device"),
        "variants": {variant: {"preset": train.get("preset"), "linear_input": bool(spec.get("linear")),
                               "context": spec.get("context", 0), "targets": [target],
                               "base": "classical.json"}},
        "train": {k: train.get(k) for k in ("batch_size", "learning_rate", "dtype_policy", "best")},
        "weights": "float16 on the node, stored here as float32",
        "test_metrics": state.get("metrics")}, indent=1) + "\n")
    if data.get("classical_model"):
        (dest / "classical.json").write_text(json.dumps(data["classical_model"], indent=1) + "\n")
    if train.get("epochs"):
        rows = ["epoch,loss,val_loss"] + [f"{e['epoch'] - 1},{e['loss']},{e['val_loss']}" for e in train["epochs"]]
        (dest / f"{target}-history.csv").write_text("\n".join(rows) + "\n")
    (dest / f"{target}-train_config.json").write_text(json.dumps(train, indent=1) + "\n")
    say(f"{dest / (target + '.keras')}: {model.count_params():,} parameters, from {len(manifest['parts'])} part(s)")


# --- report ----------------------------------------------------------------------------------

def report(args):
    """Gather WORK/state/*.json into OUT/campaign.json and write OUT/report.md."""
    state_dir = Path(args.work) / "state"
    state = {p.stem: json.loads(p.read_text()) for p in sorted(state_dir.glob("*.json"))}
    out = Path(args.out)
    write_json(out / "campaign.json", state)
    lines = ["# velnet GPU campaign", ""]
    env = state.get("env", {})
    if env:
        lines += [f"- date: {env.get('date')}; device: {env.get('device')}",
                  f"- versions: {env.get('versions')}", f"- mode: {env.get('mode')}", ""]
    steps = state.get("steps", {})
    if steps:
        lines += ["| step | status | seconds | time box (s) |", "|---|---|---|---|"]
        lines += [f"| {name} | {s['status']} | {s['seconds']} | {s.get('cap', '')} |" for name, s in steps.items()]
        lines.append("")
    tp = state.get("throughput")
    if tp:
        lines += ["## Throughput (samples/s)", ""] + [f"    {e}" for e in tp["environment"]] + [""]
        lines += ["| framework | dtype | batch | train | inference | parameters |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['framework']} | {r['dtype']} | {r['batch']} | {r['train_samples_s']:.4g} | "
                  f"{r['inference_samples_s']:.4g} | {r['parameters']:,} |" for r in tp["rows"]]
        if "train_ratio" in tp:
            lines += ["", f"Keras / PyTorch: training **{tp['train_ratio']:.2f}**, inference "
                          f"{tp['inference_ratio']:.2f} (goal: training >= 0.90; "
                          f"{'met' if tp['goal_met'] else 'not met'})"]
        lines.append("")
    data = state.get("data")
    if data:
        lines += ["## Data", "", f"- {data.get('summary')}", ""]
    tr = state.get("train")
    if tr:
        best = tr.get("best") or {}
        lines += ["## Training", "",
                  f"- {tr['preset']}, {tr.get('parameters') or 0:,} parameters, {tr['dtype_policy']}, batch "
                  f"{tr['batch_size']}, Adam {tr['learning_rate']:g}, backend {tr['backend']} on {tr['device']}",
                  f"- {len(tr['epochs'])} epochs in {tr['seconds']} s; best val_loss {best.get('val_loss')} "
                  f"at epoch {best.get('epoch')}", ""]
    m = state.get("metrics")
    if m:
        lines += ["## Test box: whole-box rms error of one velocity component (km/s)", "",
                  f"- truth (rms of the field): {m['truth_rms']:.1f}", f"- U-net: {m['unet']:.1f}"]
        if "classical" in m:
            lines.append(f"- {m['classical_name']}: {m['classical']:.1f}")
        lines.append(f"- linear theory: {m['linear']:.1f}")
        if "unet_over_classical" in m:
            lines.append(f"- U-net / classical: **{m['unet_over_classical']:.3f}** (goal <= 0.80: "
                         f"{'met' if m['goal_met'] else 'not met'})")
        lines.append("")
    w = state.get("weights")
    if w:
        lines += ["## Weights", "", f"- {w['parameters']:,} parameters as float16 in "
                  f"{len(w['parts'])} part(s) ({', '.join(p['file'] for p in w['parts'])}), sha256 "
                  f"{w['sha256'][:16]}...; bring them into velnet with "
                  "`bash scripts/gpu_campaign.sh --import RESULTS_DIR --name NAME`", ""]
    evaluation = Path(args.work) / "report" / "report.md"
    if evaluation.is_file():
        lines += ["## velnet evaluate (test box)", "", evaluation.read_text()]
    tmp = out / "report.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, out / "report.md")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("pack")
    s.add_argument("out"); s.add_argument("--work", required=True)  # noqa: E702
    for name in ("train", "val", "test"):
        s.add_argument(f"--{name}", type=int, nargs="+", required=True, help=f"{name} seeds")
    s.add_argument("--box", type=float, required=True)
    s.add_argument("--particles", type=int, required=True)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--nmesh", type=int, required=True)
    s.add_argument("--commit", default="unknown")
    s.set_defaults(func=pack)
    s = sub.add_parser("pack-fields"); s.add_argument("input"); s.add_argument("output")  # noqa: E702
    s.add_argument("--fields", nargs="+", default=["density", "velocity"])
    s.set_defaults(func=pack_fields)
    s = sub.add_parser("unpack-fields"); s.add_argument("input"); s.add_argument("output")  # noqa: E702
    s.set_defaults(func=unpack_fields)
    s = sub.add_parser("install")
    s.add_argument("--wheelhouse", default="")
    s.add_argument("--site", required=True)
    s.add_argument("--state", required=True)
    s.set_defaults(func=install)
    s = sub.add_parser("throughput"); s.add_argument("log"); s.add_argument("--state", required=True)  # noqa: E702
    s.set_defaults(func=throughput)
    s = sub.add_parser("train")
    s.add_argument("data"); s.add_argument("run")  # noqa: E702
    s.add_argument("--deadline", type=float, required=True, help="Unix time to stop by")
    s.add_argument("--preset", default="wu2021-text-residual")
    s.add_argument("--dtype", default="mixed_bfloat16", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--learning-rate", type=float, default=3e-4)
    s.add_argument("--max-epochs", type=int, default=10000)
    s.add_argument("--steps-per-epoch", type=int)
    s.add_argument("--validation-steps", type=int)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--export-to", help="then export the float16 weights into this folder")
    s.add_argument("--part-bytes", type=int, default=15 * MiB)
    s.add_argument("--state", required=True)
    s.set_defaults(func=train_step)
    s = sub.add_parser("evaluate-box")
    s.add_argument("work"); s.add_argument("out")  # noqa: E702
    s.add_argument("--state", required=True)
    s.set_defaults(func=evaluate_box)
    s = sub.add_parser("export-weights")
    s.add_argument("model"); s.add_argument("out")  # noqa: E702
    s.add_argument("--part-bytes", type=int, default=15 * MiB)
    s.add_argument("--state", required=True)
    s.set_defaults(func=export_weights)
    s = sub.add_parser("import-model")
    s.add_argument("results"); s.add_argument("dest")  # noqa: E702
    s.add_argument("--variant", default="gpu-residual")
    s.set_defaults(func=import_model)
    s = sub.add_parser("report"); s.add_argument("work"); s.add_argument("out")  # noqa: E702
    s.set_defaults(func=report)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

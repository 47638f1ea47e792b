"""The Python steps of scripts/gpu_campaign.sh (a GPU node's short window), one subcommand each.

    pack-fields IN.h5 OUT.h5        a fields file as float16 density + velocity (to carry)
    unpack-fields IN.h5 OUT.h5      back to float32, momentum = density * velocity
    install --wheelhouse W --site S install the wheels of W whose packages are missing (--target S)
    throughput LOG                  the benchmark's table -> JSON with the Keras / PyTorch ratio
    train DATA RUN --deadline T     velnet's training, stopped at an epoch's end before T
    metrics TRUTH PRED              whole-box rms velocity errors: U-net, classical, linear
    export-weights MODEL DIR        float16 weights in parts of at most --part-bytes, + JSON
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

def pack_fields(args):
    """float16 density and velocity (or --fields) with the file's attributes: 8 bytes a cell
    instead of 28."""
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
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update(attrs)
        h5.attrs["velnet_campaign_packed"] = f"float16 {' and '.join(args.fields)}"
        for name, (value, ds_attrs) in data.items():
            ds = h5.create_dataset(name, data=value.astype(np.float16))
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
    """`velnet.train.train` under a dtype policy, stopped before the deadline at an epoch's end."""
    import keras

    from velnet.train import train

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
                 learning_rate=args.learning_rate, seed=args.seed, callbacks=[Deadline()])
    record = json.loads((Path(args.run) / "train_config.json").read_text())
    write_json(Path(args.state) / "train.json", {
        "model": str(path), "preset": args.preset, "dtype_policy": args.dtype,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "parameters": record.get("parameters"), "best": record.get("best"),
        "epochs": epochs_log, "seconds": round(time.time() - start, 1),
        "backend": keras.backend.backend(), "device": keras.distribution.list_devices()[0]})


# --- evaluation without nbodykit -------------------------------------------------------------

def metrics(args):
    """Whole-box rms error of one velocity component (km/s): U-net, classical base, linear theory.

    A pixel statistic (what `velnet evaluate` calls the "all k" error), so it needs no power
    spectra and runs where nbodykit is not installed.
    """
    from velnet.fields import load_fields
    from velnet.linear import linear_prediction

    truth = load_fields(args.truth, ["density", "velocity"])
    v = truth["velocity"].value.astype(np.float64)
    rms = lambda pred: float(np.sqrt(np.mean((np.asarray(pred, np.float64) - v) ** 2)))  # noqa: E731
    out = {"truth_rms": float(np.sqrt(np.mean((v - v.mean(axis=(0, 1, 2))) ** 2))),
           "unet": rms(load_fields(args.pred, ["velocity"])["velocity"].value),
           "linear": rms(linear_prediction(truth["density"])["velocity"].value)}
    if args.classical_pred:
        out["classical"] = rms(load_fields(args.classical_pred, ["velocity"])["velocity"].value)
        out["classical_name"] = f"classical estimator ({Path(args.classical_base).name})"
    elif args.smoothing is not None:
        out["classical"] = rms(linear_prediction(truth["density"], args.smoothing)["velocity"].value)
        out["classical_name"] = f"linear theory, R = {args.smoothing:g} Mpc/h (fitted)"
    if "classical" in out:
        out["unet_over_classical"] = out["unet"] / out["classical"]
        out["goal"] = "U-net whole-box error at least 20 % below the classical estimator's"
        out["goal_met"] = out["unet_over_classical"] <= 0.8
    out["test_box"] = str(args.truth)
    say("whole-box rms error of one velocity component: " + ", ".join(
        f"{k} {out[k]:.1f} km/s" for k in ("truth_rms", "unet", "classical", "linear") if k in out))
    write_json(Path(args.state) / "metrics.json", out)


# --- weights out and back --------------------------------------------------------------------

def export_weights(args):
    """The trained model's weights as float16 arrays in one .npz, cut into parts, + a JSON
    manifest (config, scale, metadata, sha256) from which `import-model` rebuilds it."""
    from velnet.train import load_model

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
                "scale": layer.scale, "metadata": metadata,
                "max_abs_rounding": float(max(np.abs(w - w.astype(np.float16).astype(w.dtype)).max()
                                              for w in weights if w.size))}
    write_json(Path(args.state) / "weights.json", manifest)
    say(f"{len(weights)} weight arrays, {model.count_params():,} parameters -> {n_parts} part(s) of "
        f"<= {size / MiB:.2f} MiB in {out} (float16 npz, {len(blob) / MiB:.1f} MiB)")


def import_model(args):
    """Rebuild the km/s model from a results folder's parts and JSON: DEST/velocity.keras (float32),
    with the logs and experiment.json that velnet/pretrained folders hold."""
    import keras

    from velnet.models import physical_model
    from velnet.train import save_keras

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
                               "classical_base": data.get("classical"),
                               "smoothing": data.get("smoothing")}},
        "train": {k: train.get(k) for k in ("batch_size", "learning_rate", "dtype_policy", "best")},
        "weights": "float16 on the node, stored here as float32",
        "test_metrics": state.get("metrics")}, indent=1) + "\n")
    if data.get("classical_model"):
        name = "classical.json" if data.get("interface") == "classical" else "baseline.json"
        (dest / name).write_text(json.dumps(data["classical_model"], indent=1) + "\n")
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
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--state", required=True)
    s.set_defaults(func=train_step)
    s = sub.add_parser("metrics")
    s.add_argument("truth"); s.add_argument("pred")  # noqa: E702
    s.add_argument("--classical-pred")
    s.add_argument("--classical-base", default="")
    s.add_argument("--smoothing", type=float)
    s.add_argument("--state", required=True)
    s.set_defaults(func=metrics)
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

"""Where does the network overtake classical physics? Whole-box error against training compute.

A residual U-net over the classical estimator (`velnet prep --base`, preset tiny-residual)
is trained on the boxes of `experiments.wu2021`; its weights are kept at chosen epochs, and
each snapshot predicts the whole test boxes (both cosmologies). Each point of the curve is
the mean abs(v_res) and the rms error per k band against the samples, target cells and CPU
seconds of training so far, beside the classical base alone. A second output per point
keeps the network's correction only where it helps: base + g(k) (network - base), with
g(k) fitted by least squares per |k| bin on the validation box.

    python -m experiments.compute_curve --out runs/wu2021-tiny          # shares wu2021's boxes
    python -m experiments.compute_curve --out runs/wu2021-tiny --set 'runs=["window-52"]'

A run interrupted mid-training resumes from its last epoch (velnet train's backup); points
already measured are kept in curve.json. docs/compute-curve.md holds the results.
"""
import argparse
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np

from experiments import run_velnet, with_overrides
from experiments.classical import CONFIG as CLASSICAL_CONFIG
from experiments.classical import fit_sets
from experiments.wu2021 import fields_for_seed

log = logging.getLogger("experiments.compute_curve")

CONFIG = {
    "boxes": CLASSICAL_CONFIG["boxes"],
    "base": "linear+bernardeau+2lpt-log",  # the classical set (experiments.classical) the network corrects
    "learning_rate": 3e-4,
    "recipes": {
        # velnet's shipped recipe: 32^3 windows on 20^3 targets, 256 training tiles per epoch
        "window-32": {"preset": "tiny-residual", "tile": 20, "margin": 6, "batch_size": 6,
                      "epochs": 100, "snapshots": [6, 12, 25, 50, 100]},
        # the same margin around 40^3 targets: 45 % of each window is target, not 24 %; an epoch
        # (32 tiles) holds as many target cells as window-32's (256 tiles)
        "window-52": {"preset": "tiny-residual", "tile": 40, "margin": 6, "batch_size": 2,
                      "epochs": 100, "snapshots": [12, 25, 50, 100]},
    },
    "runs": ["window-32", "window-52"],
}


class Snapshots(keras.callbacks.Callback):
    """Save the network's weights at given epochs and the seconds of every epoch.

    Args:
        folder: where `epoch-NNNN.npz` and `epochs.jsonl` go.
        epochs: 1-based epochs whose end-of-epoch weights are kept.
    """

    def __init__(self, folder, epochs):
        super().__init__()
        self.folder, self.epochs = Path(folder), set(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        with open(self.folder / "epochs.jsonl", "a") as f:
            f.write(json.dumps({"epoch": epoch + 1, "seconds": time.time() - self._start}) + "\n")
        if epoch + 1 in self.epochs:
            np.savez(self.folder / f"epoch-{epoch + 1:04d}.npz", *self.model.get_weights())


def train_recipe(out, name, recipe, config, train, val, base):
    """Shards over the classical base, then training with snapshots; returns (shards, run folder)."""
    from velnet.training.train import train as train_network

    data = out / "data" / f"curve-{name}"
    run_velnet("prep", *train, *val, "--split", *(["train"] * len(train) + ["val"] * len(val)),
               "--base", base, "--tile", recipe["tile"], "--margin", recipe["margin"], "--out", data)
    folder = out / "models" / f"curve-{name}"
    if not (folder / "model.keras").exists():
        folder.mkdir(parents=True, exist_ok=True)
        train_network(data, folder, {"preset": recipe["preset"]}, recipe["epochs"], batch_size=recipe["batch_size"],
                      learning_rate=config["learning_rate"], callbacks=[Snapshots(folder, recipe["snapshots"])])
    return data, folder


def band_errors(prediction, truth):
    """mean abs(v_res) (km/s) and the rms error of one component per k band."""
    from velnet.statistics import spectra

    spectrum = spectra.error_spectrum(prediction, truth)
    residual = np.linalg.norm(prediction.value.astype(np.float64) - truth.value, axis=-1)
    return {"mean_abs_v_res": float(residual.mean()), "rms_all": spectrum.attrs["rms_error_all"],
            "bands": [float(x) for x in spectrum["rms_error"]],
            "edges": [float(x) for x in spectrum["k_lo"]] + [float(spectrum["k_hi"][-1])]}


def restriction(correction, wanted, kedges, min_modes=20):
    """Least-squares gain per |k| bin of the network's correction towards the wanted one
    (truth - base), from nbodykit cross spectra; 0 in bins with fewer modes."""
    from velnet.statistics.spectra import power

    cross, auto = power(correction, wanted, kedges), power(correction, kedges=kedges)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.nan_to_num(cross["power"] / auto["power"])
    return np.where(cross["modes"] >= min_modes, gain, 0.0)


def restricted(base, prediction, gain, kedges):
    """base + g(|k|) (prediction - base), as a velocity `Field`."""
    from velnet.physics.linear import wavevectors

    _, _, k2 = wavevectors(base.nmesh, base.box_size)
    g = gain[np.clip(np.digitize(np.sqrt(k2), kedges) - 1, 0, len(gain) - 1)]
    correction = prediction.value.astype(np.float64) - base.value
    shape = base.value.shape[:3]
    value = base.value + np.stack([np.fft.irfftn(np.fft.rfftn(correction[..., i]) * g, s=shape,
                                                 axes=(0, 1, 2)) for i in range(3)], axis=-1)
    return base.with_value(value.astype(np.float32))


def measure(data, folder, recipe, boxes, val_box, base):
    """Curve points of one run: each snapshot on the test boxes, plain and restricted."""
    from velnet.networks.unet3d import physical_model
    from velnet.physics.classical import absolute_kedges
    from velnet.prediction.predict import predict_box
    from velnet.training.train import load_model

    _, metadata = load_model(folder / "model.keras")
    scale, config = metadata.target_scale, metadata.model_config
    seconds = np.cumsum([json.loads(line)["seconds"] for line in (folder / "epochs.jsonl").read_text().split("\n")
                         if line])
    train_tiles = json.loads((data / "manifest.json").read_text())["split"]["counts"]["train"]
    kedges = absolute_kedges(val_box["density"].cell_size, 32)
    points = []
    for epoch in recipe["snapshots"]:
        with np.load(folder / f"epoch-{epoch:04d}.npz") as f:
            weights = [f[f"arr_{i}"] for i in range(len(f.files))]
        model = physical_model(config, weights, scale, metadata.to_dict())
        val_pred = predict_box(model, metadata, val_box["density"])
        val_base = base.velocity(val_box["density"])
        gain = restriction(val_pred.with_value(val_pred.value - val_base.value),
                           val_pred.with_value(val_box["velocity"].value - val_base.value), kedges)
        point = {"epoch": epoch, "train_seconds": float(seconds[epoch - 1]), "samples": epoch * train_tiles,
                 "target_cells": epoch * train_tiles * recipe["tile"] ** 3, "boxes": {}}
        for name, box in boxes.items():
            pred = predict_box(model, metadata, box["density"])
            box_base = base.velocity(box["density"])
            point["boxes"][name] = {"network": band_errors(pred, box["velocity"]),
                                    "restricted": band_errors(restricted(box_base, pred, gain, kedges),
                                                              box["velocity"])}
        errors = {n: round(b["network"]["mean_abs_v_res"], 2) for n, b in point["boxes"].items()}
        log.info("epoch %d: %s", epoch, errors)
        points.append(point)
    return points


def figure(result, path):
    """mean abs(v_res) of the network and of its restricted correction against samples seen, one
    panel per test box, beside the classical base and smoothed linear theory; saved to `path`."""
    from velnet.reports.plots import compute_curve_figure

    panels = {}
    for box, classical in result["classical"].items():
        curves = {}
        for name, run in result["runs"].items():
            x = [p["samples"] for p in run["points"]]
            curves[f"U-net {name}"] = (x, [p["boxes"][box]["network"]["mean_abs_v_res"] for p in run["points"]])
            curves[f"U-net {name}, restricted"] = (x, [p["boxes"][box]["restricted"]["mean_abs_v_res"]
                                                       for p in run["points"]])
        title = "test box, training cosmology" if box == "test" else f"test box, {box} cosmology"
        panels[title] = {"curves": curves, "lines": {"classical base": classical["mean_abs_v_res"]}}
    compute_curve_figure(panels, title="residual U-net over the classical estimator, 2-core CPU").savefig(path, dpi=110)
    return path


def run(out, config=CONFIG):
    """Train every run of `config["runs"]` and measure its curve into out/compute-curve/curve.json."""
    from velnet.fields.field import load_fields
    from velnet.physics.classical import ClassicalEstimator

    out, boxes = Path(out), config["boxes"]
    train = [fields_for_seed(out, boxes, s) for s in boxes["train_seeds"]]
    val = [fields_for_seed(out, boxes, s) for s in boxes["val_seeds"]]
    tests = {"test": fields_for_seed(out, boxes, boxes["test_seed"])}
    if boxes.get("other_cosmology"):
        tests[boxes["other_cosmology"]] = fields_for_seed(out, boxes, boxes["test_seed"], boxes["other_cosmology"])
    chosen = {"sets": {config["base"]: CLASSICAL_CONFIG["sets"][config["base"]]}}
    base_file = fit_sets(out, chosen, train)[config["base"]]
    base = ClassicalEstimator.load(base_file)
    loaded = {name: load_fields(path, ["density", "velocity"]) for name, path in tests.items()}
    val_box = load_fields(val[0], ["density", "velocity"])
    result_file = out / "compute-curve" / "curve.json"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result = json.loads(result_file.read_text()) if result_file.exists() else {"runs": {}}
    result["classical"] = {name: band_errors(base.velocity(b["density"]), b["velocity"]) for name, b in loaded.items()}
    result["base"] = {"set": config["base"], "file": str(base_file)}
    for name in config["runs"]:
        recipe = config["recipes"][name]
        data, folder = train_recipe(out, name, recipe, config, train, val, base_file)
        result["runs"][name] = {"recipe": recipe, "points": measure(data, folder, recipe, loaded, val_box, base)}
        result_file.write_text(json.dumps(result, indent=1) + "\n")
    figure(result, result_file.with_name("compute-curve.png"))
    return result_file


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/wu2021-tiny", help="experiment folder (shared with experiments.wu2021)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override CONFIG entries")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(run(args.out, with_overrides(CONFIG, args.set, p.error)))


if __name__ == "__main__":
    main()

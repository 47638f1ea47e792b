"""The classical reference: every combination of classical estimators, fitted, chosen and tested.

On the boxes of the Wu et al. 2021 experiment (`experiments.wu2021`: four 160 Mpc/h training
boxes, one validation box, a test box in their cosmology and one in the 2024 halo paper's),
fits each set of estimators per |k| on the training boxes (`velnet baseline`), picks the set
with the lowest velocity error on the validation box, fits its power-preserving correction
there (`velnet calibrate`), and evaluates every set, the shipped networks and linear theory
on both whole test boxes (`velnet predict`, `velnet evaluate`).

    python -m experiments.classical --out runs/wu2021-tiny            # shares wu2021's boxes
    python -m experiments.classical --out runs/wu2021-tiny --ship     # and ship the chosen set

`--ship` copies the chosen estimator and its correction to velnet/pretrained/classical-wu2021/.
"""
import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from experiments import run_velnet, with_overrides
from experiments.wu2021 import CONFIG as WU2021_CONFIG
from experiments.wu2021 import PRETRAINED, fields_for_seed

log = logging.getLogger("experiments.classical")

CONFIG = {
    "boxes": {k: WU2021_CONFIG[k] for k in ("box_size", "nmesh", "train_seeds", "val_seeds", "test_seed",
                                            "other_cosmology")},
    # estimator sets, NAME or NAME:R (Gaussian radius on delta, Mpc/h); the first of each set is
    # its large-scale prior
    "sets": {
        "linear": ["linear"],
        "bernardeau": ["bernardeau"],
        "2lpt-log": ["2lpt-log"],
        "linear+bernardeau": ["linear", "bernardeau"],
        "linear+bernardeau-R1": ["linear", "bernardeau:1"],
        "linear+2lpt-log": ["linear", "2lpt-log"],
        "linear+bernardeau+2lpt-log": ["linear", "bernardeau", "2lpt-log"],
    },
    "networks": ["wu2021-tiny-residual-context-R6"],  # shipped networks evaluated beside them
    "ship_name": "classical-wu2021",
}


def fit_sets(out, config, train):
    """`velnet baseline` for every set (skipped where fitted); returns set -> estimator file."""
    files = {}
    for name, estimators in config["sets"].items():
        files[name] = out / "classical" / f"{name}.json"
        if not files[name].exists():
            run_velnet("baseline", *train, "--estimators", *estimators, "--out", files[name])
    return files


def validation_errors(out, files, val):
    """rms velocity error (km/s, one component) of every set on the validation boxes."""
    from velnet.fields.field import load_fields
    from velnet.physics.classical import ClassicalEstimator

    boxes = [load_fields(path, ["density", "velocity"]) for path in val]
    errors = {}
    for name, path in files.items():
        estimator = ClassicalEstimator.load(path)
        errors[name] = float(np.sqrt(np.mean([np.mean((estimator.velocity(b["density"]).value
                                                       - b["velocity"].value) ** 2) for b in boxes])))
        log.info("%-28s validation rms error %.2f km/s", name, errors[name])
    (out / "classical" / "validation.json").write_text(json.dumps(errors, indent=1) + "\n")
    return errors


def evaluate_box(out, fields, files, chosen, networks, name):
    """Predict a test box with every set, the chosen set's power-preserving output and the
    shipped networks, and evaluate them against the chosen set as the reference."""
    predictions, names = [], []
    for set_name, path in files.items():
        if set_name == chosen:
            continue
        predictions.append(out / "predictions" / f"classical-{set_name}-{fields.stem}.h5")
        run_velnet("predict", fields, path, "--out", predictions[-1])
        names.append(f"classical {set_name}")
    predictions.append(out / "predictions" / f"classical-{chosen}-power-{fields.stem}.h5")
    run_velnet("predict", fields, files[chosen], "--power-preserving", "--out", predictions[-1])
    names.append(f"classical {chosen}, power-preserving")
    for network in networks:
        models = [PRETRAINED / network / f"{t}.keras" for t in ("velocity", "momentum")
                  if (PRETRAINED / network / f"{t}.keras").exists()]
        predictions.append(out / "predictions" / f"{network}-{fields.stem}.h5")
        run_velnet("predict", fields, *models, "--out", predictions[-1])
        names.append(f"U-net {network}")
    report = out / name
    run_velnet("evaluate", fields, *predictions, "--names", *names, "--baseline", files[chosen], "--out", report)
    return report / "report.md"


def run(out, config=CONFIG, ship=False):
    """Fit, choose, calibrate and evaluate; returns the report paths (own cosmology, other)."""
    out, boxes = Path(out), config["boxes"]
    train = [fields_for_seed(out, boxes, s) for s in boxes["train_seeds"]]
    val = [fields_for_seed(out, boxes, s) for s in boxes["val_seeds"]]
    tests = [fields_for_seed(out, boxes, boxes["test_seed"])]
    if boxes.get("other_cosmology"):
        tests.append(fields_for_seed(out, boxes, boxes["test_seed"], boxes["other_cosmology"]))
    files = fit_sets(out, config, train)
    errors = validation_errors(out, files, val)
    chosen = min(errors, key=errors.get)
    log.info("chosen by validation: %s", chosen)
    run_velnet("calibrate", files[chosen], *val)
    if ship:
        folder = PRETRAINED / config["ship_name"]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(files[chosen], folder / "velocity.json")
        shutil.copy(files[chosen].with_suffix(".power.json"), folder / "velocity.power.json")
        (folder / "experiment.json").write_text(json.dumps({**config, "chosen": chosen, "validation_rms_error":
                                                            errors}, indent=1) + "\n")
    reports = [evaluate_box(out, tests[0], files, chosen, config["networks"], "report-classical")]
    if len(tests) > 1:
        reports.append(evaluate_box(out, tests[1], files, chosen, config["networks"],
                                    f"report-classical-{boxes['other_cosmology']}"))
    return reports


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/wu2021-tiny", help="experiment folder (shared with experiments.wu2021)")
    p.add_argument("--ship", action="store_true", help="copy the chosen set into velnet/pretrained")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="override CONFIG entries")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    print(*run(args.out, with_overrides(CONFIG, args.set, p.error), ship=args.ship), sep="\n")


if __name__ == "__main__":
    main()

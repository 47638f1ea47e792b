"""Wu et al. 2021 at laptop scale: simulate, prepare, train, predict and evaluate, in velnet commands.

Every stage is a `velnet` command (printed as it runs), so the same steps can be replayed by
hand or on other machines. Stages whose outputs exist are skipped, so an interrupted run
resumes (training itself resumes from its last epoch).

    python -m experiments.wu2021 --out runs/wu2021-tiny            # the frozen CONFIG
    python -m experiments.wu2021 --out runs/wu2021-tiny --ship     # and copy the models into velnet/pretrained

The data: fastpm boxes at the paper's resolution (1 Mpc/h particle spacing, 2 Mpc/h grid, z = 0,
the paper's cosmology), smaller than the paper's 512 Mpc/h so that they run on 2 cores. Whole
boxes are the split: `train_seeds` for training, `val_seeds` for validation, `test_seed` never
seen in training.
"""
import argparse
import json
import logging
import shutil
from pathlib import Path

from experiments import run_velnet, with_overrides
from velnet.training.train import read_history

log = logging.getLogger("experiments.wu2021")

CONFIG = {
    "name": "wu2021-tiny",      # prefix of the folders under velnet/pretrained when shipped
    "box_size": 160.0,          # Mpc/h
    "nmesh": 80,                # 2 Mpc/h cells
    "train_seeds": [1, 2, 3, 4],
    "val_seeds": [5],
    "test_seed": 100,
    # a test box of another cosmology (the 2024 halo paper's WMAP-like set) at the same z,
    # box and resolution: how much do models trained on one cosmology degrade on another?
    "other_cosmology": "halo2024",
    "variants": {
        # The paper's design: ln(1 + delta) in a 32^3 window -> v on the central 20^3.
        "paper": {"preset": "tiny", "linear_input": False, "targets": ["velocity"]},
        # velnet's: also v_L (linear theory smoothed at the fitted R, from the whole box; for
        # momentum (1 + delta) v_L) as input, and the network adds its correction to it
        # (issue 8, variant 1).
        "residual": {"preset": "tiny-residual", "linear_input": True,
                     "targets": ["velocity", "momentum"]},
        # v_L as input channels only, the network predicting v itself (variant 2).
        "linear-input": {"preset": "tiny", "linear_input": True, "targets": ["velocity"]},
        # a context channel: the density in 2^3-cell blocks, a 128 Mpc/h window around each
        # 32^3 input (variant 3; F = 4 would wrap around these 160 Mpc/h boxes).
        "context": {"preset": "tiny", "linear_input": False, "context": 2, "targets": ["velocity"]},
        # variants 1 and 3 together.
        "residual-context": {"preset": "tiny-residual", "linear_input": True, "context": 2,
                             "targets": ["velocity"]},
        # the smoothing radius of v_L as a hyperparameter: variant 1 at other radii than the
        # baseline's fitted one (the others use that).
        "residual-R1": {"preset": "tiny-residual", "linear_input": True, "smoothing": 1.0,
                        "targets": ["velocity"]},
        "residual-R6": {"preset": "tiny-residual", "linear_input": True, "smoothing": 6.0,
                        "targets": ["velocity", "momentum"]},
        "residual-R9": {"preset": "tiny-residual", "linear_input": True, "smoothing": 9.0,
                        "targets": ["velocity"]},
        "residual-context-R6": {"preset": "tiny-residual", "linear_input": True, "smoothing": 6.0,
                                "context": 2, "targets": ["velocity"]},
    },
    "ship": ["paper", "residual-context-R6"],  # what `--ship` copies: the paper design and the best
    "epochs": 25,
    "batch_size": 6,
    "learning_rate": 3e-4,
    "smoothing_radii": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0],  # Mpc/h, for the smoothed baseline
}

PRETRAINED = Path(__file__).resolve().parent.parent / "velnet" / "pretrained"


def fields_for_seed(out, config, seed, cosmology="wu2021"):
    """Simulate and paint one box at z = 0 with 1 Mpc/h particle spacing in a preset's
    cosmology (skipped where the outputs exist); return its fields file."""
    name = f"seed{seed}" if cosmology == "wu2021" else f"{cosmology}-seed{seed}"
    sim = out / "sims" / name
    fields = out / "fields" / f"{name}.h5"
    snapshot = sim / "snapshot_z0.000"
    if not snapshot.exists():
        run_velnet("simulate", "--preset", cosmology, "--box", config["box_size"],
                   "--particles", round(config["box_size"]), "--z", 0, "--seed", seed, "--out", sim)
    if not fields.exists():
        run_velnet("paint", snapshot, "--nmesh", config["nmesh"], "--out", fields)
    return fields


def run(out, config=CONFIG, ship=False):
    """Run the whole experiment into `out`; return the paths of the reports (own cosmology,
    other cosmology)."""
    out = Path(out)
    train = [fields_for_seed(out, config, s) for s in config["train_seeds"]]
    val = [fields_for_seed(out, config, s) for s in config["val_seeds"]]
    test = fields_for_seed(out, config, config["test_seed"])
    classical = out / "classical.json"
    if not classical.exists():
        run_velnet("baseline", *train, "--radii", *config["smoothing_radii"], "--out", classical)
    radius = json.loads(classical.read_text())["attrs"]["linear_smoothing"]["radius"]
    splits = ["train"] * len(train) + ["val"] * len(val)
    models = {}
    for variant, settings in config["variants"].items():
        models[variant] = {}
        for target in settings["targets"]:
            data = out / "data" / f"{variant}-{target}"
            linear = (["--linear-input", "--smoothing", settings.get("smoothing", radius)]
                      if settings["linear_input"] else [])
            context = ["--context", settings["context"]] if settings.get("context") else []
            run_velnet("prep", *train, *val, "--split", *splits, "--target", target, *linear, *context,
                       "--out", data)
            run_dir = out / "models" / f"{variant}-{target}"
            if not (run_dir / "model.keras").exists():
                run_velnet("train", data, "--out", run_dir, "--preset", settings["preset"],
                           "--epochs", config["epochs"], "--batch-size", config["batch_size"],
                           "--learning-rate", settings.get("learning_rate", config["learning_rate"]))
            models[variant][target] = run_dir / "model.keras"
        if ship and variant in config["ship"]:
            ship_models(config, variant, models[variant])
    write_validation(out, models)
    reports = [evaluate_box(out, test, models, classical, "report")]
    if config.get("other_cosmology"):
        other = fields_for_seed(out, config, config["test_seed"], config["other_cosmology"])
        reports.append(evaluate_box(out, other, models, classical, f"report-{config['other_cosmology']}"))
    return reports


def evaluate_box(out, fields, models, classical, name):
    """Predict a test box with every variant's models (variant -> target -> model path) and
    evaluate them against the classical estimator `classical` (fitted on the training boxes),
    linear theory and linear theory smoothed at the radius fitted with it.

    Returns:
        path of the report, `out/<name>/report.md`.
    """
    predictions = []
    for variant, paths in models.items():
        predictions.append(out / "predictions" / f"{variant}-{fields.stem}.h5")
        run_velnet("predict", fields, *paths.values(), "--out", predictions[-1])
    report = out / name
    run_velnet("evaluate", fields, *predictions, "--names", *(f"U-net {v}" for v in models),
               "--baseline", classical, "--out", report)
    return report / "report.md"


def write_validation(out, models):
    """Best validation loss of every trained model (variant -> target -> model path), per
    target, best first, to out/validation.json.

    The variants share their data and the target scale (a power of two of the same training
    boxes), so their normalised validation MSEs compare directly: this picks the method.
    """
    table = {}
    for variant, paths in models.items():
        for target, path in paths.items():
            history = read_history(path.parent / "history.csv")
            best = min(history, key=lambda row: row["val_loss"])
            table.setdefault(target, []).append({"variant": variant, "val_loss": best["val_loss"],
                                                 "epoch": best["epoch"], "epochs": len(history)})
    for target, rows in table.items():
        rows.sort(key=lambda row: row["val_loss"])
        for row in rows:
            log.info("%s %-18s best val_loss %.4f (epoch %d of %d)", target, row["variant"],
                     row["val_loss"], row["epoch"], row["epochs"])
    (out / "validation.json").write_text(json.dumps(table, indent=1) + "\n")


def ship_models(config, variant, models):
    """Copy trained models (target -> path) and their logs into velnet/pretrained/<name>-<variant>/."""
    folder = PRETRAINED / f"{config['name']}-{variant}"
    folder.mkdir(parents=True, exist_ok=True)
    for target, model in models.items():
        shutil.copy(model, folder / f"{target}.keras")
        for log_file in ("history.csv", "train_config.json"):
            shutil.copy(model.parent / log_file, folder / f"{target}-{log_file}")
    (folder / "experiment.json").write_text(
        json.dumps({**config, "variants": {variant: config["variants"][variant]}}, indent=1) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/wu2021-tiny", help="experiment folder")
    p.add_argument("--ship", action="store_true",
                   help="copy the models of CONFIG['ship'] into velnet/pretrained")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                   help="override CONFIG entries, e.g. --set epochs=2 'train_seeds=[1]'")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = with_overrides(CONFIG, args.set, p.error)
    print(*run(args.out, config, ship=args.ship), sep="\n")


if __name__ == "__main__":
    main()

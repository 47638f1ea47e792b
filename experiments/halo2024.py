"""The 2024 halo paper at laptop scale: velocity and momentum from redshift-space halos, end to end.

Every stage is a `velnet` command (logged as a shell line), so the same steps can be replayed
by hand or on other machines: fastpm boxes at z = 0.59 in the paper's cosmology (`velnet
simulate --preset halo2024`), FOF halos (`velnet halos`), the redshift-space halo channels and
real-space targets for both weighting schemes (`velnet halo-fields`); then per scheme the
shards and network of stage one (`velnet prep --task halo-density`, `velnet train`: 4 halo
channels -> real-space density, eq. 5), and of stage two for the velocity and the momentum
(`--task halo-velocity`: the halo channels, stage one's whole-box density and the linear
velocity or momentum of eq. 2-3 -> magnitude and direction, eq. 6). Each stage is trained in
every candidate design of the config on the same data and budget, and the one with the lowest
validation loss is kept (models/WEIGHTING/designs.json): the paper's, and a residual over a
whole-box linear estimate (stage one: the linear real-space density from the redshift-space
halos, `velnet.physics.rsd.linear_density`; stage two: eq. 2-3's linear velocity). A config with a
"search" runs `velnet tune` (keras-tuner, the paper's search space) before each training and
trains with its best hyperparameters. The momentum kept is the
momentum network's or, as the paper forms it, stage one's density times stage two's velocity,
whichever correlates better with the truth on the validation boxes (eq. 10); predictions of
the whole test boxes (`velnet predict`) and the report (`velnet evaluate --report halo2024`).
Stages whose outputs exist are skipped, so an interrupted run resumes (training itself
resumes from its last epoch).

    python -m experiments.halo2024 --out runs/halo2024            # the frozen CONFIG, 2 cores
    python -m experiments.halo2024 --out runs/halo2024-large --large
    python -m experiments.halo2024 --out runs/x --set epochs_density=2 'train_seeds=[1]'

Scale. The paper: CosmicGrowth, one 1200 Mpc/h box with 2048^3 particles (0.59 Mpc/h
spacing), halos and subhalos down to 3e-3 (h/Mpc)^3, CIC on 512^3 (2.35 Mpc/h), trained
on 32 sub-boxes of 300 Mpc/h (128^3 cells), tested on 25 boxes of 600 Mpc/h (256^3).
The default here: five fastpm boxes of 128 Mpc/h with 128^3 particles (1 Mpc/h spacing,
10 steps, about a minute each on 2 cores), 3 for training, 1 for validation, 1 for the
test, painted on 64^3 (2 Mpc/h) and trained on the 32^3 sub-boxes (64 Mpc/h) that tile
them, with narrow nets and a few epochs. FOF halos of at least 20 particles (7.4e10 Msun/h
each) reach only about 1.7e-3 (h/Mpc)^3 at this resolution (see `data_prep.halo_fields`): the
first two mass channels and part of the third, the fourth empty; the test volume is 1/400 of
the paper's, so every spectrum has few modes (k_f = 0.049 h/Mpc). `--large` (for a GPU node)
uses 256 Mpc/h boxes with 256^3 particles on 128^3 meshes, 8 + 2 + 2 boxes, 64^3 sub-boxes
and wider nets trained longer. Its boxes take several minutes each on one core; simulate them
beforehand in parallel, e.g. `mpirun -n 16 velnet simulate --preset halo2024 --box 256
--particles 256 --seed S --out OUT/sims/seedS`, and the run picks them up.
"""
import argparse
import json
import logging
from pathlib import Path

from experiments import run_velnet, with_overrides
from velnet.errors import VelnetInputError

log = logging.getLogger("experiments.halo2024")

CONFIG = {
    "box_size": 128.0,            # Mpc/h
    "particles": 128,             # per side: 1 Mpc/h spacing
    "nmesh": 64,                  # 2 Mpc/h cells
    "redshift": 0.59,
    "train_seeds": [1, 2, 3],
    "val_seeds": [4],
    "test_seeds": [100],
    "los": "z",
    "weightings": ["number", "mass"],
    "targets": ["velocity", "momentum"],
    "momentum": ["network", "product"],  # candidates, the better on the validation boxes kept
    # candidate designs of each stage, trained on the same data and budget; the lowest best
    # val_loss is kept: the paper's, and the residual over the whole-box linear estimate
    # (stage one: the linear real-space density from the halos, stage two: eq. 2-3's velocity)
    "density_models": {"paper": {"preset": "halo-tiny"}, "residual": {"preset": "halo-tiny-residual"}},
    "velocity_models": {"paper": {"preset": "halo-tiny"}, "residual": {"preset": "halo-tiny-residual"}},
    # null, or a keras-tuner search run before each network's training, whose best
    # hyperparameters it then trains with (`velnet tune`): e.g. {"algorithm": "random",
    # "max_trials": 8, "epochs": 5, "executions_per_trial": 5, "tune_boxes": true}
    "search": None,
    "size": 32,                   # training sub-box, cells per side
    "batch_size": 4,
    "epochs_density": 20,
    "epochs_velocity": 16,
    "learning_rate": 1e-3,
    "seed": 0,
}

LARGE = {
    "box_size": 256.0,
    "particles": 256,
    "nmesh": 128,
    "train_seeds": [1, 2, 3, 4, 5, 6, 7, 8],
    "val_seeds": [9, 10],
    "test_seeds": [100, 101],
    "density_models": {"paper": {"preset": "halo2024"}, "residual": {"preset": "halo2024-residual"}},
    "velocity_models": {"paper": {"preset": "halo2024"}, "residual": {"preset": "halo2024-residual"}},
    "size": 64,
    "batch_size": 4,
    "epochs_density": 100,
    "epochs_velocity": 100,
    "learning_rate": 3e-4,
}
"""Overrides of CONFIG for `--large`."""


def seeds(config):
    """Every box's seed, training first, then validation and test."""
    return [*config["train_seeds"], *config["val_seeds"], *config["test_seeds"]]


def prepare_box(out, config, seed):
    """Simulate a box, find its halos and paint its halo fields for each weighting (where missing).

    Returns:
        dict weighting -> fields file.
    """
    sim = out / "sims" / f"seed{seed}"
    snapshot = sim / f"snapshot_z{config['redshift']:.3f}"
    halos = out / "halos" / f"seed{seed}.h5"
    if not snapshot.exists():
        run_velnet("simulate", "--preset", "halo2024", "--box", config["box_size"], "--particles",
                   config["particles"], "--z", config["redshift"], "--seed", seed, "--out", sim)
    if not halos.exists():
        run_velnet("halos", snapshot, "--out", halos)
    files = {}
    for weighting in config["weightings"]:
        files[weighting] = out / "fields" / weighting / f"seed{seed}.h5"
        if not files[weighting].exists():
            run_velnet("halo-fields", snapshot, "--catalog", halos, "--nmesh", config["nmesh"], "--los",
                       config["los"], "--weighting", weighting, "--out", files[weighting])
    return files


def train_network(out, config, files, weighting, name, design, *prep):
    """`velnet prep` (the training and validation boxes), `velnet tune` when the config asks for
    a search, and `velnet train` of one network, each where missing.

    Args:
        name: "density", or a stage-two target.
        design: a key of the stage's candidate models (CONFIG "density_models" or "velocity_models").
        *prep: the task's `velnet prep` flags.

    Returns:
        The model's path.
    """
    stage = "density" if name == "density" else "velocity"
    model = config[f"{stage}_models"][design]
    fit = [*config["train_seeds"], *config["val_seeds"]]
    data = out / "data" / weighting / (f"{name}-linear" if "--linear-input" in prep else name)
    run = out / "models" / weighting / f"{name}-{design}"
    if not (data / "manifest.json").exists():
        run_velnet("prep", *(files[s] for s in fit), *prep, "--tile", config["size"], "--split",
                   *(["train"] * len(config["train_seeds"]) + ["val"] * len(config["val_seeds"])), "--out", data)
    run.mkdir(parents=True, exist_ok=True)
    settings = run.parent / f"{name}-{design}-config.json"
    write_once(settings, json.dumps({"model": model, "learning_rate": config["learning_rate"],
                                     "batch_size": config["batch_size"]}))
    if config["search"]:
        settings = search(out / "tuning" / weighting / f"{name}-{design}", data, settings, config)
    if not (run / "model.keras").exists():
        run_velnet("train", data, "--config", settings, "--epochs", config[f"epochs_{stage}"], "--seed",
                   config["seed"], "--out", run)
    return run / "model.keras"


def write_once(path, text):
    """Write `text` to `path` unless it holds it already (so that a resumed run changes no file)."""
    if not (path.exists() and path.read_text() == text):
        path.write_text(text)


def search(folder, data, settings, config):
    """`velnet tune` of one network from its base `settings` (where missing); returns its best_config.json."""
    best = folder / "best_config.json"
    if not best.exists():
        options = {"algorithm": "random", "max_trials": 8, "epochs": 5, "executions_per_trial": 1,
                   "tune_boxes": False, **config["search"]}
        flags = [f"--{key.replace('_', '-')}" for key in ("tune_boxes",) if options.pop(key)]
        run_velnet("tune", data, "--config", settings, "--seed", config["seed"], "--out", folder, *flags,
                   *(str(a) for key, value in options.items() for a in (f"--{key.replace('_', '-')}", value)))
    return best


def residual(model):
    """Whether a model config adds the dataset's whole-box estimate (needs `prep --linear-input` in
    stage one): its own `residual_channels`, or its preset's."""
    from velnet.networks.halo_unets import PRESETS

    preset = PRESETS.get(model.get("preset"), {})
    return model.get("residual_channels", preset.get("residual_channels")) is not None


def best_design(out, weighting, name, designs):
    """The design of the lowest best val_loss (train_config.json of each run); logs all of them."""
    scores = {design: json.loads((out / "models" / weighting / f"{name}-{design}" / "train_config.json")
                                 .read_text())["best"]["val_loss"] for design in designs}
    chosen = min(scores, key=scores.get)
    log.info("%s weighting, %s: best val_loss %s: the %s design kept", weighting, name, scores, chosen)
    return chosen


def predict(files, models, folder, seeds_of):
    """`velnet predict` of boxes with a set of models, where missing; returns the prediction files."""
    out = []
    for seed in seeds_of:
        out.append(folder / f"seed{seed}.h5")
        if not out[-1].exists():
            run_velnet("predict", files[seed], *models, "--out", out[-1])
    return out


def momentum_of(out, config, files, weighting, models):
    """The momentum models kept: the network's or none (the product), by C_r on the validation boxes.

    Writes the choice and both C_r (eq. 10, mean over the validation boxes) to
    models/WEIGHTING/momentum-choice.json.
    """
    from velnet.fields.field import load_fields
    from velnet.statistics.pixels import agreement

    record = out / "models" / weighting / "momentum-choice.json"
    if not record.exists():
        candidates = {"network": [models["momentum"]], "product": []}
        scores = {}
        for name in config["momentum"]:
            folder = out / "validation" / weighting / name
            paths = predict(files, [models["density"], models["velocity"], *candidates[name]], folder,
                            config["val_seeds"])
            pairs = [(load_fields(path, ["momentum"])["momentum"].value,
                      load_fields(files[seed], ["momentum"])["momentum"].value)
                     for path, seed in zip(paths, config["val_seeds"])]
            scores[name] = sum(agreement(pred, truth)["C_r"] for pred, truth in pairs) / len(pairs)
        chosen = max(scores, key=scores.get)
        log.info("%s weighting: momentum C_r on the validation boxes %s: the %s kept", weighting, scores, chosen)
        record.write_text(json.dumps({"chosen": chosen, "C_r": scores}, indent=1) + "\n")
    return [models["momentum"]] if json.loads(record.read_text())["chosen"] == "network" else []


def run_scheme(out, config, files, weighting):
    """Train both stages of one weighting scheme (every candidate design, the best by validation
    kept) and predict the test boxes; returns their prediction files.

    Writes the design kept per network to models/WEIGHTING/designs.json (each candidate's best
    val_loss is in its train_config.json).
    """
    density = {design: train_network(out, config, files, weighting, "density", design, "--task", "halo-density",
                                     *(["--linear-input"] if residual(model) else []))
               for design, model in config["density_models"].items()}
    chosen = {"density": best_design(out, weighting, "density", density)}
    models = {"density": density[chosen["density"]]}
    for target in config["targets"]:
        candidates = {design: train_network(out, config, files, weighting, target, design, "--task",
                                            "halo-velocity", "--target", target, "--density-model",
                                            models["density"])
                      for design in config["velocity_models"]}
        chosen[target] = best_design(out, weighting, target, candidates)
        models[target] = candidates[chosen[target]]
    write_once(out / "models" / weighting / "designs.json", json.dumps(chosen, indent=1) + "\n")
    kept = [models["density"], models["velocity"]]
    if "momentum" in models:
        kept += momentum_of(out, config, files, weighting, models)
    return predict(files, kept, out / "predictions" / weighting, config["test_seeds"])


def run(out, config=CONFIG):
    """Run the whole experiment into `out` (resuming a run of the same config there); return the report's path.

    Raises:
        VelnetInputError: `out` holds a run of another configuration.
    """
    out = Path(out)
    record = out / "config.json"
    if record.exists() and json.loads(record.read_text()) != json.loads(json.dumps(config)):
        raise VelnetInputError(record, "holds a run of another configuration; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(config, indent=1) + "\n")
    files = {seed: prepare_box(out, config, seed) for seed in seeds(config)}
    by_weighting = {w: {s: f[w] for s, f in files.items()} for w in config["weightings"]}
    predictions = {w: run_scheme(out, config, by_weighting[w], w) for w in config["weightings"]}
    report = out / "report"
    if not (report / "report.md").exists():
        test, schemes = config["test_seeds"], config["weightings"]
        run_velnet("evaluate", *(by_weighting[schemes[0]][s] for s in test),
                   *(p for w in schemes for p in predictions[w]),
                   "--report", "halo2024", "--boxes", len(test), "--names", *schemes, "--halo-fields",
                   *(by_weighting[w][s] for w in schemes for s in test), "--catalogs",
                   *(out / "halos" / f"seed{s}.h5" for s in test), "--los", config["los"], "--out", report)
    return report / "report.md"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/halo2024", help="experiment folder")
    p.add_argument("--large", action="store_true", help="the larger configuration (LARGE) for a GPU node")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                   help="override CONFIG entries, e.g. --set epochs_density=2 'train_seeds=[1]'")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = with_overrides({**CONFIG, **(LARGE if args.large else {})}, args.set, p.error)
    print(run(args.out, config))


if __name__ == "__main__":
    main()

"""The 2024 halo paper at laptop scale: density, velocity and momentum from redshift-space halos, end to end.

Every stage is a `velnet` command (logged as a shell line), so the same steps can be replayed
by hand or on other machines: fastpm boxes at z = 0.59 in the paper's cosmology (`velnet
simulate --preset halo2024 --cache`), FOF halos (`velnet halos --cache`), the redshift-space
halo channels and real-space targets for both weighting schemes (`velnet halo-fields`). Then,
per scheme:

1. the classical halo references, fitted on the training boxes (`velnet baseline --task
   halo-velocity`): the per-(k, mu) linear filter of the four halo channels (the bar every
   network must pass, and the base of the residual designs) and the iterative redshift-space
   reconstruction that kSZ analyses use;
2. stage one (`velnet prep --task halo-density`, `velnet train`: halo channels -> real-space
   density, eq. 5) and stage two for the velocity (`--task halo-velocity`: the halo
   channels, stage one's density and a whole-box estimate -> magnitude and direction, eq.
   6), each in every candidate design of the config on the same data and budget, the one
   with the lowest validation loss kept (models/WEIGHTING/designs.json). A design names its
   model and its base: none (the paper's design: stage two reads eq. 2-3's linear velocity),
   "linear" (stage one adds the linear real-space density, `velnet.physics.rsd.linear_density`)
   or a reference (the residual over the classical filter: `prep --base`);
3. the momentum: stage one's density times stage two's velocity, as the paper forms it, or
   a momentum network where the config asks for one (the better on the validation boxes,
   eq. 10, is kept);
4. predictions of the whole test boxes (`velnet predict`) and the report (`velnet evaluate
   --report halo2024 --classical`), every method against the classical filter.

A config with a "search" runs `velnet tune` (keras-tuner, the paper's search space) before
each training and trains with its best hyperparameters. Stages whose outputs exist are
skipped, so an interrupted run resumes (training itself resumes from its last epoch); more
epochs on a finished run continue it (`--set epochs_density=N`). `--ship` copies the kept
models, the references, their configs and logs to velnet/pretrained/halo2024-WEIGHTING/.

    python -m experiments.halo2024 --out runs/halo2024 --ship      # the frozen CONFIG, 2 cores
    python -m experiments.halo2024 --out runs/x --set epochs_density=2 'train_seeds=[1]'

Scale. The paper: CosmicGrowth, one 1200 Mpc/h box with 2048^3 particles (0.59 Mpc/h
spacing), halos and subhalos down to 3e-3 (h/Mpc)^3, CIC on 512^3 (2.35 Mpc/h), trained
on 32 sub-boxes of 300 Mpc/h (128^3 cells), tested on 25 boxes of 600 Mpc/h (256^3).
The default here: fastpm boxes of 128 Mpc/h with 128^3 particles (1 Mpc/h spacing, force
mesh 2, 10 steps) and FOF halos (linking length 0.25, at least 10 particles): the route of
`experiments.halo_routes` that fills the paper's four channels at the least cost
(docs/halo-routes.md), about 2 minutes a box on 2 cores. 24 boxes train, 2 validate and 8
test ((256 Mpc/h)^3 in all, so that P(k) has eq. 11's error bands), painted on 64^3 (2
Mpc/h cells); the networks train on the 32^3 sub-boxes (64 Mpc/h) that tile the boxes.
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
    # the halo route (experiments.halo_routes, docs/halo-routes.md): the cheapest that fills the paper's four
    # channels, with edges within 0.1 dex of the FOF host mass function
    "force_mesh": 2,
    "steps": 10,
    "linking_length": 0.25,
    "nmin": 10,
    "train_seeds": list(range(1, 25)),
    "val_seeds": [25, 26],
    "test_seeds": list(range(100, 108)),  # 8 boxes of 128 Mpc/h: (256 Mpc/h)^3 in all
    "los": "z",
    "weightings": ["number", "mass"],
    # the classical halo references fitted on the training boxes (velnet baseline --method); the first is the bar
    # of the report and the base of the designs that name it
    "references": {"filter": "filter", "reconstruction": "reconstruction"},
    "reconstruction_boxes": 4,    # training boxes the reconstruction's radius and bias are chosen on (a grid of 25)
    # candidate designs of each stage, trained on the same data and budget, the lowest best val_loss kept: a model
    # config and its base (None: the paper's design; "linear": the linear whole-box estimate; a reference's name)
    "density_models": {"residual-filter": {"model": {"preset": "halo-tiny-residual"}, "base": "filter"}},
    "velocity_models": {"residual-filter": {"model": {"preset": "halo-tiny-residual"}, "base": "filter"}},
    # momentum candidates, the better on the validation boxes kept: "product" (stage one's density times stage
    # two's velocity) and "network" (a stage-two network of the momentum, trained like the velocity's)
    "momentum": ["product"],
    # null, or a keras-tuner search run before each network's training, whose best
    # hyperparameters it then trains with (`velnet tune`): e.g. {"algorithm": "random",
    # "max_trials": 8, "epochs": 5, "executions_per_trial": 5, "tune_boxes": true}
    "search": None,
    "size": 32,                   # training sub-box, cells per side
    "batch_size": 4,
    "epochs_density": 40,
    "epochs_velocity": 40,
    "learning_rate": 1e-3,
    "seed": 0,
}

PRETRAINED = Path(__file__).resolve().parent.parent / "velnet" / "pretrained"


def seeds(config):
    """Every box's seed, training first, then validation and test."""
    return [*config["train_seeds"], *config["val_seeds"], *config["test_seeds"]]


def prepare_box(out, config, seed, subhalos=None):
    """Simulate a box, find its halos (with satellites of the `velnet halos --subhalos` model `subhalos`, if
    given) and paint its halo fields for each weighting (where missing).

    Returns:
        dict weighting -> fields file.
    """
    sim = out / "sims" / f"seed{seed}"
    snapshot = sim / f"snapshot_z{config['redshift']:.3f}"
    halos = out / "halos" / f"seed{seed}.h5"
    if not snapshot.exists():
        run_velnet("simulate", "--preset", "halo2024", "--box", config["box_size"], "--particles",
                   config["particles"], "--force-mesh", config["force_mesh"], "--steps", config["steps"], "--z",
                   config["redshift"], "--seed", seed, "--cache", "--out", sim)
    if not halos.exists():
        run_velnet("halos", snapshot, "--linking-length", config["linking_length"], "--nmin", config["nmin"],
                   *(["--subhalos", subhalos] if subhalos else []), "--cache", "--out", halos)
    files = {}
    for weighting in config["weightings"]:
        files[weighting] = out / "fields" / weighting / f"seed{seed}.h5"
        if not files[weighting].exists():
            run_velnet("halo-fields", snapshot, "--catalog", halos, "--nmesh", config["nmesh"], "--los",
                       config["los"], "--weighting", weighting, "--out", files[weighting])
    return files


def fit_references(out, config, files, weighting):
    """`velnet baseline` of each classical halo reference on the training boxes, where missing.

    Returns:
        dict reference name -> its file.
    """
    paths = {}
    for name, method in config["references"].items():
        paths[name] = out / "models" / weighting / f"reference-{name}.json"
        seeds = config["train_seeds"][:config["reconstruction_boxes"]] if method == "reconstruction" \
            else config["train_seeds"]
        if not paths[name].exists():
            run_velnet("baseline", *(files[s] for s in seeds), "--task", "halo-velocity", "--method", method,
                       "--out", paths[name])
    return paths


def base_flags(design, references, stage):
    """The `velnet prep` flags of a design's base."""
    base = design.get("base")
    if base is None:
        return []
    if base == "linear":
        return ["--linear-input"] if stage == "density" else []
    return ["--base", references[base]]


def train_network(out, config, files, weighting, name, design_name, design, *prep):
    """`velnet prep` (the training and validation boxes), `velnet tune` when the config asks for
    a search, and `velnet train` of one network, each where missing (or with fewer epochs than asked).

    Args:
        name: "density", or a stage-two target.
        design_name, design: a key of the stage's candidate designs and its {"model", "base"}.
        *prep: the task's `velnet prep` flags.

    Returns:
        The model's path.
    """
    stage = "density" if name == "density" else "velocity"
    fit = [*config["train_seeds"], *config["val_seeds"]]
    data = out / "data" / weighting / f"{name}-{design.get('base') or 'none'}"
    run = out / "models" / weighting / f"{name}-{design_name}"
    if not (data / "manifest.json").exists():
        run_velnet("prep", *(files[s] for s in fit), *prep, "--tile", config["size"], "--split",
                   *(["train"] * len(config["train_seeds"]) + ["val"] * len(config["val_seeds"])), "--out", data)
    run.mkdir(parents=True, exist_ok=True)
    settings = run.parent / f"{name}-{design_name}-config.json"
    write_once(settings, json.dumps({"model": design["model"], "learning_rate": config["learning_rate"],
                                     "batch_size": config["batch_size"]}))
    if config["search"]:
        settings = search(out / "tuning" / weighting / f"{name}-{design_name}", data, settings, config)
    epochs, done = config[f"epochs_{stage}"], epochs_done(run)
    if not (run / "model.keras").exists():  # new, or an interrupted run that resumes
        run_velnet("train", data, "--config", settings, "--epochs", epochs, "--seed", config["seed"], "--out", run)
    elif done < epochs:  # a finished run, trained further from its best weights
        run_velnet("train", data, "--config", settings, "--epochs", epochs - done, "--continue", "--seed",
                   config["seed"], "--out", run)
    return run / "model.keras"


def epochs_done(run):
    """Epochs a finished training run has completed (its train_config.json), 0 if none."""
    record = run / "train_config.json"
    final = json.loads(record.read_text()).get("final") if record.exists() else None
    return final["epoch"] + 1 if final else 0


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


def momentum_of(out, config, files, weighting, candidates):
    """The momentum models kept: a network's or none (the product of stage one and two), by C_r on the
    validation boxes.

    Args:
        candidates: dict candidate -> dict target -> the model ("product": stage one and two; "network": and the
            momentum network).

    Writes the choice and every C_r (eq. 10, mean over the validation boxes) to models/WEIGHTING/momentum-choice.json.
    """
    from velnet.fields.field import load_fields
    from velnet.statistics.pixels import agreement

    record = out / "models" / weighting / "momentum-choice.json"
    if not record.exists():
        scores = {}
        for name, models in candidates.items():
            paths = predict(files, models.values(), out / "validation" / weighting / name, config["val_seeds"])
            pairs = [(load_fields(path, ["momentum"])["momentum"].value,
                      load_fields(files[seed], ["momentum"])["momentum"].value)
                     for path, seed in zip(paths, config["val_seeds"])]
            scores[name] = sum(agreement(pred, truth)["C_r"] for pred, truth in pairs) / len(pairs)
        chosen = max(scores, key=scores.get)
        log.info("%s weighting: momentum C_r on the validation boxes %s: the %s kept", weighting, scores, chosen)
        record.write_text(json.dumps({"chosen": chosen, "C_r": scores}, indent=1) + "\n")
    return candidates[json.loads(record.read_text())["chosen"]]


def run_scheme(out, config, files, weighting):
    """The references and both stages of one weighting scheme (every candidate design, the best by validation
    kept); returns the kept models (density, velocity, momentum network if kept) and the references' files.

    Writes the design kept per network to models/WEIGHTING/designs.json (each candidate's best val_loss is
    in its train_config.json).
    """
    references = fit_references(out, config, files, weighting)
    density = {name: train_network(out, config, files, weighting, "density", name, design, "--task",
                                   "halo-density", *base_flags(design, references, "density"))
               for name, design in config["density_models"].items()}
    chosen = {"density": best_design(out, weighting, "density", density)}
    models = {"density": density[chosen["density"]]}
    targets = ["velocity"] + (["momentum"] if "network" in config["momentum"] else [])
    # stage two's prep reads stage one's density of each training and validation box from a file
    stage_one = predict(files, [models["density"]], out / "stage-one" / weighting,
                        [*config["train_seeds"], *config["val_seeds"]])
    for target in targets:
        candidates = {name: train_network(out, config, files, weighting, target, name, design, "--task",
                                          "halo-velocity", "--target", target, "--predicted", *stage_one,
                                          "--density-model", models["density"], *base_flags(design, references,
                                                                                             "velocity"))
                      for name, design in config["velocity_models"].items()}
        chosen[target] = best_design(out, weighting, target, candidates)
        models[target] = candidates[chosen[target]]
    write_once(out / "models" / weighting / "designs.json", json.dumps(chosen, indent=1) + "\n")
    stages = {"density": models["density"], "velocity": models["velocity"]}
    options = {"product": stages, **({"network": models} if "momentum" in models else {})}
    kept = momentum_of(out, config, files, weighting, {k: v for k, v in options.items() if k in config["momentum"]})
    return kept, references


def name_stage_one_beside(model_file, name):
    """Make a stage-two .keras file name its stage one by `name`, a file beside it (as a shipped pair), in
    place of the path recorded at training (`velnet.training.train.load_model` resolves it there)."""
    import zipfile

    from velnet.training.train import load_model

    recorded = load_model(model_file)[1].input_spec.density_model
    with zipfile.ZipFile(model_file) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members["config.json"] = members["config.json"].decode().replace(json.dumps(recorded)[1:-1], name).encode()
    tmp = model_file.with_name(model_file.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    tmp.replace(model_file)


def ship(out, config, weighting, kept, references):
    """Copy one scheme's kept models and references, with configs, histories and the experiment's record, into
    velnet/pretrained/halo2024-WEIGHTING/ (density.keras, velocity.keras[, momentum.keras], reference-*.json).

    Args:
        kept: dict target -> model path.
        references: dict name -> reference file.
    """
    import shutil

    folder = PRETRAINED / f"halo2024-{weighting}"
    folder.mkdir(parents=True, exist_ok=True)
    for target, model in kept.items():
        run = Path(model).parent
        shutil.copy(model, folder / f"{target}.keras")
        for name in ("history.csv", "train_config.json"):
            if (run / name).exists():
                shutil.copy(run / name, folder / f"{target}-{name}")
    if "density" in kept:
        for target in kept.keys() - {"density"}:
            name_stage_one_beside(folder / f"{target}.keras", "density.keras")
    for name, path in references.items():
        shutil.copy(path, folder / f"reference-{name}.json")
    record = {"made_by": f"python -m experiments.halo2024 --out {out} --ship", "weighting": weighting,
              "config": config, "designs": json.loads((out / "models" / weighting / "designs.json").read_text())}
    (folder / "experiment.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("shipped %s", folder)


def run(out, config=CONFIG, ship_models=False):
    """Run the whole experiment into `out` (resuming a run of the same config there); return the report's path.

    Raises:
        VelnetInputError: `out` holds a run of another configuration.
    """
    out = Path(out)
    record = out / "config.json"
    if record.exists() and _settled(json.loads(record.read_text())) != _settled(json.loads(json.dumps(config))):
        raise VelnetInputError(record, "holds a run of another configuration; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(config, indent=1) + "\n")
    files = {seed: prepare_box(out, config, seed) for seed in seeds(config)}
    by_weighting = {w: {s: f[w] for s, f in files.items()} for w in config["weightings"]}
    kept = {}
    for w in config["weightings"]:  # each scheme ships as soon as it is trained
        kept[w] = run_scheme(out, config, by_weighting[w], w)
        if ship_models:
            ship(out, config, w, *kept[w])
    predictions = {w: predict(by_weighting[w], models.values(), out / "predictions" / w, config["test_seeds"])
                   for w, (models, _) in kept.items()}
    report = out / "report"
    if not (report / "report.md").exists():
        test, schemes = config["test_seeds"], config["weightings"]
        run_velnet("evaluate", *(by_weighting[schemes[0]][s] for s in test),
                   *(p for w in schemes for p in predictions[w]),
                   "--report", "halo2024", "--boxes", len(test), "--names", *schemes, "--halo-fields",
                   *(by_weighting[w][s] for w in schemes for s in test), "--catalogs",
                   *(out / "halos" / f"seed{s}.h5" for s in test), "--los", config["los"], "--classical",
                   *(f"{w}={path}" for w in schemes for path in kept[w][1].values()), "--out", report)
    return report / "report.md"


def _settled(config):
    """A config without its epoch counts: training longer continues a run rather than making a new one."""
    return {k: v for k, v in config.items() if not k.startswith("epochs_")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/halo2024", help="experiment folder")
    p.add_argument("--ship", action="store_true", help="copy the kept models into velnet/pretrained/halo2024-*")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                   help="override CONFIG entries, e.g. --set epochs_density=2 'train_seeds=[1]'")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = with_overrides(CONFIG, args.set, p.error)
    print(run(args.out, config, args.ship))


if __name__ == "__main__":
    main()

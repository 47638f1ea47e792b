"""The 2024 halo paper at laptop scale: velocity and momentum from redshift-space halos, end to end.

One command runs the chain: fastpm boxes at z = 0.59 in the paper's cosmology (`velnet
simulate --preset halo2024`), FOF halos (`velnet halos`), the redshift-space halo channels
and real-space targets for both weighting schemes (`velnet halo-fields`), stage one (4 halo
channels -> real-space density, MSE, eq. 5), stage two (4 halo channels + the density
PREDICTED by stage one + 3 linear-theory channels (eq. 2-3) = 8 -> magnitude and direction,
eq. 6) for the velocity and, with the linear momentum, for the momentum, predictions of the
whole test boxes in one pass each, and the report (`velnet.halo_evaluate`). Commands are
logged as shell lines; stages whose outputs exist are skipped, so an interrupted run
resumes (training itself resumes from its last epoch).

    python -m experiments.halo2024 --out runs/halo2024            # the frozen CONFIG, 2 cores
    python -m experiments.halo2024 --out runs/halo2024-large --large
    python -m experiments.halo2024 --out runs/x --set epochs_density=2 'train_seeds=[1]'

Scale. The paper: CosmicGrowth, one 1200 Mpc/h box with 2048^3 particles (0.59 Mpc/h
spacing), halos and subhalos down to 3e-3 (h/Mpc)^3, CIC on 512^3 (2.35 Mpc/h), trained
on 32 sub-boxes of 300 Mpc/h (128^3 cells), tested on 25 boxes of 600 Mpc/h (256^3).
The default here: five fastpm boxes of 128 Mpc/h with 128^3 particles (1 Mpc/h spacing,
10 steps, about a minute each on 2 cores), 3 for training, 1 for validation, 1 for the
test, painted on 64^3 (2 Mpc/h) and trained on 32^3 sub-boxes (64 Mpc/h), with narrow
nets and a few epochs. FOF halos of at least 20 particles (7.4e10 Msun/h each) reach only
about 1.7e-3 (h/Mpc)^3 at this resolution (see `data_prep.halos`): the first two mass
channels and part of the third, the fourth empty; the test volume is 1/400 of the paper's,
so every spectrum has few modes (k_f = 0.049 h/Mpc). `--large` (for a GPU node) uses
256 Mpc/h boxes with 256^3 particles on 128^3 meshes, 8 + 2 + 2 boxes, 64^3 sub-boxes and
wider nets trained longer. Its boxes take several minutes each on one core; simulate them
beforehand in parallel, e.g. `mpirun -n 16 velnet simulate --preset halo2024 --box 256
--particles 256 --seed S --out OUT/sims/seedS`, and the run picks them up.
"""
import argparse
import json
import logging
from pathlib import Path

import numpy as np

from experiments import run_velnet, with_overrides

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
    "density_model": {"n1": 8, "n2": 16, "n3": 32, "dropout": 0.1, "init_kernel": 5},
    "velocity_model": {"n1": 8, "n2": 16, "n3": 32, "dropout": 0.1, "init_kernel": 5},
    "size": 32,                   # training sub-box, cells per side
    "batch_size": 4,
    "steps_per_epoch": 12,
    "epochs_density": 10,
    "epochs_velocity": 8,
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
    "density_model": {"n1": 32, "n2": 64, "n3": 128, "dropout": 0.1, "init_kernel": 7},
    "velocity_model": {"n1": 32, "n2": 64, "n3": 128, "dropout": 0.1, "init_kernel": 7},
    "size": 64,
    "batch_size": 4,
    "steps_per_epoch": 64,
    "epochs_density": 100,
    "epochs_velocity": 100,
    "learning_rate": 3e-4,
}
"""Overrides of CONFIG for `--large`."""

LINEAR_INPUT = {"velocity": "linear_velocity_s", "momentum": "linear_momentum_s"}
"""The linear-theory input channels (eq. 2-3) of each stage-two target."""


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


def halo_channels(fields):
    """The halo channels of a loaded fields file, heaviest first, stacked `(N, N, N, 4)`."""
    names = sorted((n for n in fields if n.startswith("halos_s_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    return np.stack([fields[n].value for n in names], axis=-1)


def _rms(arrays):
    """Root mean square over all cells of a list of arrays (vectors: of the magnitude)."""
    total = sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)
    cells = sum(a.shape[0] ** 3 for a in arrays)
    return (total / cells) ** 0.5


def _train(stage, run_dir, inputs, targets, config, model_key, epochs, target_scale, metadata,
           input_vector_slices=()):
    """Train one stage with `velnet.halo_train.train_halo` unless its model exists."""
    from velnet.halo_train import train_halo

    model = run_dir / "model.keras"
    if model.exists():
        return model
    n_train = len(config["train_seeds"])
    log.info("train %s -> %s", stage, run_dir)
    return train_halo(stage, inputs[:n_train], targets[:n_train], inputs[n_train:], targets[n_train:], run_dir,
                      epochs, model_config=config[model_key], size=config["size"],
                      batch_size=config["batch_size"], steps_per_epoch=config["steps_per_epoch"],
                      learning_rate=config["learning_rate"], seed=config["seed"],
                      input_vector_slices=input_vector_slices, target_scale=target_scale, metadata=metadata)


def run_scheme(out, config, weighting, files):
    """Train both stages for one weighting scheme and predict the test boxes.

    Returns:
        list of the test boxes' prediction files (density, velocity, momentum).
    """
    from velnet.fields import Field, load_fields, save_fields
    from velnet.halo_train import load_halo_model, predict_box

    predictions = [out / "predictions" / weighting / f"seed{s}.h5" for s in config["test_seeds"]]
    if all(p.exists() for p in predictions):
        return predictions
    n_fit = len(config["train_seeds"]) + len(config["val_seeds"])
    boxes = [load_fields(files[s]) for s in seeds(config)]
    models = out / "models" / weighting
    # inputs of order one: the halo channels over the spread of their sum in the training and validation boxes
    halo_scale = float(np.std(np.concatenate([halo_channels(b).sum(-1).ravel() for b in boxes[:n_fit]])))
    halos = [halo_channels(b) / halo_scale for b in boxes]
    meta = {"experiment": "halo2024", "weighting": weighting, "halo_scale": halo_scale,
            "box_size": boxes[0]["density"].box_size, "nmesh": boxes[0]["density"].nmesh,
            "redshift": boxes[0]["density"].redshift, "cosmology": boxes[0]["density"].cosmology.to_dict()}
    density_model = _train("density", models / "density", halos[:n_fit], [b["density"].value[..., None]
                                                                          for b in boxes[:n_fit]],
                           config, "density_model", config["epochs_density"], 1.0,
                           {**meta, "inputs": "halo channels / halo_scale"})
    model, _ = load_halo_model(density_model)
    density = [predict_box(model, h)[..., 0] for h in halos]  # stage two sees stage one's densities

    vectors = {}
    for target in config["targets"]:
        scale = _rms([b[target].value for b in boxes[:len(config["train_seeds"])]]) / 3 ** 0.5
        inputs = [np.concatenate([h, d[..., None], b[LINEAR_INPUT[target]].value / scale], axis=-1)
                  for h, d, b in zip(halos, density, boxes)]
        path = _train("velocity", models / target, inputs[:n_fit], [b[target].value for b in boxes[:n_fit]],
                      config, "velocity_model", config["epochs_velocity"], scale,
                      {**meta, "target": target, "inputs": f"halo channels / halo_scale, predicted density, "
                                                          f"{LINEAR_INPUT[target]} / target_scale"},
                      input_vector_slices=[(5, 8)])
        model, _ = load_halo_model(path)
        vectors[target] = [predict_box(model, x) for x in inputs[n_fit:]]

    for i, (path, seed) in enumerate(zip(predictions, config["test_seeds"])):
        truth = boxes[n_fit + i]["density"]
        fields = [Field(density[n_fit + i], "density", truth.box_size, truth.redshift, truth.cosmology)]
        fields += [Field(vectors[t][i], t, truth.box_size, truth.redshift, truth.cosmology) for t in vectors]
        save_fields(path, fields, attrs={"weighting": weighting, "source": str(files[seed]),
                                         "models": [str(models / n / "model.keras")
                                                    for n in ("density", *config["targets"])]})
        log.info("predicted %s", path)
    return predictions


def run(out, config=CONFIG):
    """Run the whole experiment into `out` (resuming a run of the same config there); return the report's path."""
    from data_prep.halos import load_halos
    from velnet.fields import load_fields
    from velnet.halo_evaluate import evaluate_halo

    out = Path(out)
    record = out / "config.json"
    if record.exists() and json.loads(record.read_text()) != json.loads(json.dumps(config)):
        raise SystemExit(f"{out} holds a run of another configuration ({record}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(config, indent=1) + "\n")
    files = {seed: prepare_box(out, config, seed) for seed in seeds(config)}
    by_weighting = {w: {s: f[w] for s, f in files.items()} for w in config["weightings"]}
    predictions = {w: run_scheme(out, config, w, by_weighting[w]) for w in config["weightings"]}
    report = out / "report"
    if not (report / "report.md").exists():
        test = config["test_seeds"]
        first = by_weighting[config["weightings"][0]]
        truth = [load_fields(first[s], ["density", "velocity", "momentum"]) for s in test]
        inputs = {w: [load_fields(by_weighting[w][s]) for s in test] for w in config["weightings"]}
        catalogs = [load_halos(out / "halos" / f"seed{s}.h5") for s in test]
        evaluate_halo(truth, {w: [load_fields(p) for p in predictions[w]] for w in predictions}, report,
                      inputs_by_scheme=inputs, catalogs=catalogs, los=config["los"], progress=log.info)
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

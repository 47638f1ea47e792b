"""The shipped halo models on tracers with satellites: what the satellites' fingers of god cost.

velnet's halo models are trained on FOF hosts, one tracer each; a survey's galaxies, like the
2024 paper's halos and subhalos, include satellites, which redshift space stretches along the
line of sight with their hosts' velocity dispersion. This experiment redoes the test boxes of
`experiments.halo2024` (the same simulations, from velnet's cache) with satellites drawn onto the
hosts (`velnet halos --subhalos MODEL`, `data_prep/subhalos.py`), ranked into the same four
channels at the same number densities, and measures (`velnet evaluate --report halo2024`, number
weighting, eight whole test boxes):

- "shipped": the shipped networks and classical references (`velnet/pretrained/halo2024-number`),
  trained on hosts only, applied to the tracers with satellites;
- "refit": the filter fitted anew (`velnet baseline --task halo-velocity`) on the training boxes
  with satellites, the networks' predictions beside it again: what a model trained on such tracers
  starts from.

    python -m experiments.halo_satellites --out runs/halo-satellites                   # han16-infall
    python -m experiments.halo_satellites --out runs/halo-satellites-bound --subhalos han16

Prints C_r and the mean error per field and method, for both; the reports are in --out.
"""
import argparse
import json
import logging
from pathlib import Path

from data_prep.subhalos import MODELS
from experiments import run_velnet
from experiments.demo_halos import shipped, table
from experiments.halo2024 import CONFIG, prepare_box
from velnet.errors import VelnetInputError

log = logging.getLogger("experiments.halo_satellites")
WEIGHTING = "number"


def prepare(out, seed, subhalos):
    """`experiments.halo2024.prepare_box` with satellites, number weighting only; returns (halo catalogue,
    fields file)."""
    files = prepare_box(out, {**CONFIG, "weightings": [WEIGHTING]}, seed, subhalos)
    return out / "halos" / f"seed{seed}.h5", files[WEIGHTING]


def evaluate(out, name, fields, halos, predictions, references):
    """`velnet evaluate --report halo2024` of the test boxes into out/NAME (where missing); returns its metrics."""
    report = out / name
    if not (report / "metrics.json").exists():
        run_velnet("evaluate", *fields, *predictions, "--report", "halo2024", "--boxes", len(fields), "--names",
                   WEIGHTING, "--halo-fields", *fields, "--catalogs", *halos, "--los", CONFIG["los"], "--classical",
                   *(f"{WEIGHTING}={path}" for path in references), "--out", report)
    return json.loads((report / "metrics.json").read_text())


def run(out, subhalos="han16-infall", train_seeds=CONFIG["train_seeds"], test_seeds=CONFIG["test_seeds"]):
    """Make the boxes, predict, refit the filter and evaluate into `out`; returns {"shipped", "refit"} metrics."""
    out = Path(out)
    record = out / "config.json"
    config = {"subhalos": subhalos, "train_seeds": list(train_seeds), "test_seeds": list(test_seeds)}
    if record.exists() and json.loads(record.read_text()) != config:
        raise VelnetInputError(record, f"holds a run of another configuration ({record.read_text().strip()}); "
                                       "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(config) + "\n")
    networks, references = shipped(WEIGHTING)
    test = [prepare(out, seed, subhalos) for seed in test_seeds]
    halos, fields = [h for h, _ in test], [f for _, f in test]
    predictions = []
    for seed, box in zip(test_seeds, fields):
        predictions.append(out / "predictions" / f"seed{seed}.h5")
        if not predictions[-1].exists():
            run_velnet("predict", box, *networks, "--out", predictions[-1])
    refit = out / "reference-filter.json"
    if not refit.exists():
        train = [prepare(out, seed, subhalos)[1] for seed in train_seeds]
        run_velnet("baseline", *train, "--task", "halo-velocity", "--method", "filter", "--out", refit)
    return {"shipped": evaluate(out, "shipped", fields, halos, predictions, references),
            "refit": evaluate(out, "refit", fields, halos, predictions, [refit])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/halo-satellites", help="experiment folder (reused where its outputs exist)")
    p.add_argument("--subhalos", default="han16-infall", choices=sorted(MODELS),
                   help="subhalo model of `velnet halos --subhalos` (han16-infall)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    metrics = run(args.out, args.subhalos)
    for name, m in metrics.items():
        print(f"\n{name}: {m['rsd']['nhalos'][0]} tracers in the first test box; C_r (eq. 10) and mean abs(error):")
        print("\n".join(table(m, WEIGHTING)))


if __name__ == "__main__":
    main()

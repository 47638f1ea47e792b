"""`make demo`: reconstruct a box never seen in training with the models that ship in velnet.

Simulates a fresh fastpm box at the Wu et al. 2021 resolution (160 Mpc/h, 1 Mpc/h particle
spacing, 2 Mpc/h grid, z = 0, seed 2026: no training box used it), reconstructs its velocity
with every model in velnet/pretrained, evaluates them against the truth, raw linear theory and
linear theory smoothed at the radius fitted on the training boxes, prints the headline numbers
and where the report is. About 6 minutes on 2 cores.
"""
import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from experiments.wu2021 import PRETRAINED, run_velnet

log = logging.getLogger("experiments.demo")
BOX, SEED, NMESH = 160.0, 2026, 80


def simulate(out):
    """The demo box, on 2 MPI ranks where mpirun exists; returns the snapshot path."""
    argv = ["simulate", "--preset", "wu2021", "--box", BOX, "--seed", SEED, "--out", out]
    snapshot = out / "snapshot_z0.000"
    if snapshot.exists():
        return snapshot
    mpirun = shutil.which("mpirun")
    if mpirun:
        command = [mpirun, "-n", "2", sys.executable, "-m", "velnet.cli", *map(str, argv)]
        log.info("$ %s", " ".join(command[:3] + ["velnet"] + command[5:]))
        env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
        subprocess.run(command, check=True, env=env)
    else:
        run_velnet(*argv)
    return snapshot


def families():
    """Shipped model families: name -> list of model files (velocity, then momentum)."""
    out = {}
    for folder in sorted(p for p in PRETRAINED.iterdir() if p.is_dir()):
        models = [folder / f"{t}.keras" for t in ("velocity", "momentum") if (folder / f"{t}.keras").exists()]
        if models:
            out[folder.name] = models
    if not out:
        raise SystemExit(f"no trained models in {PRETRAINED}; train them with "
                         "`python -m experiments.wu2021 --ship`")
    return out


def headline(metrics, methods):
    """Lines of the demo's summary: error per k band and T(k) of |v| and theta_v."""
    errors = metrics["error_spectrum"]
    first = errors[methods[0]]["columns"]
    bands = [f"{lo:g}-{hi:g}" for lo, hi in zip(first["k_lo"], first["k_hi"])]
    lines = ["rms error of one velocity component (km/s) per k band (h/Mpc):",
             f"  {'method':24s}" + "".join(f"{b:>10s}" for b in bands) + f"{'all k':>10s}",
             f"  {'truth (rms of the field)':24s}" + "".join(f"{x:10.1f}" for x in first["rms_truth"])
             + f"{errors[methods[0]]['attrs']['rms_truth_all']:10.1f}"]
    for m in methods:
        lines.append(f"  {m:24s}" + "".join(f"{x:10.1f}" for x in errors[m]["columns"]["rms_error"])
                     + f"{errors[m]['attrs']['rms_error_all']:10.1f}")
    for q in ("abs_v", "theta_v"):
        lines.append(f"T(k) of P_{q} at k = 0.2 / 0.6 / 1.0 h/Mpc:")
        for m in methods:
            t = metrics["spectra"][q]["table"][m]["T"]
            lines.append(f"  {m:24s}" + " / ".join(f"{t[k]:.3f}" for k in ("0.2", "0.6", "1.0")))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="demo folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    fields = out / f"box-seed{SEED}.h5"
    snapshot = simulate(out / "sim")
    if not fields.exists():
        run_velnet("paint", snapshot, "--nmesh", NMESH, "--out", fields)
    names, predictions = [], []
    for name, models in families().items():
        prediction = out / f"prediction-{name}.h5"
        run_velnet("predict", fields, *models, "--out", prediction)
        names.append(f"U-net {name}")
        predictions.append(prediction)
    radius = json.loads((PRETRAINED / next(iter(families())) / "baseline.json").read_text())["smoothing"]
    report = out / "report"
    run_velnet("evaluate", fields, *predictions, "--names", *names, "--smoothing", radius,
               "--out", report)
    metrics = json.loads((report / "metrics.json").read_text())
    print("\n".join(headline(metrics, metrics["methods"])))
    print(f"\nreport: {report / 'report.md'}")


if __name__ == "__main__":
    main()

"""`make demo`: reconstruct a box never seen in training with the models that ship in velnet.

Simulates a fresh fastpm box at the Wu et al. 2021 resolution (160 Mpc/h, 1 Mpc/h particle
spacing, 2 Mpc/h grid, z = 0, seed 2026: no training box used it), reconstructs its velocity
with every model in velnet/pretrained, evaluates them against the truth, raw linear theory and
linear theory smoothed at the radius fitted on the training boxes, prints the headline numbers
and where the report is. 1-4 minutes on 2 cores, most of it the simulation.
"""
import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from experiments import run_velnet
from experiments.wu2021 import PRETRAINED

log = logging.getLogger("experiments.demo")
BOX, SEED, NMESH = 160.0, 2026, 80
TABLE_K = ("0.2", "0.6", "1.0")


def simulate(out):
    """The demo box, on 2 MPI ranks where mpirun exists; returns the snapshot path."""
    argv = ["simulate", "--preset", "wu2021", "--box", BOX, "--seed", SEED, "--out", out]
    snapshot = out / "snapshot_z0.000"
    if snapshot.exists():
        return snapshot
    mpirun = shutil.which("mpirun")
    if mpirun:
        command = [mpirun, "-n", "2", sys.executable, "-m", "velnet.cli", *map(str, argv)]
        log.info("$ %s", " ".join(command[:3] + ["velnet"] + command[6:]))
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
    width = max(len(m) for m in methods + ["truth (rms of the field)"]) + 2
    lines = ["rms error of one velocity component (km/s) per k band (h/Mpc):",
             "  " + "method".ljust(width) + "".join(f"{b:>10s}" for b in bands) + f"{'all k':>10s}",
             "  " + "truth (rms of the field)".ljust(width)
             + "".join(f"{x:10.1f}" for x in first["rms_truth"])
             + f"{errors[methods[0]]['attrs']['rms_truth_all']:10.1f}"]
    for m in methods:
        lines.append("  " + m.ljust(width) + "".join(f"{x:10.1f}" for x in errors[m]["columns"]["rms_error"])
                     + f"{errors[m]['attrs']['rms_error_all']:10.1f}")
    for q in ("abs_v", "theta_v"):
        lines.append(f"T(k) of P_{q} at k = 0.2 / 0.6 / 1.0 h/Mpc:")
        for m in methods:
            t = metrics["spectra"][q]["table"][m]["T"]
            lines.append("  " + m.ljust(width) + " / ".join(f"{t[k]:.3f}" for k in TABLE_K))
    return lines


def criteria(metrics, method, linear="linear", smoothed=None):
    """The checks of the Wu et al. 2021 issue, as measured: list of (check, passed).

    T(k) "nearer 1" compares |ln T|; bands are the error-spectrum bands.
    """
    out = []
    for q in ("abs_v", "theta_v"):
        table = metrics["spectra"][q]["table"]
        for k in TABLE_K:
            ours, theirs = (abs(math.log(table[m]["T"][k])) for m in (method, linear))
            out.append((f"T of P_{q} at k={k} nearer 1 than raw linear", ours < theirs))
    bands = metrics["error_spectrum"]
    columns = bands[method]["columns"]
    for i, (lo, hi) in enumerate(zip(columns["k_lo"], columns["k_hi"])):
        if lo >= 0.2:
            ours = columns["rms_error"][i]
            out.append((f"error in {lo:g}-{hi:g} below raw linear",
                        ours < bands[linear]["columns"]["rms_error"][i]))
            if smoothed and hi <= 0.8:
                out.append((f"error in {lo:g}-{hi:g} below {smoothed}",
                            ours < bands[smoothed]["columns"]["rms_error"][i]))
    return out


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
    for name in names:
        checks = criteria(metrics, name, smoothed=f"linear R={radius:g}")
        failed = [check for check, passed in checks if not passed]
        print(f"{name}: {len(checks) - len(failed)} of {len(checks)} checks pass"
              + (f"; not: {', '.join(failed)}" if failed else ""))
    print(f"\nreport: {report / 'report.md'}")


if __name__ == "__main__":
    main()

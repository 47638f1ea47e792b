"""Whether velnet's whole-box steps under `mpirun -n N` give one process's results.

On one box (the lognormal particles of `benchmarks.whole_box`, 2 Mpc/h cells) it runs, once on
one process into WORKDIR/serial and once under `mpirun -n N` into WORKDIR/mpi, the commands

    velnet paint     snapshot -> truth.h5
    velnet predict   truth.h5 with the shipped classical estimator -> classical.h5
    velnet predict   truth.h5 with the shipped network -> network.h5
    velnet evaluate  truth.h5 against network.h5 -> report/metrics.json
    velnet calibrate the classical estimator on truth.h5 -> estimator.power.json

(each run's commands in one process, or one mpirun), then prints, for every field and for the
numbers of the report and the calibration, the largest difference relative to the largest
value, and exits 1 if one exceeds the tolerance (float32 rounding: 1e-5).

    python -m benchmarks.mpi_agreement --nmesh 256 --workdir runs/bench/agree
    python -m benchmarks.mpi_agreement --nmesh 64 --steps paint classical
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.whole_box import CLASSICAL, NETWORK, step_env, write_snapshot

STEPS = ("paint", "classical", "network", "evaluate", "calibrate")
TOLERANCE = 1e-5
"""Largest difference allowed, relative to the largest value of each field or statistic."""
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ("import json, sys\n"
          "from velnet.cli import main\n"
          "for argv in json.loads(sys.argv[1]):\n"
          "    assert main(argv) == 0, argv\n")


def commands(folder, snapshot, nmesh, steps=STEPS):
    """The `velnet` arguments of the chosen steps of one run writing into `folder`."""
    truth, estimator = folder / "truth.h5", folder / "estimator.json"
    every = {"paint": ["paint", snapshot, "--nmesh", nmesh, "--out", truth],
             "classical": ["predict", truth, estimator, "--out", folder / "classical.h5"],
             "network": ["predict", truth, NETWORK, "--out", folder / "network.h5"],
             "evaluate": ["evaluate", truth, folder / "network.h5", "--names", "U-net", "--baseline", "none",
                          "--out", folder / "report"],
             "calibrate": ["calibrate", estimator, truth]}
    return [[str(a) for a in every[step]] for step in steps]


def run(folder, snapshot, nmesh, ranks, steps=STEPS, timeout=None):
    """Run the steps into `folder` (made, with a copy of the shipped classical estimator where it has
    none, which `calibrate` writes beside) in one process, or under `mpirun -n ranks`.

    Raises:
        RuntimeError: a step failed, with the end of its output.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "estimator.json").exists():
        shutil.copy(CLASSICAL, folder / "estimator.json")
    launch = [] if ranks == 1 else [shutil.which("mpirun") or "mpirun", "-n", str(ranks)]
    env = {**step_env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*launch, sys.executable, "-c", SCRIPT, json.dumps(commands(folder, snapshot, nmesh, steps))],
                          env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(steps)} on {ranks} rank(s) failed ({done.returncode}):\n{done.stderr[-3000:]}")


def numbers(tree, path=""):
    """Every number of a JSON tree (metrics, a calibration) but its provenance and timings, as path ->
    array of the numbers of that path's list."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() if key not in ("provenance", "figures")
                for k, v in numbers(value, f"{path}/{key}").items() if "seconds" not in k}
    if isinstance(tree, list) and tree and all(isinstance(x, (int, float)) or x is None for x in tree):
        return {path: np.array([np.nan if x is None else x for x in tree], dtype=float)}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in numbers(value, f"{path}[{i}]").items()}
    return {path: np.array([tree], dtype=float)} if isinstance(tree, (int, float)) else {}


def relative_difference(actual, expected):
    """The largest |actual - expected| over the largest |expected| (NaN where both are NaN: 0)."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    if actual.shape != expected.shape or not np.array_equal(np.isnan(actual), np.isnan(expected)):
        return np.inf
    if not np.isfinite(expected).any():
        return 0.0
    scale, difference = np.nanmax(np.abs(expected)), np.nanmax(np.abs(actual - expected))
    return difference / scale if scale else difference


def differences(serial, mpi, steps=STEPS):
    """What the two runs wrote, compared: dict "file: name" -> the largest relative difference."""
    import h5py

    out = {}
    for step in steps:
        if step in ("paint", "classical", "network"):
            name = "truth.h5" if step == "paint" else f"{step}.h5"
            with h5py.File(serial / name) as a, h5py.File(mpi / name) as b:
                for field in a:
                    out[f"{name}: {field}"] = (relative_difference(b[field][...], a[field][...])
                                               if field in b else np.inf)
            continue
        name = "report/metrics.json" if step == "evaluate" else "estimator.power.json"
        a, b = (numbers(json.loads((folder / name).read_text())) for folder in (serial, mpi))
        for path, expected in a.items():
            out[f"{name}: {path}"] = relative_difference(b[path], expected) if path in b else np.inf
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nmesh", type=int, default=256, help="mesh per side (default 256)")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks of the second run (default 2)")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="paint first: the others read it")
    p.add_argument("--workdir", help="folder for the runs (default: a temporary one, removed at the end)")
    args = p.parse_args(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="velnet-mpi-agreement-"))
    try:
        if not (root / "snapshot").exists():
            write_snapshot(root / "snapshot", args.nmesh)
        for folder, ranks in ((root / "serial", 1), (root / "mpi", args.ranks)):
            run(folder, root / "snapshot", args.nmesh, ranks, args.steps)
        found = differences(root / "serial", root / "mpi", args.steps)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    fields = {k: v for k, v in found.items() if ".h5:" in k}
    print(f"{args.nmesh}^3 cells, 1 process against {args.ranks} ranks: the largest difference relative to "
          f"the largest value (tolerance {TOLERANCE:g})")
    for key, value in fields.items():
        print(f"  {key}: {value:.2e}")
    for name in sorted({k.split(":")[0] for k in found} - {k.split(":")[0] for k in fields}):
        worst = max((v, k) for k, v in found.items() if k.startswith(name + ":"))
        print(f"  {name}: {sum(k.startswith(name + ':') for k in found)} numbers, the largest {worst[0]:.2e} "
              f"({worst[1].split(': ', 1)[1]})")
    bad = [k for k, v in found.items() if not v <= TOLERANCE]
    for key in bad:
        print(f"  beyond the tolerance: {key}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

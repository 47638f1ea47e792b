"""`make demo-halos`: the 2024 halo paper's reconstruction of a halo box never seen in training, with what ships.

Simulates a fresh fastpm box with the halo experiment's settings (128 Mpc/h, 128^3 particles,
z = 0.59, the paper's cosmology, seed 2027: no training, validation or test box used it),
finds its FOF halos and paints their redshift-space channels (number weighting, line of sight
z), reconstructs the real-space density, velocity and momentum with the shipped networks
(velnet/pretrained/halo2024-number) and the shipped classical halo references (the per-(k, mu)
filter and the iterative reconstruction), and evaluates all of them against the truth with the
paper's statistics (`velnet evaluate --report halo2024`). Prints C_r and the mean error of each
field per method, and where the report is. About 5 minutes on 2 cores.
"""
import argparse
import json
import logging
from pathlib import Path

from experiments import run_velnet
from experiments.halo2024 import CONFIG, PRETRAINED

log = logging.getLogger("experiments.demo_halos")
SEED, WEIGHTING = 2027, "number"
ROWS = {"density": "rho", "velocity": "v", "theta_v": "theta_v", "momentum": "m"}


def shipped(weighting=WEIGHTING):
    """The shipped networks (density, velocity, momentum where it ships) and references of a weighting."""
    folder = PRETRAINED / f"halo2024-{weighting}"
    networks = [folder / f"{t}.keras" for t in ("density", "velocity", "momentum") if (folder / f"{t}.keras").exists()]
    references = sorted(folder.glob("reference-*.json"), key=lambda p: p.name != "reference-filter.json")
    if not networks or not references:
        raise SystemExit(f"{folder} holds no shipped halo models: run python -m experiments.halo2024 --ship")
    return networks, references


def table(metrics, weighting=WEIGHTING):
    """Lines: C_r and mean abs(error) of each field per method."""
    agree = metrics["agreement"][weighting]
    lines = [f"{'method':<16}" + "".join(f"{f'C_r {label}':>12}" for label in ROWS.values())
             + "".join(f"{f'err {label}':>12}" for label in ROWS.values())]
    for method, rows in agree.items():
        lines.append(f"{method:<16}" + "".join(f"{rows[r]['C_r']['mean']:>12.3f}" for r in ROWS)
                     + "".join(f"{rows[r]['mean_abs_error']['mean']:>12.4g}" for r in ROWS))
    return lines


def run(out):
    """Simulate, find halos, paint, predict and evaluate the demo box in `out`; returns the metrics."""
    out = Path(out)
    networks, references = shipped()
    sim, halos, fields = out / "sim", out / "halos.h5", out / "halo-fields.h5"
    snapshot = sim / f"snapshot_z{CONFIG['redshift']:.3f}"
    if not snapshot.exists():
        run_velnet("simulate", "--preset", "halo2024", "--box", CONFIG["box_size"], "--particles", CONFIG["particles"],
                   "--force-mesh", CONFIG["force_mesh"], "--steps", CONFIG["steps"], "--z", CONFIG["redshift"],
                   "--seed", SEED, "--out", sim)
    if not halos.exists():
        run_velnet("halos", snapshot, "--linking-length", CONFIG["linking_length"], "--nmin", CONFIG["nmin"],
                   "--out", halos)
    if not fields.exists():
        run_velnet("halo-fields", snapshot, "--catalog", halos, "--nmesh", CONFIG["nmesh"], "--los", CONFIG["los"],
                   "--weighting", WEIGHTING, "--out", fields)
    prediction = out / "prediction.h5"
    if not prediction.exists():
        run_velnet("predict", fields, *networks, "--out", prediction)
    report = out / "report"
    if not (report / "metrics.json").exists():
        run_velnet("evaluate", fields, prediction, "--report", "halo2024", "--names", WEIGHTING, "--halo-fields",
                   fields, "--catalogs", halos, "--los", CONFIG["los"], "--classical",
                   *(f"{WEIGHTING}={path}" for path in references), "--out", report)
    return json.loads((report / "metrics.json").read_text()), report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo-halos", help="demo folder (reused where its outputs exist)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    metrics, report = run(args.out)
    print(f"\nA fresh {CONFIG['box_size']:g} Mpc/h halo box (seed {SEED}, z = {CONFIG['redshift']}, "
          f"{metrics['rsd']['nhalos'][0]} halos down to 3e-3 (h/Mpc)^3), number weighting: C_r (eq. 10) and mean "
          "abs(error) per cell (rho/rho_mean, km/s, km/s per Mpc/h):")
    print("\n".join(table(metrics)))
    print(f"\nThe report: {report / 'report.md'}")


if __name__ == "__main__":
    main()

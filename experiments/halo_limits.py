"""What the halo task's cells allow: C_r of the truth itself, smoothed, and of the momentum's two factors.

The 2024 paper's C_r (eq. 10) is measured cell by cell. A reconstruction from halos a mean
separation n^(-1/3) apart cannot know the field on scales much below that, so its C_r is bounded
by that of the truth smoothed at some radius: this measures that bound on whole test boxes, and
which factor of the momentum m = (rho/rho_mean) v limits a reconstruction of it.

    python -m experiments.halo_limits --fields runs/halo2024/fields/number \\
        --predictions runs/halo2024/predictions/number --out runs/halo2024/limits/number

For every test box (the predictions folder's seed*.h5, the fields file of the same name):
- C_r of the true density, velocity, theta_v = div v and momentum against the same field
  Gaussian-smoothed at each radius R (Mpc/h), and the mean 1 - cos phi between the smoothed and
  the true velocity: what a perfect reconstruction to resolution R reaches;
- C_r of the predicted momentum, and of the momentum formed with one factor true:
  (rho_true/rho_mean) v_pred and (rho_pred/rho_mean) v_true;
- the predicted density's cells below zero (share, lowest value) and the C_r of the density and
  the momentum with those cells raised to zero.

Writes limits.json and limits.md (a table, mean over the boxes) in --out.
"""
import argparse
import logging
from pathlib import Path

import numpy as np

from experiments import made_by, run_study, write_study
from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields
from velnet.fields.mesh import smoothed
from velnet.files import check_output
from velnet.statistics.pixels import agreement, cosine, derived_field

log = logging.getLogger("experiments.halo_limits")

MADE_BY = "experiments.halo_limits"
RADII = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Gaussian radii, Mpc/h, at which the truth is smoothed."""
FIELDS = ("density", "velocity", "theta_v", "momentum")
"""The fields whose smoothed truth is compared with the truth (C_r), besides the velocity's direction."""


def c_r(pred, truth):
    """Eq. 10's C_r between two arrays (every component of every cell a pixel)."""
    return agreement(pred, truth)["C_r"]


def box_limits(truth, pred, radii=RADII):
    """The bounds of one box.

    Args:
        truth: name -> true `Field` ("density" rho/rho_mean, "velocity", "momentum", km/s).
        pred: name -> predicted `Field` ("density", "velocity", "momentum").
        radii: Gaussian radii, Mpc/h.

    Returns:
        dict: "smoothed_truth": {field: [C_r at each radius], "one_minus_cos_v": [mean 1 - cos phi of the
        velocity at each radius]}, "momentum": C_r of the predicted
        momentum ("predicted"), of rho_true v_pred ("true_density") and rho_pred v_true ("true_velocity");
        "negative_density": the share of cells below zero, the lowest value, and C_r of the density and
        momentum with them raised to zero ("clipped_density", "clipped_momentum").
    """
    rho, v = truth["density"].value, truth["velocity"].value
    rho_p, v_p = pred["density"].value, pred["velocity"].value
    m = truth["momentum"].value
    clipped = np.maximum(rho_p, 0)
    fields = {**truth, "theta_v": derived_field("theta_v", velocity=truth["velocity"])}
    smooth = {name: [] for name in (*FIELDS, "one_minus_cos_v")}
    for r in radii:
        for name in ("density", "momentum"):
            smooth[name].append(c_r(smoothed(fields[name], r), fields[name].value))
        v_r = truth["velocity"].with_value(smoothed(truth["velocity"], r))
        smooth["velocity"].append(c_r(v_r.value, v))
        smooth["theta_v"].append(c_r(derived_field("theta_v", velocity=v_r).value, fields["theta_v"].value))
        smooth["one_minus_cos_v"].append(float(np.nanmean(1 - cosine(v_r.value, v))))
    return {
        "smoothed_truth": smooth,
        "momentum": {"predicted": c_r(pred["momentum"].value, m),
                     "true_density": c_r(rho[..., None] * v_p, m),
                     "true_velocity": c_r(rho_p[..., None] * v, m)},
        "negative_density": {"share": float(np.mean(rho_p < 0)), "lowest": float(rho_p.min()),
                             "clipped_density": c_r(clipped, rho), "clipped_momentum": c_r(clipped[..., None] * v_p, m),
                             "density": c_r(rho_p, rho)},
    }


def mean_limits(per_box):
    """The mean over boxes of `box_limits` dicts (same keys)."""
    smooth = {name: np.mean([b["smoothed_truth"][name] for b in per_box], axis=0).tolist()
              for name in per_box[0]["smoothed_truth"]}
    mean = {"smoothed_truth": smooth}
    for part in ("momentum", "negative_density"):
        mean[part] = {key: float(np.mean([b[part][key] for b in per_box])) for key in per_box[0][part]}
    mean["negative_density"]["lowest"] = min(b["negative_density"]["lowest"] for b in per_box)
    return mean


def table(mean, radii, boxes):
    """limits.md: the mean bounds as Markdown."""
    lines = [f"# What the cells allow ({boxes} test boxes)", "",
             "C_r (eq. 10) of the truth against itself Gaussian-smoothed at R:", "",
             "| R (Mpc/h) | " + " | ".join(FIELDS) + " | 1 - cos phi, velocity |", "|---|" + "---|" * (len(FIELDS) + 1)]
    for i, r in enumerate(radii):
        lines.append(f"| {r:g} | " + " | ".join(f"{mean['smoothed_truth'][n][i]:.3f}" for n in FIELDS)
                     + f" | {mean['smoothed_truth']['one_minus_cos_v'][i]:.3f} |")
    m = mean["momentum"]
    lines += ["", "C_r of the momentum m = (rho/rho_mean) v:", "",
              "| predicted rho x predicted v | true rho x predicted v | predicted rho x true v |", "|---|---|---|",
              f"| {m['predicted']:.3f} | {m['true_density']:.3f} | {m['true_velocity']:.3f} |", ""]
    n = mean["negative_density"]
    lines += ["The predicted density below zero, and C_r with those cells raised to zero:", "",
              "| cells below 0 | lowest | C_r density | clipped | C_r momentum | clipped |",
              "|---|---|---|---|---|---|",
              f"| {100 * n['share']:.3f} % | {n['lowest']:.3f} | {n['density']:.4f} | {n['clipped_density']:.4f} "
              f"| {m['predicted']:.4f} | {n['clipped_momentum']:.4f} |", ""]
    return "\n".join(lines)


def run(fields_dir, predictions_dir, out, radii=RADII):
    """Measure every box of `predictions_dir`; write limits.json and limits.md in `out`; returns the mean."""
    check_output(out, "a limits folder", made_by("limits.json", MADE_BY), inputs=(fields_dir, predictions_dir),
                 folder=True)
    boxes = sorted(Path(predictions_dir).glob("seed*.h5"))
    if not boxes:
        raise VelnetInputError(predictions_dir, "holds no seed*.h5 predictions")
    per_box = {}
    for path in boxes:
        truth = load_fields(Path(fields_dir) / path.name, ["density", "velocity", "momentum"])
        pred = load_fields(path, ["density", "velocity", "momentum"])
        per_box[path.stem] = box_limits(truth, pred, radii)
        log.info("%s: %s", path.stem, per_box[path.stem]["momentum"])
    mean = mean_limits(list(per_box.values()))
    if not np.all(np.isfinite(np.concatenate([np.ravel(v) for part in mean.values() for v in part.values()]))):
        raise VelnetInputError(predictions_dir, f"gives a non-finite C_r (a constant field?): {mean}")
    record = {"made_by": MADE_BY, "fields": str(fields_dir), "predictions": str(predictions_dir),
              "radii_mpc_h": list(radii), "mean": mean, "boxes": per_box}
    write_study(out, "limits", record, table(mean, radii, len(per_box)))
    return mean


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", required=True, help="folder of the true fields files (seed*.h5)")
    parser.add_argument("--predictions", required=True, help="folder of velnet predict's outputs (seed*.h5)")
    parser.add_argument("--out", required=True, help="folder for limits.json and limits.md")
    args = parser.parse_args(argv)
    run_study("halo_limits", "limits", lambda: run(args.fields, args.predictions, args.out), args.out)


if __name__ == "__main__":
    main()

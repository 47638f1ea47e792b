"""The radius of the halo filter's reconstruction, chosen on validation boxes.

The classical halo reference (`velnet.physics.halo_filter`) adds to its features the halo
channels moved to real space by iterative reconstruction, whose Gaussian radius R sets how
finely the displacement is solved for. This fits the filter on training boxes for each R (0:
the redshift-space channels alone) and measures it on validation boxes, never the test boxes:

    python -m experiments.halo_filter_radius --fields runs/halo2024/fields/number \\
        --train $(seq 1 24) --validate 25 26 --out runs/halo2024/filter-radius/number

Per R, the mean over the validation boxes of C_r (eq. 10) of the density, velocity, theta_v and
momentum, and of 1 - cos phi of the velocity. Writes radius.json and radius.md in --out.
"""
import argparse
import logging
from pathlib import Path

import numpy as np

from experiments import made_by, run_study, write_study
from velnet.errors import VelnetInputError
from velnet.fields.field import field_names, load_fields
from velnet.files import check_output
from velnet.physics.halo_filter import LOG_RADII, HaloFilter
from velnet.physics.reconstruction import halo_channel_names
from velnet.statistics.pixels import agreement, cosine, derived_field

log = logging.getLogger("experiments.halo_filter_radius")

MADE_BY = "experiments.halo_filter_radius"
RADII = (0.0, 2.5, 4.0, 5.0, 6.0, 8.0)
"""Radii (Mpc/h) tried; 0: no reconstruction."""
COLUMNS = ("density", "velocity", "theta_v", "momentum", "one_minus_cos_v")


def scores(pred, truth):
    """C_r of each field and the mean 1 - cos phi of the velocity, of one box's predictions against its truth."""
    theta = [derived_field("theta_v", velocity=f["velocity"]).value for f in (pred, truth)]
    out = {name: agreement(pred[name].value, truth[name].value)["C_r"] for name in ("density", "velocity", "momentum")}
    out["theta_v"] = agreement(*theta)["C_r"]
    out["one_minus_cos_v"] = float(np.nanmean(1 - cosine(pred["velocity"].value, truth["velocity"].value)))
    return out


def run(fields_dir, train, validate, out, radii=RADII, log_radii=LOG_RADII):
    """Fit and measure the filter for each radius (with the log features at `log_radii`, Mpc/h); write
    radius.json and radius.md in `out`; returns the table."""
    check_output(out, "a filter-radius folder", made_by("radius.json", MADE_BY), inputs=(fields_dir,), folder=True)
    if set(train) & set(validate) or len(set(radii)) != len(radii):
        raise VelnetInputError(None, f"the training and validation boxes must differ, and the radii too. Received: "
                                     f"train {list(train)}, validate {list(validate)}, radii {list(radii)}")
    files = {s: Path(fields_dir) / f"seed{s}.h5" for s in [*train, *validate]}
    truths = {s: load_fields(files[s], ["density", "velocity", "momentum"]) for s in validate}
    boxes = {s: load_fields(files[s], halo_channel_names(field_names(files[s]))) for s in validate}
    rows = {}
    for radius in radii:
        fitted = HaloFilter.fit_files([files[s] for s in train], moved_smoothing=radius or None, log_radii=log_radii)
        per_box = [scores(fitted.predict(boxes[s]), truths[s]) for s in validate]
        rows[radius] = {c: float(np.mean([b[c] for b in per_box])) for c in COLUMNS}
        log.info("R = %g Mpc/h: %s", radius, rows[radius])
    if not all(np.isfinite(v) for row in rows.values() for v in row.values()):
        raise VelnetInputError(fields_dir, f"gives a non-finite score (a constant field?): {rows}")
    record = {"made_by": MADE_BY, "fields": str(fields_dir), "train": list(train), "validate": list(validate),
              "log_radii": list(log_radii), "rows": {str(r): row for r, row in rows.items()}}
    write_study(out, "radius", record, table(rows, len(validate), log_radii))
    return rows


def table(rows, boxes, log_radii=LOG_RADII):
    """radius.md: one row per radius."""
    logs = ", ".join(f"{r:g}" for r in log_radii) or "none"
    lines = [f"# The halo filter against the radius of its reconstruction ({boxes} validation boxes)", "",
             f"Log features of the halo density smoothed at: {logs} Mpc/h.", "",
             "| R (Mpc/h) | C_r density | C_r velocity | C_r theta_v | C_r momentum | 1 - cos phi |",
             "|---|---|---|---|---|---|"]
    for radius, row in rows.items():
        label = f"{radius:g}" if radius else "none (channels alone)"
        lines.append(f"| {label} | " + " | ".join(f"{row[c]:.4f}" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", required=True, help="folder of halo fields files seed*.h5 (velnet halo-fields)")
    parser.add_argument("--train", type=int, nargs="+", required=True, help="seeds of the training boxes")
    parser.add_argument("--validate", type=int, nargs="+", required=True, help="seeds of the validation boxes")
    parser.add_argument("--radii", type=float, nargs="+", default=list(RADII), help="radii, Mpc/h (0: none)")
    parser.add_argument("--log-radii", type=float, nargs="*", default=list(LOG_RADII),
                        help="radii (Mpc/h) of the log features of the smoothed halo density (none: no log features)")
    parser.add_argument("--out", required=True, help="folder for radius.json and radius.md")
    args = parser.parse_args(argv)
    run_study("halo_filter_radius", "radius",
              lambda: run(args.fields, args.train, args.validate, args.out, args.radii, args.log_radii), args.out)


if __name__ == "__main__":
    main()

"""How much of the halos' redshift-space anisotropy the true fields remove, against their smoothing.

The halo report moves halos back from redshift space by solving r + v_los(r) / (a H) = s along
the line of sight (`velnet.physics.rsd.real_space_positions`). Inside clusters the true velocity
folds that map (several roots), so even the true field leaves part of the anisotropy; smoothing
it unfolds the map. This measures, with the true velocity and density only (no method), the
share of xi's anisotropy removed at each Gaussian radius, on boxes that are not test boxes; the
report's `RSD_SMOOTHING` is its best radius:

    python -m experiments.halo_rsd_smoothing --fields runs/halo2024/fields/number \\
        --halos runs/halo2024/halos --seeds 1 2 3 4 25 26 --out runs/halo2024/rsd-smoothing

Writes smoothing.json and smoothing.md in --out.
"""
import argparse
import logging
from pathlib import Path

import numpy as np

from data_prep.catalogs import load_halos
from experiments import made_by, run_study, write_study
from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields, los_axis
from velnet.fields.mesh import smoothed
from velnet.files import check_output
from velnet.physics.rsd import real_space_positions, redshift_space_positions
from velnet.reports.halo2024_measures import XI_RMIN, heaviest
from velnet.statistics.clustering import XI_DR, XI_RMAX, anisotropy_residual, points_xi, xi_centres

log = logging.getLogger("experiments.halo_rsd_smoothing")

MADE_BY = "experiments.halo_rsd_smoothing"
RADII = (0.0, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Gaussian radii (Mpc/h) of the true velocity and density; 0: unsmoothed."""


def box_xi(fields, catalog, los, radii):
    """xi(r_perp, r_par) of one box's heaviest halos: real space, redshift space, and moved back at each radius."""
    select = heaviest(catalog)
    real = np.asarray(catalog.position, np.float64)[select]
    s = redshift_space_positions(real, np.asarray(catalog.velocity)[select], los, catalog.box_size,
                                 catalog.redshift, catalog.cosmology)
    rmax = min(XI_RMAX, catalog.box_size / 4)
    out = {"real": points_xi(real, catalog.box_size, los, rmax=rmax)[2],
           "redshift": points_xi(s, catalog.box_size, los, rmax=rmax)[2]}
    for radius in radii:
        v, rho = (fields[f] if radius == 0 else fields[f].with_value(smoothed(fields[f], radius))
                  for f in ("velocity", "density"))
        out[radius] = points_xi(real_space_positions(s, v, los, rho), catalog.box_size, los, rmax=rmax)[2]
    return out, rmax


def run(fields_dir, halos_dir, seeds, out, los="z", radii=RADII):
    """The share of the anisotropy removed at each radius, over the boxes `seeds`; writes smoothing.json/.md."""
    check_output(out, "an RSD-smoothing folder", made_by("smoothing.json", MADE_BY), inputs=(fields_dir, halos_dir),
                 folder=True)
    axis = los_axis(los)
    per_box = []
    for seed in seeds:
        fields = load_fields(Path(fields_dir) / f"seed{seed}.h5", ["density", "velocity"])
        xi, rmax = box_xi(fields, load_halos(Path(halos_dir) / f"seed{seed}.h5"), axis, radii)
        per_box.append(xi)
        log.info("seed %d done", seed)
    mean = {key: np.mean([b[key] for b in per_box], axis=0) for key in per_box[0]}
    centres = xi_centres(rmax, XI_DR)
    removed = {r: 1 - anisotropy_residual(mean[r], mean["real"], mean["redshift"], centres, XI_RMIN) for r in radii}
    if not all(np.isfinite(v) for v in removed.values()):
        raise VelnetInputError(fields_dir, f"gives a non-finite anisotropy (too few halos?): {removed}")
    record = {"made_by": MADE_BY, "fields": str(fields_dir), "halos": str(halos_dir), "seeds": list(seeds),
              "removed": {str(r): v for r, v in removed.items()}, "best_radius": max(removed, key=removed.get)}
    lines = [f"# xi anisotropy removed by the true fields, smoothed ({len(seeds)} boxes: {list(seeds)})", "",
             "| R (Mpc/h) | anisotropy removed |", "|---|---|",
             *(f"| {r:g} | {v:.1%} |" for r, v in removed.items()), ""]
    write_study(out, "smoothing", record, "\n".join(lines))
    return removed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", required=True, help="folder of halo fields files seed*.h5 (true density, velocity)")
    parser.add_argument("--halos", required=True, help="folder of their halo catalogues seed*.h5 (velnet halos)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="boxes (not test boxes)")
    parser.add_argument("--los", default="z")
    parser.add_argument("--radii", type=float, nargs="+", default=list(RADII), help="Mpc/h (0: unsmoothed)")
    parser.add_argument("--out", required=True, help="folder for smoothing.json and smoothing.md")
    args = parser.parse_args(argv)
    run_study("halo_rsd_smoothing", "smoothing",
              lambda: run(args.fields, args.halos, args.seeds, args.out, args.los, args.radii), args.out)


if __name__ == "__main__":
    main()

"""What redshift space costs the halo reference: the same filter with the halos' true positions.

The classical halo reference (`velnet.physics.halo_filter`) reads the four halo channels in
redshift space and the same channels moved to real space by iterative reconstruction. This paints
the same halos, in the same channels and weights, at their true real-space positions, and fits the
same per-(k, mu) filter with them in place of the reconstruction's: what a perfect reconstruction
would give the reference, so what is left is the halos' sparsity. Every filter is fitted on the
same training boxes and scored on the same whole test boxes:

    python -m experiments.halo_oracle --fields runs/halo2024/fields/number --halos runs/halo2024/halos \\
        --train $(seq 1 24) --test $(seq 100 107) --out runs/halo2024/oracle/number

- "reconstruction": the shipped reference's recipe (`HaloFilter.fit_files`: the channels and
  their reconstruction at `MOVED_SMOOTHING`);
- "true positions": the same features with the reconstructed channels replaced by the channels
  painted at the catalogue's positions (no velocity shift);
- "true positions alone": the filter of those real-space channels only.

Scores per test box: C_r (eq. 10, cell by cell) of the density, the velocity components, theta_v
and the momentum (1 + delta) v, and the mean 1 - cos phi of the velocity. Writes oracle.json and
oracle.md (the mean over the test boxes) in --out.
"""
import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from data_prep.catalogs import load_halos
from data_prep.halo_fields import paint_halo_channels
from experiments import made_by
from experiments.halo_filter_radius import COLUMNS, scores
from velnet.errors import VelnetInputError
from velnet.fields.field import field_names, load_fields, los_axis, read_meta
from velnet.files import atomic_dir, check_output
from velnet.physics.halo_filter import HaloFilter
from velnet.tasks import HALO_PREFIX

log = logging.getLogger("experiments.halo_oracle")

MADE_BY = "experiments.halo_oracle"
TRUTHS = ("density", "velocity", "momentum")


def real_space_box(fields_path, catalog_path):
    """A halo fields file's box, and its channels painted at the halos' real-space positions.

    Args:
        fields_path: a halo fields file (`velnet halo-fields`).
        catalog_path: the halo catalogue it was painted from (`velnet halos`).

    Returns:
        (observed, real): dicts name -> `Field`, each with the truths "density", "velocity",
        "momentum"; `observed` with the file's redshift-space channels "halos_s_0"..,
        `real` with the same channels, weighting and halos unshifted, under the same names.

    Raises:
        VelnetInputError: naming the catalogue, when its halos do not paint the file's channels.
    """
    meta = read_meta(fields_path)
    channels = [n for n in field_names(fields_path) if n.startswith("halos_s_")]
    observed = load_fields(fields_path, [*channels, *TRUTHS])
    catalog = load_halos(catalog_path)
    paint = {"nmesh": observed[channels[0]].value.shape[0], "los": meta["los"], "weighting": meta["weighting"],
             "number_densities": meta["number_densities_target"]}
    again, _, _ = paint_halo_channels(catalog, **paint)
    if [f.name for f in again] != channels or not all(
            np.allclose(f.value, observed[f.name].value, rtol=1e-4, atol=1e-6) for f in again):
        raise VelnetInputError(catalog_path, f"does not paint the halo channels of {fields_path}: not its catalogue")
    still, _, _ = paint_halo_channels(dataclasses.replace(catalog, velocity=np.zeros_like(catalog.velocity)), **paint)
    return observed, {**{f.name: f for f in still}, **{name: observed[name] for name in TRUTHS}}


@dataclasses.dataclass(frozen=True)
class TruePositions:
    """A perfect reconstruction for `HaloFilter`: the "moved" channels are the box's channels painted at the
    halos' true positions, held in the box as "real_0".. (`with_true_positions`)."""

    los: int

    def moved_channels(self, box, names):
        return [np.asarray(box[name.replace(HALO_PREFIX, "real_")].value, np.float64) for name in names]


def with_true_positions(observed, real):
    """The observed box with the real-space channels beside its own, as `TruePositions` reads them."""
    return {**observed, **{name.replace(HALO_PREFIX, "real_"): f for name, f in real.items()
                           if name.startswith(HALO_PREFIX)}}


def table(mean, boxes):
    """oracle.md: the mean scores of both filters as Markdown."""
    lines = [f"# The halo filter with the reconstruction and with the halos' true positions ({boxes} test boxes)", "",
             "| filter | C_r density | C_r velocity | C_r theta_v | C_r momentum | 1 - cos phi, velocity |",
             "|---|---|---|---|---|---|"]
    for name, row in mean.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[s]:.3f}" for s in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def run(fields_dir, halos_dir, train, test, out):
    """Fit the filters on the `train` seeds, score them on the `test` seeds; write oracle.json and oracle.md.

    Returns:
        dict filter -> mean scores over the test boxes (`experiments.halo_filter_radius.scores`).
    """
    check_output(out, "an oracle folder", made_by("oracle.json", MADE_BY), inputs=(fields_dir, halos_dir),
                 folder=True)
    fields_dir, halos_dir = Path(fields_dir), Path(halos_dir)
    paths = {seed: (fields_dir / f"seed{seed}.h5", halos_dir / f"seed{seed}.h5") for seed in (*train, *test)}
    los = los_axis(read_meta(paths[train[0]][0])["los"])
    log.info("fitting the reference's recipe on %d boxes", len(train))
    filters = {"reconstruction": HaloFilter.fit_files([paths[s][0] for s in train])}
    boxes = [real_space_box(*paths[s]) for s in train]
    log.info("fitting the filters with the true positions")
    filters["true positions"] = HaloFilter.fit([with_true_positions(*b) for b in boxes], los,
                                               reconstruction=TruePositions(los))
    filters["true positions alone"] = HaloFilter.fit([real for _, real in boxes], los)
    del boxes
    per_box = {}
    for seed in test:
        observed, real = real_space_box(*paths[seed])
        inputs = {"reconstruction": observed, "true positions": with_true_positions(observed, real),
                  "true positions alone": real}
        per_box[seed] = {name: scores(f.predict(inputs[name]), real) for name, f in filters.items()}
        log.info("seed %s: %s", seed, per_box[seed])
    mean = {name: {s: float(np.mean([b[name][s] for b in per_box.values()])) for s in COLUMNS} for name in filters}
    if not np.all(np.isfinite([v for row in mean.values() for v in row.values()])):
        raise VelnetInputError(fields_dir, f"gives a non-finite score (a constant field?): {mean}")
    record = {"made_by": MADE_BY, "fields": str(fields_dir), "halos": str(halos_dir), "train": list(train),
              "test": list(test), "mean": mean, "boxes": per_box}
    with atomic_dir(out) as tmp:
        (tmp / "oracle.json").write_text(json.dumps(record, indent=1))
        (tmp / "oracle.md").write_text(table(mean, len(per_box)))
    return mean


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", required=True, help="folder of halo fields files seed*.h5")
    parser.add_argument("--halos", required=True, help="folder of their halo catalogues seed*.h5")
    parser.add_argument("--train", type=int, nargs="+", required=True, help="seeds the filters are fitted on")
    parser.add_argument("--test", type=int, nargs="+", required=True, help="seeds they are scored on")
    parser.add_argument("--out", required=True, help="folder for oracle.json and oracle.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args.fields, args.halos, args.train, args.test, args.out)
    except VelnetInputError as err:
        raise SystemExit(f"halo_oracle: {err}") from None
    print((Path(args.out) / "oracle.md").read_text())


if __name__ == "__main__":
    main()

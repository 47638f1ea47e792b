"""What redshift space costs the halo reference: the same filter given the halos' true positions.

The classical halo reference (`velnet.physics.halo_filter`) reads the four halo channels in
redshift space and the same channels moved to real space by iterative reconstruction. This
replaces the reconstruction's channels by better ones, each fitted as the same per-(k, mu) filter
on the same training boxes and scored on the same whole test boxes:

    python -m experiments.halo_oracle --fields runs/halo2024/fields/number --halos runs/halo2024/halos \\
        --train $(seq 1 24) --test $(seq 100 107) --out runs/halo2024/oracle/number

- "reconstruction": the shipped reference's recipe (`HaloFilter.fit_files`: the channels and
  their reconstruction at `MOVED_SMOOTHING`);
- "true velocity field": each halo moved back from redshift space with the true velocity field of
  the cells (`velnet.physics.rsd.real_space_positions`, the densest root where several): what a
  perfect reconstruction of the matter's velocity would give;
- "true positions": each halo at its catalogue position (no velocity shift): what knowing every
  halo's own line-of-sight velocity would give;
- "true positions alone": the filter of those real-space channels only.

The halos keep their channels and weights throughout. Scores per test box: C_r (eq. 10, cell by
cell) of the density, the velocity components, theta_v and the momentum (1 + delta) v, and the
mean 1 - cos phi of the velocity. Writes oracle.json and oracle.md (the mean over the test boxes)
in --out.
"""
import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np

from data_prep.catalogs import load_halos
from data_prep.halo_fields import paint_halo_channels
from experiments import made_by, run_study, write_study
from experiments.halo_filter_radius import COLUMNS, scores
from velnet.errors import VelnetInputError
from velnet.fields.field import field_names, load_fields, los_axis, read_meta
from velnet.files import check_output
from velnet.physics.halo_filter import HaloFilter
from velnet.physics.reconstruction import halo_channel_names
from velnet.physics.rsd import real_space_positions, redshift_space_positions
from velnet.tasks import HALO_PREFIX

log = logging.getLogger("experiments.halo_oracle")

MADE_BY = "experiments.halo_oracle"
TRUTHS = ("density", "velocity", "momentum")
ORACLES = ("true velocity field", "true positions")
"""The filters whose reconstructed channels are replaced by the halos at better positions."""
ALONE = "true positions alone"


def oracle_boxes(fields_path, catalog_path):
    """A halo fields file's box and its halo channels repainted from the catalogue at better positions.

    Args:
        fields_path: a halo fields file (`velnet halo-fields`).
        catalog_path: the halo catalogue it was painted from (`velnet halos`).

    Returns:
        (observed, moved): `observed` the file's redshift-space channels "halos_s_0".. and its truths
        "density", "velocity", "momentum" (dict name -> `Field`); `moved` dict "true velocity field",
        "true positions" -> dict of the same channels (same names, weighting and halos) painted at the
        halos moved back with the true velocity field and at their true positions.

    Raises:
        VelnetInputError: naming the catalogue, when its halos do not paint the file's channels.
    """
    meta = read_meta(fields_path)
    if not all(key in meta for key in ("los", "weighting", "number_densities_target")):
        raise VelnetInputError(fields_path, "records no line of sight, weighting or number densities: not a halo "
                                            "fields file (velnet halo-fields writes one)")
    channels = halo_channel_names(field_names(fields_path))
    observed = load_fields(fields_path, [*channels, *TRUTHS])
    catalog = load_halos(catalog_path)
    axis = los_axis(meta["los"])
    paint = {"nmesh": observed[channels[0]].value.shape[0], "los": axis, "weighting": meta["weighting"],
             "number_densities": meta["number_densities_target"]}
    again, _, _ = paint_halo_channels(catalog, **paint)
    if [f.name for f in again] != channels or not all(
            np.allclose(f.value, observed[f.name].value, rtol=1e-4, atol=1e-6) for f in again):
        raise VelnetInputError(catalog_path, f"does not paint the halo channels of {fields_path}: not its catalogue")
    s = redshift_space_positions(catalog.position, catalog.velocity, axis, catalog.box_size, catalog.redshift,
                                 catalog.cosmology)
    positions = {"true velocity field": real_space_positions(s, observed["velocity"], axis, observed["density"]),
                 "true positions": catalog.position}
    still = np.zeros_like(catalog.velocity)
    moved = {name: {f.name: f for f in paint_halo_channels(
        dataclasses.replace(catalog, position=where, velocity=still), **paint)[0]} for name, where in positions.items()}
    return observed, moved


@dataclasses.dataclass(frozen=True)
class GivenPositions:
    """A reconstruction for `HaloFilter` whose moved channels are given: the box's "given_0".. (`beside`)."""

    los: int

    def moved_channels(self, box, names):
        return [np.asarray(box[name.replace(HALO_PREFIX, "given_")].value, np.float64) for name in names]


def beside(observed, channels):
    """The observed box with other `channels` of the same halos beside its own, as `GivenPositions` reads them."""
    return {**observed, **{name.replace(HALO_PREFIX, "given_"): f for name, f in channels.items()}}


def table(mean, boxes):
    """oracle.md: the mean scores of every filter as Markdown."""
    lines = [f"# The halo filter with the reconstruction and with better positions of the halos ({boxes} test boxes)",
             "", "| halos moved by | C_r density | C_r velocity | C_r theta_v | C_r momentum | 1 - cos phi, velocity |",
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
    if not train or not test or set(train) & set(test) or len(set(train)) + len(set(test)) != len(train) + len(test):
        raise VelnetInputError(None, f"the training and test boxes must be given, each once, and differ. Received: "
                                     f"train {list(train)}, test {list(test)}")
    fields_dir, halos_dir = Path(fields_dir), Path(halos_dir)
    paths = {seed: (fields_dir / f"seed{seed}.h5", halos_dir / f"seed{seed}.h5") for seed in (*train, *test)}
    los = read_meta(paths[train[0]][0]).get("los")
    for fields_path, _ in paths.values():
        if read_meta(fields_path).get("los") != los:
            raise VelnetInputError(fields_path, f"has another line of sight than {paths[train[0]][0]} ({los!r})")
    los = los_axis(los)
    log.info("fitting the reference's recipe on %d boxes", len(train))
    filters = {"reconstruction": HaloFilter.fit_files([paths[s][0] for s in train])}
    boxes = [oracle_boxes(*paths[s]) for s in train]
    log.info("fitting the filters with better positions")
    for name in ORACLES:
        filters[name] = HaloFilter.fit([beside(observed, moved[name]) for observed, moved in boxes], los,
                                       reconstruction=GivenPositions(los))
    filters[ALONE] = HaloFilter.fit([{**observed, **moved["true positions"]} for observed, moved in boxes], los)
    del boxes
    per_box = {}
    for seed in test:
        observed, moved = oracle_boxes(*paths[seed])
        inputs = {"reconstruction": observed, **{name: beside(observed, moved[name]) for name in ORACLES},
                  ALONE: {**observed, **moved["true positions"]}}
        per_box[seed] = {name: scores(f.predict(inputs[name]), observed) for name, f in filters.items()}
        log.info("seed %s: %s", seed, per_box[seed])
    mean = {name: {s: float(np.mean([b[name][s] for b in per_box.values()])) for s in COLUMNS} for name in filters}
    if not np.all(np.isfinite([v for row in mean.values() for v in row.values()])):
        raise VelnetInputError(fields_dir, f"gives a non-finite score (a constant field?): {mean}")
    record = {"made_by": MADE_BY, "fields": str(fields_dir), "halos": str(halos_dir), "train": list(train),
              "test": list(test), "mean": mean, "boxes": per_box}
    write_study(out, "oracle", record, table(mean, len(per_box)))
    return mean


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", required=True, help="folder of halo fields files seed*.h5")
    parser.add_argument("--halos", required=True, help="folder of their halo catalogues seed*.h5")
    parser.add_argument("--train", type=int, nargs="+", required=True, help="seeds the filters are fitted on")
    parser.add_argument("--test", type=int, nargs="+", required=True, help="seeds they are scored on")
    parser.add_argument("--out", required=True, help="folder for oracle.json and oracle.md")
    args = parser.parse_args(argv)
    run_study("halo_oracle", "oracle", lambda: run(args.fields, args.halos, args.train, args.test, args.out), args.out)


if __name__ == "__main__":
    main()

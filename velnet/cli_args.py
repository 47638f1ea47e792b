"""The `velnet` command line's arguments: every command's flags, with their help (units, defaults)."""
import argparse

from data_prep.subhalos import MODELS as SUBHALO_MODELS
from velnet.api import REFERENCE_METHODS
from velnet.evaluation import DEFAULT_REPORT, REPORTS
from velnet.tasks import DEFAULT_TASK, TARGETS, TASKS


def _add_reader_flags(s):
    """The snapshot reader's flags (`data_prep.readers.read_particles`), shared by the commands
    that read snapshots."""
    s.add_argument("--format", choices=["bigfile", "gadget", "hdf5"], help="default: detect")
    s.add_argument("--length-unit", choices=["Mpc/h", "kpc/h"],
                   help="length unit of positions and BoxSize; default: the unit the file states "
                        "(Gadget-4, AREPO, SWIFT HDF5), else Mpc/h (Gadget-1 binaries state none)")
    s.add_argument("--box-size", type=float, help="box size, Mpc/h: checked against the file, used "
                                                  "where it has none")
    s.add_argument("--redshift", type=float, help="redshift: checked against the file, used where "
                                                  "it has no scale factor")
    s.add_argument("--cosmology",
                   help="what the snapshot header lacks (Gadget has no sigma8, n_s, Omega_b): "
                        "a preset (wu2021, halo2024) or JSON, e.g. "
                        "'{\"sigma8\": 0.83, \"n_s\": 0.96, \"Omega_b\": 0.05}'")


def build_parser(description):
    """The `velnet` argument parser: one subparser per command (`args.command`)."""
    p = argparse.ArgumentParser(prog="velnet", description=description)
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, with every package's logs and warnings (default: velnet's "
                        "at INFO, the others' from WARNING up)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="run fastpm from a preset")
    s.add_argument("--preset", default="wu2021", help="wu2021 (default) or halo2024")
    s.add_argument("--box", type=float, help="box size, Mpc/h (preset: 512, as the paper)")
    s.add_argument("--particles", type=int, help="particles per side (preset: box / 1 Mpc/h)")
    s.add_argument("--steps", type=int, help="kick-drift steps (preset: 10)")
    s.add_argument("--force-mesh", type=int, help="force mesh per particle per side (preset: 2)")
    s.add_argument("--z-start", type=float, help="start redshift of 2LPT (preset: 9)")
    s.add_argument("--z", type=float, nargs="+", help="output redshifts (preset: 0 or 0.59)")
    s.add_argument("--seed", type=int, help="initial-condition seed")
    s.add_argument("--out", required=True, help="output folder for snapshots + config.json")
    s.add_argument("--cache", action="store_true",
                   help="simulate into velnet's cache, keyed by the configuration ($VELNET_CACHE, "
                        "default ~/.cache/velnet/boxes), or take the box from there; --out becomes a link to it")

    for name, helptext in (("paint", "one snapshot -> one fields file"),
                           ("prep", "snapshots or fields files -> shards")):
        s = sub.add_parser(name, help=helptext)
        if name == "paint":
            s.add_argument("snapshot", help="snapshot path (FastPM BigFile, Gadget-1 or HDF5)")
        else:
            s.add_argument("inputs", nargs="+", help="snapshots, or fields .h5 files from `paint`")
        s.add_argument("--nmesh", type=int, default=128, help="CIC mesh per side (default 128)")
        _add_reader_flags(s)
        s.add_argument("--out", required=True,
                       help="fields .h5 (paint) or shard folder (prep)")
        if name == "paint":
            s.add_argument("--overwrite", action="store_true",
                           help="replace an existing --out that `velnet paint` did not make")
        if name == "prep":
            s.add_argument("--task", default=DEFAULT_TASK, choices=sorted(TASKS),
                           help="wu2021 (density -> velocity or momentum, default), halo-density (the 2024 paper's "
                                "stage one: halo channels -> density) or halo-velocity (its stage two: halo "
                                "channels, stage one's density, linear velocity -> velocity or momentum); the "
                                "halo tasks read `velnet halo-fields` files")
            s.add_argument("--target", choices=sorted(TARGETS),
                           help="default: the task's (velocity; density for halo-density)")
            s.add_argument("--predicted", nargs="+", metavar="FILE",
                           help="one predictions file per input (`velnet predict` on that box), whose fields are "
                                "channels too: halo-velocity reads stage one's density from them")
            s.add_argument("--density-model", metavar="MODEL",
                           help="halo-velocity: the halo-density model that made the --predicted densities "
                                "(checked against their files; default: the model they name)")
            s.add_argument("--tile", type=int,
                           help="target tile side, cells (wu2021: 20; halo tasks: 32, the sub-box side)")
            s.add_argument("--margin", type=int,
                           help="input margin per side, cells (wu2021: 6, 32^3 inputs; halo tasks: 0, their "
                                "networks pad periodically)")
            s.add_argument("--subfield", type=int,
                           help="tile only the centred S^3 subfield of the mesh, S a multiple of --tile "
                                "(the paper: --nmesh 256 --subfield 240, 1728 targets of 20^3 a box, "
                                "inputs inside the box); default the whole mesh")
            s.add_argument("--split", nargs="+", default=["region"],
                           help="region (60/30/10 by spatial region within each box) or "
                                "train/val/test for whole boxes; one value, or one per input")
            s.add_argument("--tiles-per-shard", type=int, default=256)
            s.add_argument("--linear-input", action="store_true",
                           help="add a linear estimate of the target from the whole box as input channels "
                                "(for the *-residual presets): wu2021 linear theory (channels 1-3); "
                                "halo-density the halo fields file's linear_density_s (channel 4)")
            s.add_argument("--smoothing", type=float, default=0.0,
                           help="Gaussian radius of that linear theory, Mpc/h (default 0: none; "
                                "`velnet baseline` fits one)")
            s.add_argument("--base", metavar="FILE",
                           help="a classical reference from `velnet baseline`: its estimate of the target fills "
                                "the whole-box channels instead of linear theory, and the residual presets learn "
                                "the correction to it (wu2021: the matter's estimator, its velocity, or for "
                                "momentum (rho/rho_mean) times it, implies --linear-input; halo tasks: the halo "
                                "filter or reconstruction of the halo channels)")
            s.add_argument("--context", type=int, default=0, metavar="F",
                           help="add a context channel: the density averaged over F^3-cell blocks in "
                                "a window of the input's shape around each tile (F = 4: 32^3 inputs "
                                "see 128 cells); default 0: none")
            s.add_argument("--overwrite", action="store_true",
                           help="replace an existing different dataset in --out")

    for name, helptext in (
            ("halos", "FOF halos of a snapshot -> halo catalogue .h5"),
            ("halo-fields", ("snapshot (+ halo catalogue) -> redshift-space halo channels and "
                             "real-space targets (the 2024 paper's inputs)"))):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("snapshot", help="snapshot path (FastPM BigFile, Gadget-1 or HDF5)")
        _add_reader_flags(s)
        s.add_argument("--linking-length", type=float, default=0.2,
                       help="FOF linking length, in mean particle separations (0.2)")
        s.add_argument("--nmin", type=int, default=20,
                       help="halos keep more than nmin particles (nbodykit's FOF drops groups of nmin or fewer; 20)")
        s.add_argument("--out", required=True, help="output .h5")
        if name == "halos":
            s.add_argument("--cache", action="store_true",
                           help="find the halos once per snapshot and settings, in velnet's cache; "
                                "--out becomes a link to it")
            s.add_argument("--subhalos", choices=sorted(SUBHALO_MODELS),
                           help="add satellites drawn onto each host's particles from Han et al. (2016)'s "
                                "subhalo model, ranked by bound mass (han16) or infall mass (han16-infall); "
                                "each host becomes its central (data_prep.subhalos). Default: hosts only")
            s.add_argument("--subhalo-seed", type=int, default=0, help="the satellites' random seed (0)")
        if name == "halo-fields":
            s.add_argument("--nmesh", type=int, default=128, help="CIC mesh per side (128)")
            s.add_argument("--los", default="z", help="line of sight: x, y or z (z)")
            s.add_argument("--weighting", choices=["number", "mass"], default="number",
                           help="halo channels without (number) or with (mass) mass weighting")
            s.add_argument("--catalog", nargs="+",
                           help="halo catalogue(s) instead of FOF: velnet .h5 from `velnet halos`, "
                                "HBT+ subhalos (SubSnap_SSS[.0].hdf5: halos and subhalos, as the "
                                "2024 paper; --cosmology supplies h, Omega_b, sigma8, n_s), "
                                "or other codes' files with --catalog-config")
            s.add_argument("--catalog-config",
                           help="JSON mapping another code's columns and units "
                                "(see data_prep.catalogs.read_catalog)")

    s = sub.add_parser("check-shards", help="verify a shard dataset against its source fields files")
    s.add_argument("data", help="shard folder (with manifest.json)")

    s = sub.add_parser("train", help="train a task's network on shards")
    s.add_argument("data", help="shard folder (with manifest.json)")
    s.add_argument("--out", required=True, help="run folder: checkpoints, logs, model.keras")
    s.add_argument("--preset",
                   help="model preset of the dataset's task: wu2021: tiny (default), wu2021-text, or "
                        "tiny-residual, wu2021-text-residual (these need shards from prep --linear-input); "
                        "halo tasks: halo-tiny (default), halo2024, or halo-tiny-residual, halo2024-residual "
                        "(halo-density: shards from prep --linear-input)")
    s.add_argument("--config", help="JSON file: {'model': {...}, 'epochs': ..., ...}")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--batch-size", type=int, default=6)
    s.add_argument("--learning-rate", type=float, default=1e-4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-augment", action="store_true", help="no 48-fold cube symmetries")
    s.add_argument("--steps-per-epoch", type=int)
    s.add_argument("--validation-steps", type=int)
    s.add_argument("--devices", help="data-parallel devices: 'auto' (every GPU), a number, or 'workers': every "
                                       "device of every machine of a cluster, this same command started on each "
                                       "(TF_CONFIG or KERAS_DISTRIBUTION_*; docs/scaling.md); default one device")
    s.add_argument("--continue", dest="extend", action="store_true",
                   help="train a finished run in --out --epochs more, from its best weights")
    s.add_argument("--overwrite", action="store_true",
                   help="train anew in an --out that holds a finished run, a run of another dataset or "
                        "something else (only the run's own files there are replaced)")

    s = sub.add_parser("tune", help="search hyperparameters with keras-tuner")
    s.add_argument("data", help="shard folder (with manifest.json)")
    s.add_argument("--out", required=True,
                   help="tuning folder: trials.csv/.md, best_config.json (for `velnet train --config`)")
    s.add_argument("--preset", help="base model preset (default: the task's small one, as for train)")
    s.add_argument("--config", help="JSON file: {'model': {...}, 'learning_rate': ..., 'batch_size': ...}: the "
                                    "base model (instead of --preset) and the defaults of the search")
    s.add_argument("--algorithm", default="bayesian", choices=["bayesian", "random", "hyperband"])
    s.add_argument("--max-trials", type=int, default=10)
    s.add_argument("--epochs", type=int, default=10, help="epochs per trial (hyperband: the most)")
    s.add_argument("--fixed", help="JSON of hyperparameters held fixed, e.g. '{\"batch_size\": 6}'")
    s.add_argument("--tune-boxes", action="store_true", help="also search the number of training boxes")
    s.add_argument("--executions-per-trial", type=int, default=1,
                   help="trainings per trial, from successive seeds, scored by their mean (the paper: 5)")
    s.add_argument("--overwrite", action="store_true", help="restart this config's search")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps-per-epoch", type=int)
    s.add_argument("--validation-steps", type=int)

    s = sub.add_parser("predict", help="reconstruct a whole box")
    s.add_argument("fields", help="fields .h5 with what the models read: a 'density' (wu2021), or a halo fields "
                                  "file (the halo tasks)")
    s.add_argument("models", nargs="+",
                   help="model(s): networks (.keras) from `velnet train`, e.g. velocity and momentum, or the halo "
                        "density and velocity networks (a velocity network's density model runs too), or "
                        "a classical estimator (.json) from `velnet baseline`, or a shipped model's name "
                        "(classical-wu2021, wu2021-tiny-paper, ...)")
    s.add_argument("--power-preserving", action="store_true",
                   help="write the velocity with its power restored per k (T(k) about 1) by the model's "
                        "correction from `velnet calibrate`, instead of the minimum-variance field")
    s.add_argument("--out", required=True, help="output .h5 with the predicted field")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (and its .json record) that `velnet predict` did not write")
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--tile", type=int, help="target tile side for inference (default: the model's)")

    s = sub.add_parser("evaluate", help="truth vs predictions vs linear theory -> report")
    s.add_argument("files", nargs="+", help="fields .h5 with the true density, velocity, momentum (one per test "
                                            "box, --boxes), then the predicted fields .h5 files: for each method, "
                                            "one per test box")
    s.add_argument("--names", nargs="*", help="method names for the predictions (halo2024: the weighting schemes)")
    s.add_argument("--report", choices=sorted(REPORTS), default=DEFAULT_REPORT,
                   help="wu2021 (default): Wu et al.'s statistics of one box; halo2024: the 2024 halo paper's, "
                        "over test boxes, weighting schemes side by side")
    s.add_argument("--boxes", type=int, default=1, help="halo2024: number of test boxes (1)")
    s.add_argument("--halo-fields", nargs="+", metavar="FILE",
                   help="halo2024: the halo fields files the predictions were made from, in their order: linear "
                        "theory and the redshift-space halos join the report")
    s.add_argument("--classical", nargs="+", metavar="SCHEME=FILE",
                   help="halo2024: classical halo references (velnet baseline --task halo-velocity) run on the "
                        "scheme's --halo-fields and measured beside the U-net; the first of a scheme is the "
                        "reference every method is compared with")
    s.add_argument("--catalogs", nargs="+", metavar="FILE",
                   help="halo2024: one halo catalogue per test box (velnet halos): the RSD correction and the "
                        "halos' xi(r_perp, r_par) join the report")
    s.add_argument("--los", help="halo2024: the line of sight of the redshift space (default z)")
    s.add_argument("--independent-volume", type=float, metavar="V",
                   help="halo2024: V_all of eq. 11, (Mpc/h)^3, when the test boxes overlap (default: their total)")
    s.add_argument("--baseline", metavar="FILE",
                   help="classical estimator from `velnet baseline`, the reference every method is measured "
                        "against; its fitted radius is the smoothed linear baseline's unless --smoothing is "
                        "given (default: the one velnet ships, for 2 Mpc/h cells; 'none': no reference; wu2021)")
    s.add_argument("--smoothing", type=float,
                   help="Gaussian radius (Mpc/h) of the smoothed linear baseline (wu2021)")
    s.add_argument("--out", required=True, help="report folder")
    s.add_argument("--overwrite", action="store_true",
                   help="write the report into an existing folder that is not a report (only the report's "
                        "files there are replaced)")

    s = sub.add_parser("baseline", help="fit the classical estimator (per-k combination) on training boxes")
    s.add_argument("fields", nargs="+", help="training fields .h5 files (density, velocity)")
    s.add_argument("--estimators", nargs="+", default=["linear", "bernardeau", "2lpt-log"], metavar="NAME[:R]",
                   help="estimators to combine, each optionally smoothed at R Mpc/h: linear, bernardeau, "
                        "2lpt-log (default: all three; the first alone where training modes are few)")
    s.add_argument("--bins", type=int, default=64, help="|k| bins from 0 to the grid's corner (64)")
    s.add_argument("--min-modes", type=int, default=20,
                   help="fewest training modes of a fitted |k| bin (20); bins with fewer keep the first "
                        "estimator alone")
    s.add_argument("--radii", type=float, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 8],
                   help="candidate Gaussian radii (Mpc/h) of the smoothed linear baseline, also fitted")
    s.add_argument("--task", choices=sorted(TASKS), default=DEFAULT_TASK,
                   help="wu2021 (default): the matter's estimator from density files; halo-density or halo-velocity: "
                        "the classical halo reference from halo fields files (velnet halo-fields), which gives the "
                        "density, velocity and momentum at once")
    s.add_argument("--method", choices=sorted(REFERENCE_METHODS),
                   help="the kind of reference (default: the task's): estimator (the matter's, per k), filter (the "
                        "per-(k, mu) linear filter of the halo channels) or reconstruction (iterative redshift-space "
                        "reconstruction, kSZ analyses' estimator)")
    s.add_argument("--moved-smoothing", type=float, metavar="R",
                   help="filter: Gaussian radius (Mpc/h) of the reconstruction whose halo channels, moved to real "
                        "space, are features too (default 4; 0: the redshift-space channels alone)")
    s.add_argument("--log-radii", type=float, nargs="*", metavar="R",
                   help="filter: Gaussian radii (Mpc/h) of the log features of the smoothed halo density (default "
                        "2 4; the flag alone: none; put it after the fields files)")
    s.add_argument("--out", required=True, help="output classical estimator .json (a model for "
                                                 "`velnet predict`)")

    s = sub.add_parser("calibrate", help="fit a model's power-preserving correction on validation boxes")
    s.add_argument("model", help="network (.keras) or classical estimator (.json) predicting velocity")
    s.add_argument("fields", nargs="+", help="validation fields .h5 files (density, velocity)")

    s = sub.add_parser("summary", help="print what a fields file holds")
    s.add_argument("fields")
    return p

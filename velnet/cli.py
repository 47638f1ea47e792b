"""The `velnet` command line: thin subcommands over the library.

    velnet simulate  run fastpm from a preset (works under mpirun)
    velnet prep      snapshots (or fields files) -> CIC fields -> tiles -> TFRecord shards, for any task
    velnet paint     one snapshot -> one fields file (density, velocity, momentum)
    velnet check-shards  verify shards tile by tile against their source fields
    velnet halos     FOF halos of a snapshot (the 2024 halo paper)
    velnet halo-fields  redshift-space halo channels + real-space targets of one snapshot
    velnet train     train a task's network on shards
    velnet tune      search its hyperparameters (keras-tuner)
    velnet predict   reconstruct a whole box with trained models
    velnet evaluate  truth vs predictions vs linear theory -> a report folder (either paper's)
    velnet baseline  fit the classical estimator (linear theory + Bernardeau per k) on training boxes
    velnet calibrate fit a model's power-preserving correction on validation boxes
    velnet summary   print what a fields file holds

Every command writes a JSON record of its config, versions and timings beside its outputs.
Bad input exits with status 2 and a message naming the file and the problem; under mpirun,
an error on any rank aborts every rank. Other packages' logs (nbodykit, TensorFlow, absl)
show from WARNING up; `-v` shows everything.
"""
import argparse
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from velnet.errors import VelnetInputError
from velnet.tasks import TASKS

log = logging.getLogger("velnet")


def _simulate(args):
    from data_prep.simulate import SimulationConfig, simulate
    overrides = {k: v for k, v in {
        "box_size": args.box, "nparticles": args.particles, "steps": args.steps,
        "seed": args.seed, "z_start": args.z_start, "output_redshifts": args.z,
        "force_mesh": args.force_mesh}.items() if v is not None}
    config = SimulationConfig.from_preset(args.preset, **overrides)
    if args.cache:
        from data_prep.cache import is_complete_simulation, link_output, simulation_folder
        from nbodykit import CurrentMPIComm
        folder = simulation_folder(config)
        if not is_complete_simulation(folder):
            simulate(config, folder)
        if CurrentMPIComm.get().rank == 0:
            link_output(args.out, folder)
        for z in config.output_redshifts:
            print(Path(args.out) / f"snapshot_z{z:.3f}")
        return
    for path in simulate(config, args.out):
        print(path)


def _paint(args):
    from data_prep.paint import paint_snapshot
    print(paint_snapshot(args.snapshot, args.nmesh, args.out, **_reader_kwargs(args)))


def _reader_kwargs(args):
    cosmology = args.cosmology
    if cosmology is not None:
        from velnet.physics.cosmology import PRESETS
        try:
            cosmology = PRESETS[cosmology] if cosmology in PRESETS else json.loads(cosmology)
        except json.JSONDecodeError:
            raise VelnetInputError(None, f"--cosmology must be a preset ({', '.join(PRESETS)}) or "
                                         f"JSON. Received: {cosmology!r}") from None
    return {k: v for k, v in {"format": args.format, "box_size": args.box_size,
                              "cosmology": cosmology, "redshift": args.redshift,
                              "length_unit": args.length_unit}.items() if v is not None}


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


def _check_shards(args):
    from data_prep.make_shards import verify_shards
    checked = verify_shards(args.data)
    print(f"{args.data}: checksums and {sum(checked.values())} tiles ({checked}) match their "
          "source fields files exactly")


def _halos(args):
    from data_prep.fof import write_halos
    if args.cache:
        from data_prep.cache import halos_file, link_output
        from nbodykit import CurrentMPIComm
        cached = halos_file(args.snapshot, args.linking_length, args.nmin)
        if not cached.is_file():
            write_halos(args.snapshot, cached, linking_length=args.linking_length, nmin=args.nmin,
                        **_reader_kwargs(args))
        if CurrentMPIComm.get().rank == 0:
            link_output(args.out, cached)
    else:
        write_halos(args.snapshot, args.out, linking_length=args.linking_length, nmin=args.nmin,
                    **_reader_kwargs(args))
    print(args.out)


def _halo_fields(args):
    from data_prep.catalogs import (
        combine_catalogs,
        is_hbt,
        load_halos,
        read_catalog,
        read_hbt_tracers,
    )
    from data_prep.halo_fields import write_halo_fields
    catalog = None
    if args.catalog:
        config = json.loads(Path(args.catalog_config).read_text()) if args.catalog_config else None
        reader = _reader_kwargs(args)
        catalogs = [read_hbt_tracers(p, reader.get("cosmology"), args.box_size, args.redshift)
                    if is_hbt(p) else read_catalog(p, config) if config else load_halos(p)
                    for p in args.catalog]
        catalog = catalogs[0] if len(catalogs) == 1 else combine_catalogs(catalogs)
    write_halo_fields(args.snapshot, args.out, args.nmesh, catalog=catalog, los=args.los,
                      weighting=args.weighting, linking_length=args.linking_length,
                      nmin=args.nmin, **_reader_kwargs(args))
    print(args.out)


def _prep(args):
    from data_prep.make_shards import make_shards
    from data_prep.paint import paint_snapshot
    from velnet.fields.field import field_names
    from velnet.physics.classical import ClassicalEstimator
    from velnet.tasks import get_task
    out = Path(args.out)
    field_files = []
    for path in map(Path, args.inputs):
        if path.suffix in (".h5", ".hdf5") and _is_fields_file(path):
            field_files.append(path)
        else:
            target = out.parent / f"{out.name}-fields" / f"{path.stem or path.name}.h5"
            if not target.exists() or args.overwrite:
                paint_snapshot(path, args.nmesh, target, **_reader_kwargs(args))
            field_files.append(target)
    task = get_task(args.task)
    target = args.target or task.targets[0]
    inputs = task.inputs(target, field_names(field_files[0]), args.density_model,
                         linear=args.linear_input or bool(args.base), smoothing=args.smoothing, context=args.context,
                         base=ClassicalEstimator.load(args.base) if args.base else None)
    make_shards(field_files, out, task, target=target, tile=args.tile, margin=args.margin, subfield=args.subfield,
                split=args.split[0] if len(args.split) == 1 else args.split, tiles_per_shard=args.tiles_per_shard,
                overwrite=args.overwrite, inputs=inputs)
    print(out / "manifest.json")


def _is_fields_file(path):
    from velnet.fields.field import read_meta
    try:
        read_meta(path)
        return True
    except VelnetInputError:
        return False


def _laptop_preset(data):
    """The command line's default preset: the small one of the dataset's task."""
    from velnet.data.manifest import read_manifest
    from velnet.tasks import get_task
    return get_task(read_manifest(data).task).laptop_preset


def _train(args):
    from velnet.training.train import train
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    model_config = config.pop("model", {"preset": args.preset or _laptop_preset(args.data)})
    kwargs = {"epochs": args.epochs, "batch_size": args.batch_size,
              "learning_rate": args.learning_rate, "seed": args.seed, "augment": not args.no_augment,
              "steps_per_epoch": args.steps_per_epoch, "validation_steps": args.validation_steps,
              "devices": int(args.devices) if (args.devices or "").isdigit() else args.devices}
    kwargs.update(config)
    print(train(args.data, args.out, model_config, **kwargs))


def _tune(args):
    from velnet.training.tune import TUNED_TRAIN_KWARGS, tune
    fixed = json.loads(args.fixed) if args.fixed else None
    config = json.loads(Path(args.config).read_text()) if args.config else {}
    unknown = sorted(set(config) - {"model", *TUNED_TRAIN_KWARGS})
    if unknown:
        raise VelnetInputError(args.config, f"a tune config holds 'model' and the defaults of "
                                            f"{list(TUNED_TRAIN_KWARGS)}. Received: {unknown}")
    model_config = config.pop("model", args.preset or _laptop_preset(args.data))
    best = tune(args.data, args.out, model_config=model_config, algorithm=args.algorithm,
                max_trials=args.max_trials, epochs=args.epochs, overwrite=args.overwrite,
                seed=args.seed, fixed=fixed, steps_per_epoch=args.steps_per_epoch,
                validation_steps=args.validation_steps, tune_boxes=args.tune_boxes,
                executions_per_trial=args.executions_per_trial, **config)
    if best:
        print(best)


def _predict(args):
    from velnet.fields.mesh import current_comm
    from velnet.prediction.predict import predict_file
    print(predict_file(args.models, args.fields, args.out, tile=args.tile,
                       batch_size=args.batch_size, power_preserving=args.power_preserving, comm=current_comm()))


def _evaluate(args):
    boxes = args.boxes
    truth, files = args.files[:boxes], args.files[boxes:]
    names = args.names or [Path(p).stem for p in files]
    if boxes < 1 or len(truth) != boxes or len(files) != boxes * len(names):
        raise VelnetInputError(None, f"{boxes} test box(es) and {len(names)} method(s) need {boxes} true box(es) "
                                     f"and {boxes * len(names)} predictions. Received: {len(args.files)} files")
    predictions = {name: files[i * boxes:(i + 1) * boxes] for i, name in enumerate(names)}
    if args.report == "halo2024":
        _evaluate_halo(args, truth, predictions)
    else:
        if boxes != 1 or args.halo_fields or args.catalogs:
            raise VelnetInputError(None, "the wu2021 report takes one box and no halo files: for several test boxes, "
                                         "halo fields or catalogues, ask for --report halo2024")
        _evaluate_wu(args, truth[0], {name: paths[0] for name, paths in predictions.items()})
    print(Path(args.out) / "report.md")


def _evaluate_wu(args, truth_file, predictions):
    import functools

    from velnet.fields.field import field_names, load_fields
    from velnet.fields.mesh import current_comm
    from velnet.physics.classical import SHIPPED, ClassicalEstimator
    from velnet.physics.linear import linear_prediction
    from velnet.reports.wu2021 import evaluate
    if not {"density", "velocity"} <= set(field_names(truth_file)):
        raise VelnetInputError(truth_file, "needs 'density' and 'velocity' fields")
    density = load_fields(truth_file, ["density"], comm=current_comm())["density"]
    methods = dict(predictions)  # fields files, read as the report needs them
    smoothing, reference = args.smoothing, None
    baseline = SHIPPED if args.baseline == "shipped" else (None if args.baseline == "none" else args.baseline)
    if baseline is not None:
        classical = ClassicalEstimator.load(baseline)
        if args.baseline == "shipped" and not np.isclose(classical.cell_size, density.cell_size, rtol=1e-3):
            log.warning("the shipped classical estimator is fitted for %g Mpc/h cells, not %g: no classical reference "
                        "(fit one with `velnet baseline` and pass it with --baseline)", classical.cell_size,
                        density.cell_size)
        else:
            reference = f"classical ({classical.label})"
            methods[reference] = functools.partial(classical.prediction, density)
            if smoothing is None:
                smoothing = classical.attrs.get("linear_smoothing", {}).get("radius")
    methods["linear"] = functools.partial(linear_prediction, density)
    if smoothing:
        methods[f"linear R={smoothing:g}"] = functools.partial(linear_prediction, density, smoothing)
    # The paper's three 40x40 (Mpc/h)^2 slices; a small box holds fewer distinct ones.
    across = round(40.0 / density.cell_size)
    slices = max(1, min(3, (density.nmesh // (2 * across - 1)) ** 2))
    evaluate(truth_file, methods, args.out, density=density, n_slices=slices, reference=reference)


def _evaluate_halo(args, truth_files, predictions):
    from data_prep.catalogs import load_halos
    from velnet.fields.field import load_fields
    from velnet.reports.halo2024 import evaluate_halo
    from velnet.training.train import HISTORY_FILE, read_history
    boxes = args.boxes
    if args.halo_fields and len(args.halo_fields) != boxes * len(predictions):
        raise VelnetInputError(None, f"--halo-fields takes one file per test box and scheme ({boxes * len(predictions)}"
                                     f"), in the order of the predictions. Received: {len(args.halo_fields)}")
    if args.catalogs and len(args.catalogs) != boxes:
        raise VelnetInputError(None, f"--catalogs takes one halo catalogue per test box ({boxes}). "
                                     f"Received: {len(args.catalogs)}")
    truth = [load_fields(path, ["density", "velocity", "momentum"]) for path in truth_files]
    loaded = {name: [load_fields(path) for path in paths] for name, paths in predictions.items()}
    inputs = ({name: [load_fields(path) for path in args.halo_fields[i * boxes:(i + 1) * boxes]]
               for i, name in enumerate(predictions)} if args.halo_fields else None)
    histories = {}
    for name, boxes_of in loaded.items():  # Fig. 3: the history.csv beside each model that predicted box 0
        for target, field in boxes_of[0].items():
            history = Path(str(field.attrs.get("model", ""))).parent / HISTORY_FILE
            if field.attrs.get("model") and history.is_file():
                histories.setdefault(name, {})[target] = read_history(history)
    evaluate_halo(truth, loaded, args.out, inputs_by_scheme=inputs,
                  catalogs=[load_halos(path) for path in args.catalogs] if args.catalogs else None, los=args.los,
                  histories=histories, independent_volume=args.independent_volume)


def _baseline(args):
    from velnet.fields.field import load_fields
    from velnet.physics.classical import ClassicalEstimator
    from velnet.provenance import versions
    densities, velocities = [], []
    for path in args.fields:
        box = load_fields(path, ["density", "velocity"])
        box["density"].attrs["path"] = str(path)
        densities.append(box["density"])
        velocities.append(box["velocity"])
    estimator = ClassicalEstimator.fit(densities, velocities, [_estimator(e) for e in args.estimators],
                                       n_bins=args.bins, min_modes=args.min_modes,
                                       smoothing_radii=args.radii)
    estimator.attrs["versions"] = versions(("velnet", "numpy", "nbodykit"))
    estimator.save(args.out)
    radius = estimator.attrs["linear_smoothing"]["radius"]
    print(f"classical estimator {estimator.label} (per-k weights, {len(estimator.weights)} bins) fitted on "
          f"{len(args.fields)} box(es) -> {args.out}; linear theory's best Gaussian radius R = {radius:g} Mpc/h")


def _estimator(text):
    """'bernardeau' or 'bernardeau:1.5' (Gaussian radius in Mpc/h) -> estimator dict."""
    name, _, radius = text.partition(":")
    try:
        return {"name": name, "smoothing": float(radius or 0.0)}
    except ValueError:
        raise VelnetInputError(None, f"--estimators takes NAME or NAME:R (R in Mpc/h). Received: {text!r}") from None


def _calibrate(args):
    from velnet.fields.field import load_fields
    from velnet.fields.mesh import current_comm
    from velnet.prediction.power_correction import PowerCorrection, correction_path
    from velnet.prediction.predict import predict_with
    predictions, truths = [], []
    for path in args.fields:
        box = load_fields(path, ["density", "velocity"], comm=current_comm())
        box["density"].attrs["path"] = str(path)
        predictions.append(predict_with(args.model, box["density"]))
        truths.append(box["velocity"])
    correction = PowerCorrection.fit(predictions, truths)
    correction.attrs.update(model=str(args.model), fitted_on=[str(p) for p in args.fields])
    if current_comm() is not None and current_comm().rank:
        return  # (every rank has the gains: rank 0 writes them)
    out = correction.save(correction_path(args.model))
    centres = 0.5 * (correction.kedges[1:] + correction.kedges[:-1])
    gains = " / ".join(f"{np.interp(k, centres, correction.gain):.2f}" for k in (0.2, 0.6, 1.0))
    print(f"power correction of {args.model} on {len(args.fields)} box(es): gain {gains} at k = 0.2 / 0.6 / "
          f"1.0 h/Mpc -> {out}")


def _summary(args):
    from velnet.fields.field import load_fields
    for name, f in load_fields(args.fields).items():
        comps = f.value.reshape(-1, 3 if f.is_vector else 1).astype(np.float64)
        fmt = lambda a: "[" + ", ".join(f"{x:.4g}" for x in a) + "]"  # noqa: E731
        print(f"{name:11s} [{f.units}] {f.nmesh}^3 cells, box {f.box_size:g} Mpc/h, z={f.redshift:g}: "
              f"mean {fmt(comps.mean(0))}, rms {fmt(comps.std(0))}, "
              f"min {comps.min():.4g}, max {comps.max():.4g}")


def build_parser():
    p = argparse.ArgumentParser(prog="velnet", description=__doc__.split("\n\n")[0])
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
    s.set_defaults(func=_simulate)

    for name, helptext, func in (("paint", "one snapshot -> one fields file", _paint),
                                 ("prep", "snapshots or fields files -> shards", _prep)):
        s = sub.add_parser(name, help=helptext)
        if name == "paint":
            s.add_argument("snapshot", help="snapshot path (FastPM BigFile, Gadget-1 or HDF5)")
        else:
            s.add_argument("inputs", nargs="+", help="snapshots, or fields .h5 files from `paint`")
        s.add_argument("--nmesh", type=int, default=128, help="CIC mesh per side (default 128)")
        _add_reader_flags(s)
        s.add_argument("--out", required=True,
                       help="fields .h5 (paint) or shard folder (prep)")
        if name == "prep":
            s.add_argument("--task", default="wu2021", choices=sorted(TASKS),
                           help="wu2021 (density -> velocity or momentum, default), halo-density (the 2024 paper's "
                                "stage one: halo channels -> density) or halo-velocity (its stage two: halo "
                                "channels, stage one's density, linear velocity -> velocity or momentum); the "
                                "halo tasks read `velnet halo-fields` files")
            s.add_argument("--target", choices=["velocity", "momentum", "density"],
                           help="default: the task's (velocity; density for halo-density)")
            s.add_argument("--density-model", metavar="MODEL",
                           help="halo-velocity: the trained halo-density model whose whole-box density is an "
                                "input channel")
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
                           help="a classical estimator from `velnet baseline`: its velocity (for momentum "
                                "(rho/rho_mean) times it) fills channels 1-3 instead of linear theory, and the "
                                "residual presets learn the correction to it; implies --linear-input")
            s.add_argument("--context", type=int, default=0, metavar="F",
                           help="add a context channel: the density averaged over F^3-cell blocks in "
                                "a window of the input's shape around each tile (F = 4: 32^3 inputs "
                                "see 128 cells); default 0: none")
            s.add_argument("--overwrite", action="store_true",
                           help="replace an existing different dataset in --out")
        s.set_defaults(func=func)

    for name, helptext, func in (
            ("halos", "FOF halos of a snapshot -> halo catalogue .h5", _halos),
            ("halo-fields", "snapshot (+ halo catalogue) -> redshift-space halo channels and "
                            "real-space targets (the 2024 paper's inputs)", _halo_fields)):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("snapshot", help="snapshot path (FastPM BigFile, Gadget-1 or HDF5)")
        _add_reader_flags(s)
        s.add_argument("--linking-length", type=float, default=0.2,
                       help="FOF linking length, in mean particle separations (0.2)")
        s.add_argument("--nmin", type=int, default=20, help="fewest particles of a halo (20)")
        s.add_argument("--out", required=True, help="output .h5")
        if name == "halos":
            s.add_argument("--cache", action="store_true",
                           help="find the halos once per snapshot and settings, in velnet's cache; "
                                "--out becomes a link to it")
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
        s.set_defaults(func=func)

    s = sub.add_parser("check-shards", help="verify a shard dataset against its source fields files")
    s.add_argument("data", help="shard folder (with manifest.json)")
    s.set_defaults(func=_check_shards)

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
    s.set_defaults(func=_train)

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
    s.set_defaults(func=_tune)

    s = sub.add_parser("predict", help="reconstruct a whole box")
    s.add_argument("fields", help="fields .h5 with what the models read: a 'density' (wu2021), or a halo fields "
                                  "file (the halo tasks)")
    s.add_argument("models", nargs="+",
                   help="model(s): networks (.keras) from `velnet train`, e.g. velocity and momentum, or the halo "
                        "density and velocity networks (a velocity network's density model runs too), or "
                        "a classical estimator (.json) from `velnet baseline`")
    s.add_argument("--power-preserving", action="store_true",
                   help="write the velocity with its power restored per k (T(k) about 1) by the model's "
                        "correction from `velnet calibrate`, instead of the minimum-variance field")
    s.add_argument("--out", required=True, help="output .h5 with the predicted field")
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--tile", type=int, help="target tile side for inference (default: the model's)")
    s.set_defaults(func=_predict)

    s = sub.add_parser("evaluate", help="truth vs predictions vs linear theory -> report")
    s.add_argument("files", nargs="+", help="fields .h5 with the true density, velocity, momentum (one per test "
                                            "box, --boxes), then the predicted fields .h5 files: for each method, "
                                            "one per test box")
    s.add_argument("--names", nargs="*", help="method names for the predictions (halo2024: the weighting schemes)")
    s.add_argument("--report", choices=["wu2021", "halo2024"], default="wu2021",
                   help="wu2021 (default): Wu et al.'s statistics of one box; halo2024: the 2024 halo paper's, "
                        "over test boxes, weighting schemes side by side")
    s.add_argument("--boxes", type=int, default=1, help="halo2024: number of test boxes (1)")
    s.add_argument("--halo-fields", nargs="+", metavar="FILE",
                   help="halo2024: the halo fields files the predictions were made from, in their order: linear "
                        "theory and the redshift-space halos join the report")
    s.add_argument("--catalogs", nargs="+", metavar="FILE",
                   help="halo2024: one halo catalogue per test box (velnet halos): the RSD correction and the "
                        "halos' xi(r_perp, r_par) join the report")
    s.add_argument("--los", default="z", help="halo2024: the line of sight of the redshift space (z)")
    s.add_argument("--independent-volume", type=float, metavar="V",
                   help="halo2024: V_all of eq. 11, (Mpc/h)^3, when the test boxes overlap (default: their total)")
    s.add_argument("--baseline", metavar="FILE", default="shipped",
                   help="classical estimator from `velnet baseline`, the reference every method is measured "
                        "against; its fitted radius is the smoothed linear baseline's unless --smoothing is "
                        "given (default: the one velnet ships, for 2 Mpc/h cells; 'none': no reference; wu2021)")
    s.add_argument("--smoothing", type=float,
                   help="Gaussian radius (Mpc/h) of the smoothed linear baseline (wu2021)")
    s.add_argument("--out", required=True, help="report folder")
    s.set_defaults(func=_evaluate)

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
    s.add_argument("--out", required=True, help="output classical estimator .json (a model for "
                                                 "`velnet predict`)")
    s.set_defaults(func=_baseline)

    s = sub.add_parser("calibrate", help="fit a model's power-preserving correction on validation boxes")
    s.add_argument("model", help="network (.keras) or classical estimator (.json) predicting velocity")
    s.add_argument("fields", nargs="+", help="validation fields .h5 files (density, velocity)")
    s.set_defaults(func=_calibrate)

    s = sub.add_parser("summary", help="print what a fields file holds")
    s.add_argument("fields")
    s.set_defaults(func=_summary)
    return p


OWN_LOGGERS = ("velnet", "data_prep", "experiments", "benchmarks")
"""Loggers of velnet's packages: INFO by default (DEBUG with -v)."""

QUIET_WARNINGS = ("mcfit",)
"""Modules whose Python warnings (notices of changed defaults) are hidden unless -v."""


def _configure_logging(verbose):
    """velnet's loggers at INFO, every other (nbodykit, TensorFlow, absl, ...) at WARNING;
    with `verbose`, everything at DEBUG and every warning shown."""
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ log, read at its import
        for module in QUIET_WARNINGS:
            warnings.filterwarnings("ignore", module=module)


def _mpi_world():
    """MPI.COMM_WORLD when this process is one of several MPI ranks (mpi4py in use), else None."""
    if "mpi4py.MPI" not in sys.modules:
        return None
    from mpi4py import MPI
    if not MPI.Is_initialized() or MPI.Is_finalized() or MPI.COMM_WORLD.size < 2:
        return None
    return MPI.COMM_WORLD


def _fail(command, message, code):
    """Print an error; under MPI, abort every rank with `code` (others may be waiting on this one)."""
    world = _mpi_world()
    rank = f" (rank {world.rank} of {world.size})" if world else ""
    print(f"velnet {command}: error{rank}: {message}", file=sys.stderr, flush=True)
    if world:
        sys.stdout.flush()
        world.Abort(code)
    return code


def main(argv=None):
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    start = time.time()
    try:
        args.func(args)
    except VelnetInputError as err:
        return _fail(args.command, err, 2)
    except Exception:
        if _mpi_world():
            _fail(args.command, traceback.format_exc(), 1)
        raise
    log.debug("%s took %.1f s", args.command, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import json
import logging
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from velnet.cli_args import build_parser
from velnet.errors import VelnetInputError, from_os_error

log = logging.getLogger("velnet")


def _reader(args):
    """The snapshot reader's keywords of the flags (`data_prep.readers.read_particles`)."""
    cosmology = args.cosmology
    if cosmology is not None:
        from velnet.physics.cosmology import PRESETS
        try:
            cosmology = PRESETS[cosmology] if cosmology in PRESETS else json.loads(cosmology)
        except json.JSONDecodeError:
            raise VelnetInputError(None, f"--cosmology must be a preset ({', '.join(PRESETS)}) or "
                                         f"JSON. Received: {cosmology!r}") from None
    return {k: v for k, v in {"format": args.format, "box_size": args.box_size, "cosmology": cosmology,
                              "redshift": args.redshift, "length_unit": args.length_unit}.items() if v is not None}


def _simulate(args):
    from velnet.pipeline import simulate
    overrides = {"box_size": args.box, "nparticles": args.particles, "steps": args.steps, "seed": args.seed,
                 "z_start": args.z_start, "output_redshifts": args.z, "force_mesh": args.force_mesh}
    for path in simulate(args.out, args.preset, args.cache, **{k: v for k, v in overrides.items() if v is not None}):
        print(path)


def _paint(args):
    from data_prep.paint import paint_snapshot
    print(paint_snapshot(args.snapshot, args.nmesh, args.out, overwrite=args.overwrite, **_reader(args)))


def _check_shards(args):
    from data_prep.make_shards import verify_shards
    checked = verify_shards(args.data)
    print(f"{args.data}: checksums and {sum(checked.values())} tiles ({checked}) match their "
          "source fields files exactly")


def _halos(args):
    from velnet.pipeline import find_halos
    print(find_halos(args.snapshot, args.out, args.linking_length, args.nmin, args.cache, args.subhalos,
                     args.subhalo_seed, **_reader(args)))


def _halo_fields(args):
    from velnet.pipeline import make_halo_fields
    print(make_halo_fields(args.snapshot, args.out, args.nmesh, args.catalog, args.catalog_config, args.los,
                           args.weighting, args.linking_length, args.nmin, **_reader(args)))


def _prep(args):
    from velnet.pipeline import prepare
    prepare(args.inputs, args.out, args.task, args.target, args.nmesh, args.predicted, args.density_model,
            args.linear_input, args.smoothing, args.base, args.context, args.overwrite, _reader(args),
            tile=args.tile, margin=args.margin, subfield=args.subfield, tiles_per_shard=args.tiles_per_shard,
            split=args.split[0] if len(args.split) == 1 else args.split)
    print(Path(args.out) / "manifest.json")


def _train(args):
    from velnet.pipeline import train
    print(train(args.data, args.out, args.config, args.preset, epochs=args.epochs, batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=args.seed, augment=not args.no_augment,
                steps_per_epoch=args.steps_per_epoch, validation_steps=args.validation_steps,
                devices=int(args.devices) if (args.devices or "").isdigit() else args.devices,
                overwrite=args.overwrite, extend=args.extend))


def _tune(args):
    from velnet.pipeline import tune
    best = tune(args.data, args.out, args.config, args.preset, algorithm=args.algorithm, max_trials=args.max_trials,
                epochs=args.epochs, overwrite=args.overwrite, seed=args.seed, fixed=_json(args.fixed, "--fixed"),
                steps_per_epoch=args.steps_per_epoch, validation_steps=args.validation_steps,
                tune_boxes=args.tune_boxes, executions_per_trial=args.executions_per_trial)
    if best:
        print(best)


def _json(text, flag):
    """The JSON of a flag's text (None for None)."""
    try:
        return None if text is None else json.loads(text)
    except json.JSONDecodeError as err:
        raise VelnetInputError(None, f"{flag} takes JSON ({err}). Received: {text!r}") from None


def _predict(args):
    from velnet.fields.mesh import current_comm
    from velnet.prediction.predict import predict_file
    print(predict_file(args.models, args.fields, args.out, tile=args.tile, batch_size=args.batch_size,
                       power_preserving=args.power_preserving, overwrite=args.overwrite, comm=current_comm()))


def _evaluate(args):
    from velnet.evaluation import evaluate_files
    evaluation = evaluate_files(args.files, args.out, args.names, args.boxes, args.report, args.halo_fields,
                                catalogs=args.catalogs, los=args.los, independent_volume=args.independent_volume,
                                classical=args.classical,
                                baseline=args.baseline, smoothing=args.smoothing, overwrite=args.overwrite)
    print(evaluation.folder / "report.md")


def _baseline(args):
    from velnet.api import fit_classical
    from velnet.tasks import get_task
    method = args.method or get_task(args.task).reference
    reference = fit_classical(args.fields, args.estimators, args.bins, args.min_modes, args.radii, method, args.out,
                              moved_smoothing=args.moved_smoothing, log_radii=args.log_radii)
    radius = reference.attrs.get("linear_smoothing", {}).get("radius")
    print(f"classical reference ({getattr(reference, 'label', method)}) fitted on {len(args.fields)} box(es) -> "
          f"{args.out}" + ("" if radius is None else f"; linear theory's best Gaussian radius R = {radius:g} Mpc/h"))


def _calibrate(args):
    from velnet.api import calibrate
    correction, out = calibrate(args.model, args.fields)
    centres = 0.5 * (correction.kedges[1:] + correction.kedges[:-1])
    gains = " / ".join(f"{np.interp(k, centres, correction.gain):.2f}" for k in (0.2, 0.6, 1.0))
    print(f"power correction of {args.model} on {len(args.fields)} box(es): gain {gains} at k = 0.2 / 0.6 / "
          f"1.0 h/Mpc -> {out}")


def _summary(args):
    from velnet.api import describe
    print(describe(args.fields))


HANDLERS = {"simulate": _simulate, "paint": _paint, "prep": _prep, "check-shards": _check_shards, "halos": _halos,
            "halo-fields": _halo_fields, "train": _train, "tune": _tune, "predict": _predict, "evaluate": _evaluate,
            "baseline": _baseline, "calibrate": _calibrate, "summary": _summary}
"""Each command's handler: it parses nothing more and calls one library function."""


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


def _fail(command, message, code, verbose=False):
    """Print an error (with the traceback when `verbose`); under MPI, abort every rank with `code`
    (others may be waiting on this one)."""
    world = _mpi_world()
    rank = f" (rank {world.rank} of {world.size})" if world else ""
    if verbose:
        traceback.print_exc()
    print(f"velnet {command}: error{rank}: {message}", file=sys.stderr, flush=True)
    if world:
        sys.stdout.flush()
        world.Abort(code)
    return code


INTERRUPTED = ("interrupted: outputs are written whole or not at all, so none is half-written "
               "(velnet train resumes where it stopped when rerun)")


def main(argv=None):
    """Run one velnet command; 0 on success, 2 for bad input (a message naming the file or flag
    and the fix, the traceback only with -v), 130 when interrupted (Ctrl-C)."""
    args = build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    _configure_logging(args.verbose)
    start = time.time()
    try:
        _check_out_is_no_input(args)
        HANDLERS[args.command](args)
    except VelnetInputError as err:
        return _fail(args.command, err, 2, args.verbose)
    except OSError as err:  # I/O a library step did not anticipate: the file and what to do
        return _fail(args.command, from_os_error(err), 2, args.verbose)
    except MemoryError:
        return _fail(args.command, "out of memory: use a smaller mesh, box or batch, or a larger machine",
                     2, args.verbose)
    except KeyboardInterrupt:
        return _fail(args.command, INTERRUPTED, 130, args.verbose)
    except Exception:
        if _mpi_world():
            _fail(args.command, traceback.format_exc(), 1)
        raise
    log.debug("%s took %.1f s", args.command, time.time() - start)
    return 0


INPUT_ARGUMENTS = ("snapshot", "inputs", "fields", "models", "model", "files", "data", "catalog", "predicted",
                   "halo_fields", "catalogs", "base", "baseline", "config", "catalog_config", "density_model")
"""The parsed arguments that name files a command reads."""


def _check_out_is_no_input(args):
    """VelnetInputError when --out names a file or folder the command reads."""
    out = getattr(args, "out", None)
    if out is None:
        return
    from velnet.files import refuse_inputs
    values = [getattr(args, name, None) for name in INPUT_ARGUMENTS]
    refuse_inputs(out, [v for value in values for v in ([value] if isinstance(value, str) else value or ())])


if __name__ == "__main__":
    sys.exit(main())

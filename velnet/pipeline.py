"""velnet's pipeline as functions: simulate boxes, find halos, make halo fields, prepare shards,
train and tune, each from files to files (the `velnet` commands of the same names run them).

Snapshots and catalogues are read by `data_prep` (nbodykit, fastpm, imported when first
needed); every output is written atomically, with a record of its config beside it.
"""
import dataclasses
import json
from pathlib import Path

from velnet.errors import VelnetInputError
from velnet.files import open_h5, require_file


def simulate(out, preset="wu2021", cache=False, **overrides):
    """Run fastpm from a preset (collective under MPI).

    Args:
        out: output folder of the snapshots and config.json.
        preset: "wu2021" (512 Mpc/h, 1 Mpc/h particle spacing, z = 0) or "halo2024".
        cache: simulate into velnet's cache, keyed by the configuration, or take the box from
            there; `out` becomes a link to it (`data_prep.cache`).
        **overrides: `data_prep.simulate.SimulationConfig` fields: box_size (Mpc/h),
            nparticles (per side), steps, seed, z_start, output_redshifts, force_mesh.

    Returns:
        The snapshot paths, one per output redshift.
    """
    from data_prep.simulate import SimulationConfig, snapshot_name
    from data_prep.simulate import simulate as run

    config = SimulationConfig.from_preset(preset, **overrides)
    if not cache:
        return run(config, out)
    from nbodykit import CurrentMPIComm

    from data_prep.cache import is_complete_simulation, link_output, simulation_folder
    folder = simulation_folder(config)
    if not is_complete_simulation(folder):
        run(config, folder)
    if CurrentMPIComm.get().rank == 0:
        link_output(out, folder)
    return [Path(out) / snapshot_name(z) for z in config.output_redshifts]


def find_halos(snapshot, out, linking_length=0.2, nmin=20, cache=False, subhalos=None, subhalo_seed=0, **reader):
    """FOF halos of a snapshot (nbodykit) into a halo catalogue `.h5` (collective under MPI).

    Args:
        snapshot: the snapshot (`data_prep.readers.read_particles`, with `**reader`).
        out: the catalogue file.
        linking_length: in mean particle separations.
        nmin: halos keep more than nmin particles.
        cache: find the halos once per snapshot and settings, in velnet's cache; `out`
            becomes a link to it.
        subhalos: None, or a subhalo model of `data_prep.subhalos.MODELS` whose satellites join
            the hosts (`data_prep.fof.find_halos`).
        subhalo_seed: the satellites' random seed.

    Returns:
        `out`.
    """
    from data_prep.fof import write_halos

    found = dict(linking_length=linking_length, nmin=nmin, subhalos=subhalos, seed=subhalo_seed)
    if not cache:
        write_halos(snapshot, out, **found, **reader)
        return out
    from nbodykit import CurrentMPIComm

    from data_prep.cache import halos_file, link_output
    cached = halos_file(snapshot, linking_length, nmin, subhalos, subhalo_seed)
    if not cached.is_file():
        write_halos(snapshot, cached, **found, **reader)
    if CurrentMPIComm.get().rank == 0:
        link_output(out, cached)
    return out


def make_halo_fields(snapshot, out, nmesh=128, catalogs=None, catalog_config=None, los="z", weighting="number",
                     linking_length=0.2, nmin=20, **reader):
    """The 2024 paper's fields of a snapshot: redshift-space halo channels and real-space targets.

    Args:
        snapshot: the snapshot (read with `**reader`, as `data_prep.readers.read_particles`).
        out: the fields file.
        nmesh: cells per side.
        catalogs: halo catalogue files instead of FOF halos of the snapshot: velnet's
            (`find_halos`), HBT+ SubSnap files (halos and subhalos; the reader's cosmology
            supplies what they lack), or other codes' with `catalog_config`; several are
            combined.
        catalog_config: JSON file mapping another code's columns and units
            (`data_prep.catalogs.read_catalog`).
        los: the line of sight, "x", "y" or "z".
        weighting: "number" or "mass" (halo channels with mass weighting).
        linking_length, nmin: of the FOF halos when no catalogue is given.

    Returns:
        `out`.
    """
    from data_prep.catalogs import combine_catalogs, load_halos, read_catalog
    from data_prep.halo_fields import write_halo_fields
    from data_prep.hbt import is_hbt, read_hbt_tracers

    catalog = None
    if catalogs:
        config = _json_file(catalog_config, "catalogue config") if catalog_config else None
        read = [read_hbt_tracers(p, reader.get("cosmology"), reader.get("box_size"), reader.get("redshift"))
                if is_hbt(p) else read_catalog(p, config) if config else load_halos(p) for p in catalogs]
        catalog = read[0] if len(read) == 1 else combine_catalogs(read)
    return write_halo_fields(snapshot, out, nmesh, catalog=catalog, los=los, weighting=weighting,
                             linking_length=linking_length, nmin=nmin, **reader)


def _json_file(path, what):
    """The JSON of a file; VelnetInputError naming it when it is missing or not JSON."""
    path = require_file(path, what)
    try:
        return json.loads(Path(path).read_text())
    except ValueError as err:
        raise VelnetInputError(path, f"not valid JSON ({err})") from None


def is_fields_file(path):
    """Whether `path` is meant as a velnet fields file (HDF5 with a mesh size), however broken
    its other metadata (which `load_fields` then names)."""
    if Path(path).suffix not in (".h5", ".hdf5"):
        return False
    try:
        with open_h5(path, "r") as h5:
            return "nmesh" in h5.attrs
    except OSError:
        return False


def prepare(inputs, out, task=None, target=None, nmesh=128, predictions=None, density_model=None, linear=False,
            smoothing=0.0, base=None, context=0, overwrite=False, reader=None, **shards):
    """Snapshots or fields files -> fields files -> the task's tiles in TFRecord shards with a manifest.

    Args:
        inputs: snapshots (painted on `nmesh`^3 cells into `<out>-fields/`, where missing) or
            fields files (`velnet paint`, `velnet halo-fields`), one box each.
        out: the dataset folder.
        task: a `velnet.tasks.TASKS` name (default `velnet.tasks.DEFAULT_TASK`).
        target: what the network predicts (default the task's first target).
        nmesh: cells per side of painted snapshots.
        predictions: one predictions file per input (`velnet predict` on that box), whose
            fields are channels too: stage one's density for "halo-velocity".
        density_model: the model that predicted them (checked against the files, which name
            it; `velnet predict` runs it on boxes without them).
        linear: add the task's whole-box estimate of the target as input channels (for the
            residual presets): linear theory (wu2021), the linear real-space density
            (halo-density).
        smoothing: Gaussian radius of that linear theory, Mpc/h.
        base: a classical reference file (`velnet baseline`) whose estimate replaces the
            whole-box one: wu2021 a classical estimator (implies `linear`), the halo tasks a halo
            filter or reconstruction.
        context: coarsening factor of a context channel (0: none).
        overwrite: replace painted fields and a different dataset in `out`.
        reader: `data_prep.readers.read_particles` keywords for snapshots.
        **shards: `data_prep.make_shards.make_shards` options: tile, margin, subfield, split,
            fractions, tiles_per_shard, target_scale, seed.

    Returns:
        The dataset's `velnet.data.manifest.Manifest`.
    """
    from data_prep.make_shards import make_shards
    from data_prep.paint import paint_snapshot
    from velnet.data.boxes import predicted_names
    from velnet.fields.field import field_names
    from velnet.physics.references import load_reference
    from velnet.tasks import DEFAULT_TASK, get_task

    out = Path(out)
    files = []
    for path in map(Path, inputs):
        if is_fields_file(path):
            files.append(path)
            continue
        files.append(out.parent / f"{out.name}-fields" / f"{path.stem or path.name}.h5")
        if not files[-1].exists() or overwrite:
            paint_snapshot(path, nmesh, files[-1], **(reader or {}))
    task = get_task(task or DEFAULT_TASK)
    target = target or task.targets[0]
    names = field_names(files[0]) + (predicted_names(predictions[0]) if predictions else [])
    spec = task.inputs(target, names, linear=linear, smoothing=smoothing, context=context,
                       base=load_reference(base) if base else None)
    if density_model:
        spec = dataclasses.replace(spec, density_model=str(density_model))
    return make_shards(files, out, task, target=target, overwrite=overwrite, inputs=spec, predictions=predictions,
                       **shards)


def laptop_preset(data):
    """The small model preset of a dataset's task (the command line's default)."""
    from velnet.data.manifest import read_manifest
    from velnet.tasks import get_task

    return get_task(read_manifest(data).task).laptop_preset


def train(data, out, config=None, preset=None, **options):
    """Train a task's network on a shard dataset (`velnet.training.train.train`).

    Args:
        data: the dataset folder (`prepare`).
        out: the run folder.
        config: a training config (a JSON file or a dict, checked by
            `velnet.training.train.training_options`): "model" and `train`'s options, which
            win over `options`.
        preset: the model preset when the config names no model (default the task's small one).
        **options: `train`'s options (epochs, batch_size, learning_rate, seed, augment,
            steps_per_epoch, validation_steps, devices).

    Returns:
        Path of the trained `model.keras`.
    """
    from velnet.training.train import train as run
    from velnet.training.train import training_options

    model, chosen = training_options(config) if config is not None else (None, {})
    model = model or {"preset": preset or laptop_preset(data)}
    return run(data, out, model, **{**options, **chosen})


def tune(data, out, config=None, preset=None, **options):
    """Search a task's hyperparameters with keras-tuner (`velnet.training.tune.tune`).

    Args:
        data: the dataset folder.
        out: the tuning folder.
        config: a JSON file or dict: "model" (the base model, instead of `preset`) and the
            defaults of the tuned training options (learning_rate, batch_size).
        preset: the base preset (default the task's small one).
        **options: `tune`'s options (algorithm, max_trials, epochs, overwrite, seed, fixed,
            steps_per_epoch, validation_steps, tune_boxes, executions_per_trial).

    Returns:
        Path of `best_config.json` (None in a distributed worker).

    Raises:
        VelnetInputError: naming the config file, for a key it may not hold.
    """
    from velnet.training.train import MODEL_KEY
    from velnet.training.tune import TUNED_TRAIN_KWARGS
    from velnet.training.tune import tune as run

    stored = (config if isinstance(config, dict) else _json_file(config, "tune config")) if config else {}
    unknown = sorted(set(stored) - {MODEL_KEY, *TUNED_TRAIN_KWARGS})
    if unknown:
        raise VelnetInputError(None if isinstance(config, dict) else config,
                               f"a tune config holds {MODEL_KEY!r} and the defaults of {list(TUNED_TRAIN_KWARGS)}. "
                               f"Received: {unknown}")
    stored = dict(stored)
    model = stored.pop(MODEL_KEY, None) or preset or laptop_preset(data)
    return run(data, out, model_config=model, **options, **stored)

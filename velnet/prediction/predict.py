"""Whole-box prediction for every task: the box's input channels, the model, the field out.

The networks are fully convolutional. A periodic one (the 2024 halo paper's, padding
periodically) takes the whole box in one pass. The others (Wu et al.'s, with valid
convolutions) take tiles with margins: inference may use target tiles larger than the
training ones (fewer overlapping margins to compute), the input windows wrap around the
periodic box exactly as in training, and any mesh size is predicted: where the tile does not
divide it, the tiles overlap and each cell comes from the tile where it is most central.
Channels computed from the whole box (linear theory, a classical estimate, a stage-one
model's density) are computed before either. `predict_file` streams a tiled network's
output tiles into the output file as they come, so the box is held about once.

Under MPI (the fields cut into x-slabs over the ranks, `velnet.fields.field`) each rank
predicts its own planes: the whole-box channels come from the distributed FFTs; a rank runs
the tiles that give cells to its planes, on the input planes they reach, gathered from the
ranks that hold them; and it writes its planes. A periodic network takes the whole box in
one pass, on one process. Keras is imported only for networks.
"""
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from velnet.data.inputs import InputWindows, box_inputs
from velnet.data.tiling import cover_starts, owned_runs, place
from velnet.errors import VelnetInputError
from velnet.fields.field import UNITS, Field, FieldsWriter, Planes, load_fields
from velnet.fields.mesh import gather_planes
from velnet.physics.classical import ClassicalEstimator, is_classical_file
from velnet.prediction.power_correction import PowerCorrection, correction_path
from velnet.provenance import write_record
from velnet.tasks import get_task

log = logging.getLogger(__name__)


def inference_tile(nmesh, margin, multiple=4, largest=64):
    """The target tile for inference: the fewest tiles of at most `largest` cells, each as small
    as that number allows (they cover the box with overlaps, see `velnet.data.tiling.cover_starts`).

    The input window (tile + 2 margin) must be divisible by `multiple` (2**levels of the U-net).

    Raises:
        VelnetInputError: no tile of at most `nmesh` cells has such a window.
    """
    fits = [t for t in range(1, min(largest, nmesh) + 1) if (t + 2 * margin) % multiple == 0]
    if not fits:
        raise VelnetInputError(None, f"no target tile of at most {min(largest, nmesh)} cells has an "
                                     f"input window (tile + {2 * margin}) divisible by {multiple}. "
                                     f"Received: nmesh={nmesh}")
    count = -(-nmesh // fits[-1])
    return next(t for t in fits if t * count >= nmesh)


def _check_tile(tile, nmesh, margin, multiple):
    """Raise unless `tile` (--tile) is a usable inference tile for an `nmesh^3` box."""
    if not (1 <= tile <= nmesh and (tile + 2 * margin) % multiple == 0):
        raise VelnetInputError(None, f"--tile must be 1 to {nmesh} cells with tile + {2 * margin} "
                                     f"divisible by {multiple} (the U-net's downsampling). "
                                     f"Received: --tile {tile}")


def whole_box_inputs(box, spec, target, target_scale, predicted=None):
    """The per-cell input channels of a whole box, a stage-one model's density included.

    Args:
        box: dict name -> `Field` of the box (`spec.field_names()` and those of a density
            model's own spec).
        spec: the `InputSpec`.
        target, target_scale: as `velnet.data.inputs.box_inputs`.
        predicted: dict model path -> its predicted `Field` on this box, filled as models
            run (a stage-one model is then run once for several stage-two models).

    Returns:
        float32 `(N, N, N, C)` (without the context window).
    """
    density = None
    if spec.density == "model":
        predicted = {} if predicted is None else predicted
        density = predict_with(spec.density_model, box, predicted=predicted).value
    return box_inputs(box, spec, target, target_scale, density)


def predict_box(model, metadata, box, tile=None, batch_size=4, predicted=None, out=None):
    """Reconstruct the target field of a whole periodic box.

    Args:
        model: physical-output model from `velnet.training.train.load_model`.
        metadata: its metadata dict (task, tile sizes, target name, box_size and nmesh of
            training, input spec and target scale for the input channels).
        box: dict name -> `Field` of the whole box (the fields its input channels read,
            `velnet.data.inputs`), or the density `Field` (rho/rho_mean) alone, all a density's
            channels need; on an N^3 mesh with the training cell size. Under MPI, this
            rank's x-slabs of them (collective).
        tile: (tiled networks) target tile side for inference, cells: any from 1 to N whose
            input window (tile + 2 margin) the U-net takes; default `inference_tile`. Tiles
            that do not divide N overlap; each cell is taken from the tile where it is most
            central (`velnet.data.tiling.stitch`), so any N is predicted. A periodic network
            takes the whole box (N divisible by 4).
        batch_size: tiles per model call.
        predicted: as `whole_box_inputs`.
        out: where to write the field instead of returning it: anything that takes
            `out[x0:x1, y0:y1, z0:z1] = block` in the box's cells (a `FieldsWriter` dataset);
            only the planes held here are written.

    Returns:
        `Field` named after the model's target: `(N, N, N, 3)` km/s, or `(N, N, N)` for a
        density (this rank's x-planes under MPI); None when written to `out`.

    Raises:
        VelnetInputError: the cell size differs from the training data's, the input
            channels from the model's, or `tile` (or the box, for a periodic network) does
            not fit; or a periodic network under MPI.
    """
    from velnet.networks.builders import ModelMetadata

    box = box if isinstance(box, dict) else {box.name: box}
    reference = next(iter(box.values()))
    source = reference.attrs.get("path")
    meta = ModelMetadata.from_dict(metadata, source)
    if not np.isclose(reference.cell_size, meta.cell_size, rtol=1e-3):
        raise VelnetInputError(
            source, f"cell size {reference.cell_size:.4g} Mpc/h (box {reference.box_size:g} / {reference.nmesh}) "
                    f"differs from the model's training cell size {meta.cell_size:.4g} Mpc/h")
    _warn_if_out_of_training(meta, reference)
    spec = meta.input_spec
    if spec.channels != model.input_shape[-1]:
        raise VelnetInputError(source, f"input spec {spec.to_dict()} gives {spec.channels} input channel(s), "
                                       f"the model takes {model.input_shape[-1]}")
    periodic = get_task(meta.task).periodic
    if periodic:
        _check_periodic(reference)
    try:
        inputs = whole_box_inputs(box, spec, meta.target_name, meta.target_scale, predicted)
    except VelnetInputError as err:
        raise VelnetInputError(err.path or source, err.problem) from None
    scalar = meta.target_shape[-1] == 1
    sink = out if out is not None else Planes(
        np.empty(reference.value.shape[:3] + (() if scalar else (meta.target_shape[-1],)), np.float32), reference.start)
    if periodic:
        import keras

        value = keras.ops.convert_to_numpy(model(inputs[None], training=False))[0]  # one pass, no tf.function
        sink[0:reference.nmesh] = value[..., 0] if scalar else value
    else:
        density = box["density"].value if spec.context else None
        _tiled(model, meta, inputs, density, reference, tile, batch_size, sink)
    if out is not None:
        return None
    return Field(sink.array, meta.target_name, reference.box_size, reference.redshift, reference.cosmology,
                 {"path": source} if source else {}, reference.start, reference.comm)


def _check_periodic(reference):
    """Raise unless a periodic network can take this box in one pass."""
    if reference.comm is not None:
        raise VelnetInputError(reference.attrs.get("path"), "a periodic network predicts the whole box in one "
                                                            "pass: run it on one process, not under MPI")
    from velnet.networks.halo_unets import TOTAL_STRIDE

    if reference.nmesh % TOTAL_STRIDE:
        raise VelnetInputError(reference.attrs.get("path"), f"a periodic network predicts whole boxes of a "
                                                            f"multiple of {TOTAL_STRIDE} cells per side. "
                                                            f"Received: {reference.nmesh}^3")


def _tiled(model, meta, inputs, density, reference, tile, batch_size, sink):
    """Run a tiled network on the tiles that give cells to the planes held here and write those cells into
    `sink` (`out` of `predict_box`)."""
    nmesh, start = reference.nmesh, reference.start
    stop = start + reference.value.shape[0]
    margin = meta.tile["margin"]
    multiple = 2 ** (len(meta.model_config.get("widths", (0, 0, 0))) - 1)  # 4
    if tile:
        _check_tile(tile, nmesh, margin, multiple)
    tile = tile or inference_tile(nmesh, margin, multiple)
    starts, runs = cover_starts(nmesh, tile), owned_runs(nmesh, tile)
    here = {i: [(max(a, start), min(b, stop), o + max(a, start) - a) for a, b, o in r if a < stop and b > start]
            for i, r in enumerate(runs)}
    here = {i: r for i, r in here.items() if r}  # the x-intervals that give cells to the planes held here
    size = tile + 2 * margin
    try:
        windows = _input_windows(inputs, density, meta.input_spec, reference, [starts[i] for i in here], size, margin)
    except VelnetInputError as err:
        raise VelnetInputError(err.path or reference.attrs.get("path"), err.problem) from None
    del inputs
    tiles = [(i, j, m) for i in here for j in range(len(starts)) for m in range(len(starts))]
    scalar = meta.target_shape[-1] == 1
    for first in tqdm(range(0, len(tiles), batch_size), desc=f"predict {meta.target_name}", unit="batch",
                      disable=reference.comm is not None and reference.comm.rank != 0):
        batch = tiles[first:first + batch_size]
        output = np.asarray(model.predict_on_batch(windows(starts[np.array(batch)], size, margin)))
        for (i, j, m), values in zip(batch, output[..., 0] if scalar else output):
            place(sink, values, (here[i], runs[j], runs[m]))


def _input_windows(inputs, density, spec, reference, x_starts, size, margin):
    """`InputWindows` of the tiles whose x-intervals start at `x_starts`: on the whole box on one
    process; under MPI on the x-planes their windows reach, gathered from the ranks that hold them."""
    if reference.comm is None:
        return InputWindows(inputs, density, spec)
    nmesh, factor = reference.nmesh, spec.context
    reach = [(s - margin, s - margin + size) for s in x_starts]
    for s in x_starts:  # the context window: `size` blocks of `factor` cells around the centre, on the blocks' grid
        centre = s - margin + size // 2
        low = centre - centre % factor - factor * (size // 2)
        reach.append((low, low + factor * size))
    first = min((lo for lo, _ in reach), default=reference.start)
    count = min(nmesh, max((hi for _, hi in reach), default=first) - first)
    first = 0 if count == nmesh else first % nmesh
    planes = gather_planes(inputs, reference.start, reference.comm, first, count, nmesh)
    density = None if density is None else gather_planes(density, reference.start, reference.comm, first, count,
                                                         nmesh)
    return InputWindows(planes, density, spec, first)


def _warn_if_out_of_training(meta, field):
    """Log a warning when the box's cosmology or redshift differs from the training data's.

    The network works on such a box (the linear-theory inputs use the box's own cosmology)
    but was never trained there; `velnet evaluate` measures how much it degrades.
    """
    if meta.cosmology != field.cosmology.to_dict():
        log.warning("%s: cosmology %s differs from the model's training cosmology %s",
                    field.attrs.get("path", "box"), field.cosmology.to_dict(), meta.cosmology)
    if not np.isclose(meta.redshift, field.redshift, atol=1e-3):
        log.warning("%s: redshift %g differs from the model's training redshift %g",
                    field.attrs.get("path", "box"), field.redshift, meta.redshift)


def predict_with(path, box, tile=None, batch_size=4, predicted=None):
    """One model's field for a whole box.

    Args:
        path: a trained network (`.keras` from `velnet train`) or a classical estimator
            file (`.json` from `velnet baseline`).
        box: as `predict_box` (a classical estimator reads the density).
        tile, batch_size: as `predict_box` (tiled networks only).
        predicted: as `whole_box_inputs`: a model already run on this box is not run again.

    Returns:
        `Field` named after the model's target (km/s; rho/rho_mean for a density).
    """
    key = str(Path(path).resolve())
    if predicted is not None and key in predicted:
        return predicted[key]
    field = _predict(_load(path), box if isinstance(box, dict) else {box.name: box}, tile, batch_size, predicted)
    if predicted is not None:
        predicted[key] = field
    return field


def _load(path):
    """`(model, metadata)` of a network, or `(estimator, None)` of a classical estimator file."""
    if is_classical_file(path):
        return ClassicalEstimator.load(path), None
    from velnet.training.train import load_model

    return load_model(path)


def _predict(loaded, box, tile, batch_size, predicted, out=None):
    model, metadata = loaded
    if metadata is None:
        return model.velocity(box["density"])
    return predict_box(model, metadata, box, tile, batch_size, predicted, out)


def _metadata(loaded):
    """The `ModelMetadata` of a loaded network, None for a classical estimator (Keras imported for networks only)."""
    if loaded[1] is None:
        return None
    from velnet.networks.builders import ModelMetadata

    return ModelMetadata.from_dict(loaded[1])


def _target(loaded):
    """The name of the field a loaded model predicts."""
    meta = _metadata(loaded)
    return "velocity" if meta is None else meta.target_name


def _streams(loaded):
    """Whether a loaded model is a tiled network, whose tiles `predict_file` writes as they come."""
    meta = _metadata(loaded)
    return meta is not None and not get_task(meta.task).periodic


def _fields_read(loaded, models):
    """The fields of a box a loaded model reads, its density model's included (loaded into `models`)."""
    meta = _metadata(loaded)
    if meta is None:
        return {"density"}
    spec = meta.input_spec
    names = set(spec.field_names())
    if spec.density == "model":
        key = str(Path(spec.density_model).resolve())
        models.setdefault(key, _load(spec.density_model))
        names |= _fields_read(models[key], models)
    return names


def predict_file(model_paths, fields_path, out_path, tile=None, batch_size=4, power_preserving=False, comm=None):
    """Predict with one or more models and write their fields to one HDF5 file.

    A stage-two halo model's stage-one density model is run too (once), and its density
    written. Without a momentum model, the momentum written is rho/rho_mean times the
    predicted velocity, with the predicted density where a model predicts one and the box's
    own otherwise (Wu et al.'s input; on their test boxes this beats a separately trained
    momentum model; the 2024 paper's Fig. 1 forms it so).

    Args:
        model_paths: model path(s), networks (`.keras`) or classical estimators (`.json`),
            e.g. a velocity and a momentum network.
        fields_path: fields file with the fields the models read (a "density"; for the halo
            networks, the halo channels and the linear inputs of `velnet halo-fields`).
        out_path: output `.h5`; written atomically, with a `.json` run record beside it.
        tile, batch_size: as `predict_box`.
        power_preserving: write the velocity model's power-preserving output (its
            `correction_path` file from `velnet calibrate`) instead of the minimum-variance one.
        comm: MPI communicator of several ranks: each rank reads, predicts and writes its
            x-slab of the box (collective; `velnet.fields.mesh.current_comm()` under mpirun);
            None: the whole box here.

    Returns:
        `out_path`.

    Raises:
        VelnetInputError: a bad model or fields file, two models of one target, or a
            power-preserving request without a velocity model, with a momentum model, or
            without the model's correction file.
    """
    start = time.time()
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    models = {str(Path(path).resolve()): _load(path) for path in paths}
    names = set().union(*(_fields_read(loaded, models) for loaded in list(models.values())))
    order = sorted(models, key=lambda key: _target(models[key]) != "density")  # density models first: others read them
    targets = {}
    for key in order:
        if _target(models[key]) in targets:
            raise VelnetInputError(key, f"a second model for {_target(models[key])!r}")
        targets[_target(models[key])] = key
    if power_preserving and ("velocity" not in targets or "momentum" in targets):
        raise VelnetInputError(None, "--power-preserving needs one velocity model and no momentum model "
                                     "(the momentum is then (rho/rho_mean) v)")
    correction = PowerCorrection.load(correction_path(targets["velocity"])) if power_preserving else None
    box = load_fields(fields_path, sorted(names), comm=comm)
    for field in box.values():
        field.attrs["path"] = str(fields_path)
    predicted, written = {}, {}
    attrs = {"source": str(fields_path), "models": list(models),
             "output": "power-preserving" if power_preserving else "minimum-variance"}
    with FieldsWriter(out_path, next(iter(box.values())), attrs) as writer:
        for name, key in targets.items():
            loaded = models[key]
            if _streams(loaded) and not (correction and name == "velocity"):
                vector = _metadata(loaded).target_shape[-1] == 3
                written[name] = writer.create(name, vector, {"units": UNITS.get(name, ""), "path": str(fields_path),
                                                             "model": key})
                _predict(loaded, box, tile, batch_size, predicted, out=written[name])
                continue
            field = predicted.get(key) or _predict(loaded, box, tile, batch_size, predicted)
            predicted[key] = field
            if correction and name == "velocity":
                field = correction.apply(field)
            field.attrs = {**field.attrs, "model": key}
            writer.write(field)
            written[name] = Planes(field.value, field.start)
        if "velocity" in written and "momentum" not in written:
            density = predicted.get(targets.get("density")) or box.get("density") or \
                load_fields(fields_path, ["density"], comm=comm)["density"]
            how = f"({'predicted ' if 'density' in targets else ''}rho/rho_mean) x the predicted velocity"
            _write_momentum(writer.create("momentum", True, {"units": UNITS["momentum"], "model": how}), density,
                            written["velocity"])
    if comm is None or comm.rank == 0:
        write_record(Path(out_path).with_suffix(".json"), "predict",
                     {"models": [str(p) for p in paths], "fields": str(fields_path), "tile": tile,
                      "batch_size": batch_size, "power_preserving": power_preserving,
                      "ranks": 1 if comm is None else comm.size},
                     {"wall": round(time.time() - start, 3)})
        log.info("wrote %s (%s)", out_path, ", ".join(written) + (", momentum" if "momentum" not in targets else ""))
    return out_path


def _write_momentum(sink, density, velocity):
    """sink = (rho/rho_mean) v, a few x-planes at a time (`velocity` read back by the box's planes)."""
    start, stop = density.start, density.start + density.value.shape[0]
    for a in range(start, stop, 8):
        b = min(a + 8, stop)
        sink[a:b] = density.value[a - start:b - start, ..., None] * velocity[a:b]

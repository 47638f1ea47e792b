"""Whole-box prediction for every task: the box's input channels, the model, the field out.

The networks are fully convolutional. A periodic one (the 2024 halo paper's, padding
periodically) takes the whole box in one pass. The others (Wu et al.'s, with valid
convolutions) take tiles with margins: inference may use target tiles larger than the
training ones (fewer overlapping margins to compute), the input windows wrap around the
periodic box exactly as in training, and any mesh size is predicted: where the tile does not
divide it, the tiles overlap and each cell comes from the tile where it is most central.
Channels computed from the whole box (linear theory, a classical estimate, a stage-one
model's density) are computed before either. Models are named by path or by shipped name
(`velnet.shipped`). `predict_file` streams a tiled network's output tiles into the output file
as they come, so the box is held about once.

Under MPI (the fields cut into x-slabs over the ranks, `velnet.fields.field`) each rank
predicts its own planes: the whole-box channels come from the distributed FFTs; a rank runs
the tiles that give cells to its planes, on the input planes they reach, gathered from the
ranks that hold them; and it writes its planes. A periodic network takes the whole box in
one pass, on one process. Keras is imported only for networks. The tiles are cut and run in
`velnet.prediction.tiles`, models loaded in `velnet.prediction.models`.
"""
import logging
import time
from pathlib import Path

import numpy as np

from velnet.data.inputs import PREDICTED, PREDICTED_DENSITY, box_inputs
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, FieldsWriter, Planes, field_names, load_fields, made_by
from velnet.files import check_output
from velnet.physics.classical import ClassicalEstimator
from velnet.prediction.models import fields_read, load_models, load_one_model, reads_predictions, streams_tiles
from velnet.prediction.power_correction import PowerCorrection, correction_path
from velnet.prediction.tiles import predict_tiles
from velnet.provenance import is_record, write_record
from velnet.shipped import model_path
from velnet.tasks import DENSITY, TARGETS, VELOCITY, get_target, get_task

log = logging.getLogger(__name__)

MADE_BY = "velnet predict"
"""The `made_by` attribute of the files `velnet predict` writes."""


def whole_box_inputs(box, spec, target, target_scale, predicted=None):
    """The per-cell input channels of a whole box, a stage-one model's density included.

    Args:
        box: dict name -> `Field` of the box (`spec.field_names()`; a box without the
            predicted density has the fields its density model reads instead).
        spec: the `InputSpec`.
        target, target_scale: as `velnet.data.inputs.box_inputs`.
        predicted: dict model path -> its predicted `Field` on this box, filled as models
            run (a stage-one model is then run once for several stage-two models).

    Returns:
        float32 `(N, N, N, C)` (without the context window).

    Raises:
        VelnetInputError: a predicted density the box lacks and no model to predict it, or as
            `box_inputs` (a density that is not rho/rho_mean among them).
    """
    if spec.density == "predicted" and PREDICTED_DENSITY not in box:
        if not spec.density_model:
            raise VelnetInputError(None, f"the inputs need {PREDICTED_DENSITY}, stage one's density, and the model "
                                         "records no stage-one model to predict it")
        predicted = {} if predicted is None else predicted
        density = predict_with(spec.density_model, box, predicted=predicted)  # a halo reference gives a dict
        box = {**box, PREDICTED_DENSITY: density[DENSITY] if isinstance(density, dict) else density}
    return box_inputs(box, spec, target, target_scale)


def predict_box(model, metadata, box, tile=None, batch_size=4, predicted=None, out=None):
    """Reconstruct the target field of a whole periodic box.

    Args:
        model: physical-output model from `velnet.training.train.load_model`.
        metadata: its `ModelMetadata` (task, tile sizes, target name, box_size and nmesh of
            training, input spec and target scale for the input channels), or that as a dict.
        box: dict name -> `Field` of the whole box (the fields its input channels read,
            `velnet.data.inputs`), or the density `Field` (rho/rho_mean) alone, all a density's
            channels need; on an N^3 mesh with the training cell size. Under MPI, this
            rank's x-slabs of them (collective).
        tile: (tiled networks) target tile side for inference, cells: any from 1 to N whose
            input window (tile + 2 margin) the U-net takes; default
            `velnet.prediction.tiles.inference_tile`. Tiles that do not divide N overlap; each
            cell is taken from the tile where it is most central (`velnet.data.tiling.stitch`),
            so any N is predicted. A periodic network takes the whole box (N divisible by 4).
        batch_size: tiles per model call.
        predicted: as `whole_box_inputs`.
        out: where to write the field instead of returning it: anything that takes
            `out[x0:x1, y0:y1, z0:z1] = block` in the box's cells (a `FieldsWriter` dataset);
            only the planes held here are written.

    Returns:
        `Field` named after the model's target (`velnet.tasks.TARGETS`): `(N, N, N, 3)` for a
        vector (km/s), `(N, N, N)` for a scalar (rho/rho_mean for a density); this rank's
        x-planes under MPI; None when written to `out`.

    Raises:
        VelnetInputError: the cell size differs from the training data's, the input
            channels from the model's, or `tile` (or the box, for a periodic network) does
            not fit; or a periodic network under MPI.
    """
    from velnet.networks.builders import ModelMetadata

    box = box if isinstance(box, dict) else {box.name: box}
    reference = next(iter(box.values()))
    source = reference.attrs.get("path")
    meta = metadata if isinstance(metadata, ModelMetadata) else ModelMetadata.from_dict(metadata, source)
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
        _check_periodic(reference, meta.stride)
    target = get_target(meta.target_name)
    try:
        inputs = whole_box_inputs(box, spec, target, meta.target_scale, predicted)
    except VelnetInputError as err:
        raise VelnetInputError(err.path or source, err.problem) from None
    sink = out if out is not None else Planes(
        np.empty(reference.value.shape[:3] + ((3,) if target.vector else ()), np.float32), reference.start)
    if periodic:
        import keras

        value = keras.ops.convert_to_numpy(model(inputs[None], training=False))[0]  # one pass, no tf.function
        sink[0:reference.nmesh] = value if target.vector else value[..., 0]
    else:
        density = box[DENSITY].value if spec.context else None
        predict_tiles(model, meta, inputs, density, reference, tile, batch_size, sink)
    if out is not None:
        return None
    return Field(sink.array, target.name, reference.box_size, reference.redshift, reference.cosmology,
                 {"units": target.units, **({"path": source} if source else {})}, reference.start, reference.comm)


def _check_periodic(reference, stride):
    """Raise unless a periodic network of total `stride` can take this box in one pass."""
    if reference.comm is not None:
        raise VelnetInputError(reference.attrs.get("path"), "a periodic network predicts the whole box in one "
                                                            "pass: run it on one process, not under MPI")
    if reference.nmesh % stride:
        raise VelnetInputError(reference.attrs.get("path"), f"a periodic network predicts whole boxes of a "
                                                            f"multiple of {stride} cells per side. "
                                                            f"Received: {reference.nmesh}^3")


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
        path: a trained network (`.keras` from `velnet train`), a classical estimator file
            (`.json` from `velnet baseline`) or a shipped model's name (`velnet.shipped`).
        box: as `predict_box` (a classical estimator reads the density).
        tile, batch_size: as `predict_box` (tiled networks only).
        predicted: as `whole_box_inputs`: a model already run on this box is not run again.

    Returns:
        `Field` named after the model's target (km/s; rho/rho_mean for a density).
    """
    path = model_path(path)
    key = str(path.resolve())
    if predicted is not None and key in predicted:
        return predicted[key]
    field = _predict(load_one_model(path), box if isinstance(box, dict) else {box.name: box}, tile, batch_size,
                     predicted)
    if predicted is not None:
        predicted[key] = field
    return field


def _predict(loaded, box, tile, batch_size, predicted, out=None):
    """A loaded model's `Field`, or the dict of `Field`s of a halo reference; a tiled network's
    written into `out` instead when given (`predict_box`)."""
    model, metadata = loaded
    if isinstance(model, ClassicalEstimator):
        return model.velocity(box[DENSITY])
    if metadata is None:
        if next(iter(box.values())).comm is not None:
            raise VelnetInputError(None, f"the classical halo reference ({model.METHOD}) runs on one process, "
                                         "not under MPI")
        return model.predict(box)
    return predict_box(model, metadata, box, tile, batch_size, predicted, out)


def predict_fields(models, box, tile=None, batch_size=4, power_preserving=False):
    """The fields models predict for a box, and the targets formed from the predicted velocity.

    Models that read no other model's prediction run first, and what they predict joins the box
    (prefixed "predicted_"): a stage-two halo model given with a stage-one model reads its
    density; given alone, it runs the stage-one model it records (once), whose density is
    returned too. Targets with an `of_velocity` that no model predicts (the momentum) are formed
    from the predicted velocity and the density, the predicted one where a model predicts it
    and the box's own otherwise (Wu et al.'s input; on their test boxes this beats a
    separately trained momentum model; the 2024 paper's Fig. 1 forms it so).

    Args:
        models: from `load_models`.
        box: dict name -> `Field` of the box: what the models read (and the density).
        tile, batch_size: as `predict_box`.
        power_preserving: the velocity model's power-preserving output (its `correction_path`
            file from `velnet calibrate`) instead of the minimum-variance one.

    Returns:
        dict target name -> `Field`, each with `attrs["model"]`.

    Raises:
        VelnetInputError: two models of one target, or a power-preserving request without
            a velocity model, with a model of a target formed from it, or without the
            model's correction file.
    """
    predicted, out, sources = {}, {}, {}
    for key, loaded in sorted(models.items(), key=lambda item: reads_predictions(item[1])):
        result = predicted.get(key) or _predict(loaded, box, tile, batch_size, predicted)
        predicted[key] = result
        for field in (result.values() if isinstance(result, dict) else [result]):
            if field.name in out:
                raise VelnetInputError(key, f"a second model for {field.name!r}")
            field.attrs = {**field.attrs, "model": key}
            out[field.name], sources[field.name] = field, key
            box = {**box, PREDICTED + field.name: field}
    for key, result in predicted.items():  # the stage-one models that stage-two models ran
        for field in (result.values() if isinstance(result, dict) else [result]):
            out.setdefault(field.name, field).attrs.setdefault("model", key)
    formed = [t for t in TARGETS.values() if t.of_velocity and t.name != VELOCITY]
    if power_preserving:
        if VELOCITY not in out or any(t.name in out for t in formed):
            raise VelnetInputError(None, "--power-preserving needs one velocity model and no model of a target "
                                         f"formed from it ({', '.join(t.name for t in formed)} are then formed)")
        out[VELOCITY] = PowerCorrection.load(correction_path(sources[VELOCITY])).apply(out[VELOCITY])
    return {**out, **formed_targets(out, box)}


def formed_targets(predicted, box):
    """The targets with an `of_velocity` that no model predicted, formed from the predicted velocity
    and the density (the predicted one, else the box's).

    Args:
        predicted: dict target name -> predicted `Field`.
        box: dict name -> `Field` of the box.

    Returns:
        dict target name -> `Field` (empty without a predicted velocity).
    """
    targets, density, label = _to_form(predicted, box)
    out = {}
    for target in targets:
        out[target.name] = target.formed(density, predicted[VELOCITY])
        out[target.name].attrs = {"model": label}
    return out


def _to_form(predicted, box):
    """The targets to form from the predicted velocity (none without one), the density `Field` they are
    formed with and the label of how they were made."""
    targets = [t for t in TARGETS.values() if t.of_velocity and t.name != VELOCITY and t.name not in predicted]
    if VELOCITY not in predicted or not targets:
        return [], None, None
    density = predicted.get(DENSITY) or box.get(DENSITY)
    if density is None:
        raise VelnetInputError(None, f"{[t.name for t in targets]} are formed from the velocity and the density, "
                                     "and the box holds no density")
    return targets, density, f"({'predicted ' if DENSITY in predicted else ''}rho/rho_mean) x the predicted velocity"


def predict_file(model_paths, fields_path, out_path, tile=None, batch_size=4, power_preserving=False,
                 overwrite=False, comm=None):
    """Predict with one or more models and write their fields to one HDF5 file (as `predict_fields`).

    A tiled network's output goes into the file tile by tile (unless another model reads it, or
    its power correction is asked for), and a target formed from that velocity (the momentum)
    goes in a few planes at a time, so the box is held about once.

    Args:
        model_paths: model path(s) or shipped names, networks (`.keras`) or classical
            estimators (`.json`), e.g. a velocity and a momentum network.
        fields_path: fields file with the fields the models read (a "density"; for the halo
            networks, the halo channels and the linear inputs of `velnet halo-fields`).
        out_path: output `.h5`; written atomically, with a `.json` run record beside it. An
            existing file there is replaced only if `velnet predict` wrote it, or with `overwrite`;
            never an input.
        tile, batch_size, power_preserving: as `predict_fields`.
        overwrite: replace an output file (and record) that `velnet predict` did not write.
        comm: MPI communicator of several ranks: each rank reads, predicts and writes its
            x-slab of the box (collective; `velnet.fields.mesh.current_comm()` under mpirun);
            None: the whole box here.

    Returns:
        `out_path`.

    Raises:
        VelnetInputError: a bad model or fields file, an output path `check_output` refuses, a
            prediction that is not finite (nothing is written), or what `predict_fields` raises.
    """
    start = time.time()
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    record = Path(out_path).with_suffix(".json")
    inputs = [fields_path, *paths, *(correction_path(model_path(p)) for p in paths)]
    check_output(out_path, "a prediction fields file", lambda path: made_by(path) == MADE_BY, inputs, overwrite)
    check_output(record, "a predict record", lambda path: is_record(path, "predict"), inputs, overwrite)
    models = load_models(paths)
    available = field_names(fields_path)
    names = fields_read(models, available) | ({DENSITY} & set(available))
    box = load_fields(fields_path, sorted(names), comm=comm)
    stage_two = any(reads_predictions(loaded) for loaded in models.values())
    streamed = {key for key, loaded in models.items() if streams_tiles(loaded) and not stage_two and not
                (power_preserving and loaded[1].target_name == VELOCITY)}
    attrs = {"made_by": MADE_BY, "source": str(Path(fields_path).resolve()), "models": list(models),
             "output": "power-preserving" if power_preserving else "minimum-variance"}
    with FieldsWriter(out_path, next(iter(box.values())), attrs) as writer:
        written = {}
        for key in streamed:
            target = get_target(models[key][1].target_name)
            if target.name in written:
                raise VelnetInputError(key, f"a second model for {target.name!r}")
            sink = writer.create(target.name, target.vector, {"units": target.units, "path": str(fields_path),
                                                              "model": key})
            _predict(models[key], box, tile, batch_size, {}, out=sink)
            written[target.name] = _check_finite(sink, box, target.name, key, fields_path)
        rest = {key: loaded for key, loaded in models.items() if key not in streamed}
        out = predict_fields(rest, box, tile, batch_size, power_preserving) if rest else {}
        targets, density, label = _to_form({**out, **written}, box)
        for target in targets:  # from the velocity written, a few of this rank's planes at a time
            sink = writer.create(target.name, target.vector, {"units": target.units, "model": label})
            for a, b in _plane_chunks(density):
                planes = target.of_velocity(density.value[a - density.start:b - density.start],
                                            written[VELOCITY][a:b])
                if not np.isfinite(planes).all():  # (checked as made: not read back)
                    raise _not_finite(target.name, label, fields_path)
                sink[a:b] = planes
            written[target.name] = sink
        for name, field in out.items():
            if name in written:
                raise VelnetInputError(field.attrs.get("model"), f"a second model for {name!r}")
            _check_finite(Planes(field.value, field.start), box, name, field.attrs.get("model"), fields_path)
            writer.write(field)
    if comm is None or comm.rank == 0:
        write_record(record, "predict",
                     {"models": [str(p) for p in paths], "fields": str(fields_path), "tile": tile,
                      "batch_size": batch_size, "power_preserving": power_preserving,
                      "ranks": 1 if comm is None else comm.size},
                     {"wall": round(time.time() - start, 3)})
        log.info("wrote %s (%s)", out_path, ", ".join([*written, *out]))
    return out_path


def _plane_chunks(like, planes=8):
    """(a, b): the x-planes held here of `like`'s box, `planes` at a time."""
    stop = like.start + like.value.shape[0]
    return [(a, min(a + planes, stop)) for a in range(like.start, stop, planes)]


def _check_finite(sink, box, name, model, fields_path):
    """The `Field` of the planes held here of a predicted field written to `sink`, checked finite a few
    planes at a time; VelnetInputError naming the model otherwise."""
    if not all(np.isfinite(sink[a:b]).all() for a, b in _plane_chunks(next(iter(box.values())))):
        raise _not_finite(name, model, fields_path)
    return sink


def _not_finite(name, model, fields_path):
    """The error for a predicted field `name` with NaN or infinite values, naming its model."""
    return VelnetInputError(model or fields_path, f"predicted {name!r} holds NaN or infinite values on "
                                                  f"{fields_path}; nothing written")

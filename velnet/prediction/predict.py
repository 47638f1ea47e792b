"""Whole-box prediction for every task: the box's input channels, the model, the field out.

The networks are fully convolutional. A periodic one (the 2024 halo paper's, padding
periodically) takes the whole box in one pass. The others (Wu et al.'s, with valid
convolutions) take tiles with margins: inference may use target tiles larger than the
training ones (fewer overlapping margins to compute), the input windows wrap around the
periodic box exactly as in training, and any mesh size is predicted: where the tile does not
divide it, the tiles overlap and each cell comes from the tile where it is most central.
Channels computed from the whole box (linear theory, a classical estimate, a stage-one
model's density) are computed before either. Models are named by path or by shipped name
(`velnet.shipped`).
"""
import logging
import time
from pathlib import Path

import keras
import numpy as np
from tqdm.auto import tqdm

from velnet.data.inputs import PREDICTED, PREDICTED_DENSITY, InputWindows, box_inputs
from velnet.data.tiling import cover_origins, stitch
from velnet.errors import VelnetInputError
from velnet.fields.checks import check_density
from velnet.fields.field import Field, field_names, load_fields, made_by, save_fields
from velnet.files import check_output, require_file
from velnet.networks.builders import ModelMetadata
from velnet.physics.classical import ClassicalEstimator
from velnet.physics.references import load_reference, reference_format
from velnet.prediction.power_correction import PowerCorrection, correction_path, is_power_correction_file
from velnet.provenance import is_record, write_record
from velnet.shipped import model_path
from velnet.tasks import DENSITY, TARGETS, VELOCITY, get_target, get_task

log = logging.getLogger(__name__)

MADE_BY = "velnet predict"
"""The `made_by` attribute of the files `velnet predict` writes."""


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
        box: dict name -> `Field` of the box (`spec.field_names()`; a box without the
            predicted density has the fields its density model reads instead).
        spec: the `InputSpec`.
        target, target_scale: as `velnet.data.inputs.box_inputs`.
        predicted: dict model path -> its predicted `Field` on this box, filled as models
            run (a stage-one model is then run once for several stage-two models).

    Returns:
        float32 `(N, N, N, C)` (without the context window).

    Raises:
        VelnetInputError: the box's density is not rho/rho_mean (`check_density`), a predicted
            density the box lacks and no model to predict it, or as `box_inputs`.
    """
    if DENSITY in box:
        check_density(box[DENSITY])
    if spec.density == "predicted" and PREDICTED_DENSITY not in box:
        if not spec.density_model:
            raise VelnetInputError(None, f"the inputs need {PREDICTED_DENSITY}, stage one's density, and the model "
                                         "records no stage-one model to predict it")
        predicted = {} if predicted is None else predicted
        density = predict_with(spec.density_model, box, predicted=predicted)  # a halo reference gives a dict
        box = {**box, PREDICTED_DENSITY: density[DENSITY] if isinstance(density, dict) else density}
    return box_inputs(box, spec, target, target_scale)


def predict_box(model, metadata, box, tile=None, batch_size=4, predicted=None):
    """Reconstruct the target field of a whole periodic box.

    Args:
        model: physical-output model from `velnet.training.train.load_model`.
        metadata: its `ModelMetadata` (task, tile sizes, target name, box_size and nmesh of
            training, input spec and target scale for the input channels), or that as a dict.
        box: dict name -> `Field` of the whole box (the fields its input channels read,
            `velnet.data.inputs`), or the density `Field` (rho/rho_mean) alone, all a density's
            channels need; on an N^3 mesh with the training cell size.
        tile: (tiled networks) target tile side for inference, cells: any from 1 to N whose
            input window (tile + 2 margin) the U-net takes; default `inference_tile`. Tiles
            that do not divide N overlap; each cell is taken from the tile where it is most
            central (`velnet.data.tiling.stitch`), so any N is predicted. A periodic network
            takes the whole box (N divisible by 4).
        batch_size: tiles per model call.
        predicted: as `whole_box_inputs`.

    Returns:
        `Field` named after the model's target (`velnet.tasks.TARGETS`): `(N, N, N, 3)` for a
        vector (km/s), `(N, N, N)` for a scalar (rho/rho_mean for a density).

    Raises:
        VelnetInputError: the cell size differs from the training data's, the input
            channels from the model's, or `tile` (or the box, for a periodic network) does
            not fit.
    """
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
    if periodic and reference.nmesh % meta.stride:
        raise VelnetInputError(source, f"a periodic network predicts whole boxes of a multiple of {meta.stride} "
                                       f"cells per side. Received: {reference.nmesh}^3")
    target = get_target(meta.target_name)
    try:
        inputs = whole_box_inputs(box, spec, target, meta.target_scale, predicted)
        windows = None if periodic else InputWindows(inputs, box[DENSITY].value if spec.context else None, spec)
    except VelnetInputError as err:
        raise VelnetInputError(err.path or source, err.problem) from None
    if periodic:
        out = keras.ops.convert_to_numpy(model(inputs[None], training=False))[0]  # one pass, no tf.function
    else:
        out = _tiled(model, meta, windows, reference.nmesh, tile, batch_size)
    return Field(out[..., 0] if not target.vector else out, target.name, reference.box_size, reference.redshift,
                 reference.cosmology, {"units": target.units, **({"path": source} if source else {})})


def _tiled(model, meta, windows, nmesh, tile, batch_size):
    """The outputs of a tiled network on a whole box, stitched: `(N, N, N, C_out)`."""
    margin, multiple = meta.tile["margin"], meta.stride
    if tile:
        _check_tile(tile, nmesh, margin, multiple)
    tile = tile or inference_tile(nmesh, margin, multiple)
    origins = cover_origins(nmesh, tile)
    outputs = np.empty((len(origins), tile, tile, tile, meta.target_shape[-1]), np.float32)
    for start in tqdm(range(0, len(origins), batch_size), desc=f"predict {meta.target_name}", unit="batch"):
        batch = windows(origins[start:start + batch_size], tile + 2 * margin, margin)
        outputs[start:start + len(batch)] = np.asarray(model.predict_on_batch(batch))
    return stitch(outputs, nmesh)


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
    field = _predict(_load(path), box if isinstance(box, dict) else {box.name: box}, tile, batch_size, predicted)
    if predicted is not None:
        predicted[key] = field
    return field


def _load(path):
    """`(model, metadata)` of a network, or `(estimator, None)` of a classical estimator file (the matter's,
    or the halo filter or reconstruction, which give the density, velocity and momentum at once).

    Raises:
        VelnetInputError: a missing or broken file, or one that is not a model (a power
            correction file is named as such, with the model to give instead).
    """
    path = require_file(path, "model")
    if is_power_correction_file(path):
        model = path.name[:-len(".power.json")] if path.name.endswith(".power.json") else path.stem
        raise VelnetInputError(path, f"is a power-preserving correction (from `velnet calibrate`), not a model: give "
                                     f"its model ({model}.json or {model}.keras beside it) with --power-preserving")
    if path.suffix == ".json" or reference_format(path):
        return load_reference(path), None
    if path.suffix != ".keras":
        raise VelnetInputError(path, "is not a model: give a network (.keras) from `velnet train` or a classical "
                                     "reference (.json) from `velnet baseline`")
    from velnet.training.train import load_model

    return load_model(path)


def _predict(loaded, box, tile, batch_size, predicted):
    """A loaded model's `Field`, or the dict of `Field`s of a halo reference."""
    model, metadata = loaded
    if isinstance(model, ClassicalEstimator):
        return model.velocity(box[DENSITY])
    if metadata is None:
        return model.predict(box)
    return predict_box(model, metadata, box, tile, batch_size, predicted)


def _fields_read(loaded, available=()):
    """The fields of a box a loaded model reads: a predicted density is read from a model given beside
    it or, where the model records its stage one and that file exists, that model's fields."""
    model, metadata = loaded
    if isinstance(model, ClassicalEstimator):
        return {DENSITY}
    if metadata is None:
        return set(model.fields_read(available))
    spec = metadata.input_spec
    names = {name for name in spec.field_names() if not name.startswith(PREDICTED)}
    if spec.density == "predicted" and spec.density_model and Path(spec.density_model).is_file():
        names |= _fields_read(_load(spec.density_model), available)
    return names


def _reads_predictions(loaded):
    """Whether a loaded model reads another model's predictions (a stage-two model)."""
    _, metadata = loaded
    return metadata is not None and any(name.startswith(PREDICTED) for name in metadata.input_spec.field_names())


def load_models(model_paths):
    """Models by resolved path -> `(model, ModelMetadata)`, or `(ClassicalEstimator, None)`.

    Args:
        model_paths: one or more paths or shipped names.
    """
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    return {str(model_path(p).resolve()): _load(model_path(p)) for p in paths}


def fields_read(models, available=()):
    """The names of the fields of a box that `load_models`' models read (halo references: of the
    fields `available`)."""
    return set().union(*(_fields_read(loaded, available) for loaded in models.values()))


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
    for key, loaded in sorted(models.items(), key=lambda item: _reads_predictions(item[1])):
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
    formed = [t for t in formed if t.name not in out]
    if VELOCITY in out and formed:
        density = out.get(DENSITY) or box.get(DENSITY)
        if density is None:
            raise VelnetInputError(None, f"{[t.name for t in formed]} are formed from the velocity and the density, "
                                         "and the box holds no density")
        for target in formed:
            out[target.name] = target.of_velocity(density, out[VELOCITY])
            out[target.name].attrs = {"model": f"({'predicted ' if DENSITY in out else ''}rho/rho_mean) x the "
                                               "predicted velocity"}
    return out


def predict_file(model_paths, fields_path, out_path, tile=None, batch_size=4, power_preserving=False,
                 overwrite=False):
    """Predict with one or more models and write their fields to one HDF5 file (see `predict_fields`).

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

    Returns:
        `out_path`.

    Raises:
        VelnetInputError: a bad model or fields file, an output path `check_output` refuses, a
            prediction that is not finite, or what `predict_fields` raises.
    """
    start = time.time()
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    record = Path(out_path).with_suffix(".json")
    inputs = [fields_path, *paths, *(correction_path(model_path(p)) for p in paths)]
    check_output(out_path, "a prediction fields file", lambda path: made_by(path) == MADE_BY, inputs, overwrite)
    check_output(record, "a predict record", lambda path: is_record(path, "predict"), inputs, overwrite)
    models = load_models(paths)
    available = field_names(fields_path)
    names = fields_read(models, available)
    if DENSITY in available:
        names.add(DENSITY)
    box = load_fields(fields_path, sorted(names))
    for field in box.values():
        field.attrs["path"] = str(fields_path)
    out = predict_fields(models, box, tile, batch_size, power_preserving)
    for name, field in out.items():
        if not np.all(np.isfinite(field.value)):
            raise VelnetInputError(field.attrs.get("model", fields_path), f"predicted {name!r} holds NaN or infinite "
                                                                         f"values on {fields_path}; nothing written")
    save_fields(out_path, list(out.values()),
                attrs={"made_by": MADE_BY, "source": str(Path(fields_path).resolve()), "models": list(models),
                       "output": "power-preserving" if power_preserving else "minimum-variance"})
    write_record(record, "predict",
                 {"models": [str(p) for p in paths], "fields": str(fields_path), "tile": tile,
                  "batch_size": batch_size, "power_preserving": power_preserving},
                 {"wall": round(time.time() - start, 3)})
    log.info("wrote %s (%s)", out_path, ", ".join(out))
    return out_path

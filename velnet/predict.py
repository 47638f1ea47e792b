"""Whole-box prediction: tile a density field periodically, run the model, stitch the outputs.

The trained U-net is fully convolutional, so inference may use target tiles larger than the
training ones (fewer overlapping margins to compute); the input windows wrap around the
periodic box exactly as in training. Any mesh size is predicted: where the tile does not
divide it, the tiles overlap and each cell comes from the tile where it is most central.
"""
import logging
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .classical import ClassicalEstimator, is_classical_file
from .errors import VelnetInputError
from .fields import load_fields, save_fields
from .inputs import InputWindows, box_inputs, input_layout, read_spec
from .linear import linear_momentum
from .power_correction import PowerCorrection, correction_path
from .provenance import write_record
from .tiling import cover_origins, stitch

log = logging.getLogger(__name__)


def inference_tile(nmesh, margin, multiple=4, largest=64):
    """The target tile for inference: the fewest tiles of at most `largest` cells, each as small
    as that number allows (they cover the box with overlaps, see `velnet.tiling.cover_starts`).

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


def predict_box(model, metadata, density, tile=None, batch_size=4):
    """Reconstruct the velocity or momentum of a whole periodic box.

    Args:
        model: km/s-output model from `velnet.train.load_model`.
        metadata: its metadata (tile sizes, target name, box_size and nmesh of training,
            input spec and target scale for the input channels, see `velnet.inputs`).
        density: `Field` of rho/rho_mean on an N^3 mesh with the training cell size; the
            whole box (linear-theory input channels are computed from all of it).
        tile: target tile side for inference, cells: any from 1 to N whose input window
            (tile + 2 margin) the U-net takes; default `inference_tile`. Tiles that do not
            divide N overlap; each cell is taken from the tile where it is most central
            (`velnet.tiling.stitch`), so any N is predicted.
        batch_size: tiles per model call.

    Returns:
        `Field` `(N, N, N, 3)` named after the model's target, in km/s.

    Raises:
        VelnetInputError: the cell size differs from the training data's, the input
            channels from the model's, or `tile` does not fit.
    """
    trained_cell = metadata["box_size"] / metadata["nmesh"]
    if not np.isclose(density.cell_size, trained_cell, rtol=1e-3):
        raise VelnetInputError(
            density.attrs.get("path"),
            f"cell size {density.cell_size:.4g} Mpc/h (box {density.box_size:g} / {density.nmesh}) "
            f"differs from the model's training cell size {trained_cell:.4g} Mpc/h")
    _warn_if_out_of_training(metadata, density)
    spec = read_spec(metadata, density.attrs.get("path"))
    try:
        windows = InputWindows(box_inputs(density, spec, metadata["target_name"],
                                          metadata["normalisation"]["target_scale"]), density.value, spec)
    except VelnetInputError as err:
        raise VelnetInputError(density.attrs.get("path"), err.problem) from None
    channels = input_layout(spec)[0]
    if channels != model.input_shape[-1]:
        raise VelnetInputError(
            density.attrs.get("path"), f"input spec {spec} gives {channels} input channel(s), "
                                       f"the model takes {model.input_shape[-1]}")
    margin = metadata["tile"]["margin"]
    multiple = 2 ** (len(metadata.get("model_config", {}).get("widths", (0, 0, 0))) - 1)  # 4
    if tile:
        _check_tile(tile, density.nmesh, margin, multiple)
    tile = tile or inference_tile(density.nmesh, margin, multiple)
    origins = cover_origins(density.nmesh, tile)
    outputs = np.empty((len(origins), tile, tile, tile, 3), np.float32)
    for start in tqdm(range(0, len(origins), batch_size), desc=f"predict {metadata['target_name']}",
                      unit="batch"):
        batch = windows(origins[start:start + batch_size], tile + 2 * margin, margin)
        outputs[start:start + len(batch)] = np.asarray(model.predict_on_batch(batch))
    box = stitch(outputs, density.nmesh)
    return density.with_value(box, metadata["target_name"])


def _warn_if_out_of_training(metadata, density):
    """Log a warning when the box's cosmology or redshift differs from the training data's.

    The network works on such a box (the linear-theory inputs use the box's own cosmology)
    but was never trained there; `velnet evaluate` measures how much it degrades.
    """
    trained = metadata.get("cosmology")
    if trained is not None and trained != density.cosmology.to_dict():
        log.warning("%s: cosmology %s differs from the model's training cosmology %s",
                    density.attrs.get("path", "box"), density.cosmology.to_dict(), trained)
    if "redshift" in metadata and not np.isclose(metadata["redshift"], density.redshift, atol=1e-3):
        log.warning("%s: redshift %g differs from the model's training redshift %g",
                    density.attrs.get("path", "box"), density.redshift, metadata["redshift"])


def predict_with(path, density, tile=None, batch_size=4):
    """One model's field for a whole box.

    Args:
        path: a trained network (`.keras` from `velnet train`) or a classical estimator
            file (`.json` from `velnet baseline`).
        density: scalar `Field` of rho/rho_mean.
        tile, batch_size: as `predict_box` (networks only).

    Returns:
        `Field` `(N, N, N, 3)` named after the model's target, km/s.
    """
    if is_classical_file(path):
        return ClassicalEstimator.load(path).velocity(density)
    from .train import load_model

    model, metadata = load_model(path)
    return predict_box(model, metadata, density, tile, batch_size)


def predict_file(model_paths, fields_path, out_path, tile=None, batch_size=4, power_preserving=False):
    """Predict with one or more models and write their fields to one HDF5 file.

    Without a momentum model, the momentum written is (rho/rho_mean) times the predicted
    velocity (on our test boxes this beats a separately trained momentum model).

    Args:
        model_paths: model path(s), networks (`.keras`) or classical estimators (`.json`),
            e.g. a velocity and a momentum network.
        fields_path: fields file with a "density" field.
        out_path: output `.h5`; written atomically, with a `.json` run record beside it.
        power_preserving: write the velocity model's power-preserving output (its
            `correction_path` file from `velnet calibrate`) instead of the minimum-variance one.

    Returns:
        `out_path`.

    Raises:
        VelnetInputError: a bad model or fields file, two models of one target, or a
            power-preserving request without a velocity model, with a momentum model, or
            without the model's correction file.
    """
    start = time.time()
    density = load_fields(fields_path, ["density"])["density"]
    density.attrs["path"] = str(fields_path)
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    predicted, sources = {}, {}
    for path in paths:
        field = predict_with(path, density, tile, batch_size)
        if field.name in predicted:
            raise VelnetInputError(path, f"a second model for {field.name!r}")
        field.attrs = {**field.attrs, "model": str(path)}
        predicted[field.name], sources[field.name] = field, path
    if power_preserving:
        if "velocity" not in predicted or "momentum" in predicted:
            raise VelnetInputError(None, "--power-preserving needs one velocity model and no momentum model "
                                         "(the momentum is then (rho/rho_mean) v)")
        predicted["velocity"] = PowerCorrection.load(correction_path(sources["velocity"])).apply(predicted["velocity"])
    if "velocity" in predicted and "momentum" not in predicted:
        predicted["momentum"] = linear_momentum(density, predicted["velocity"])
        predicted["momentum"].attrs = {"model": "(rho/rho_mean) x the predicted velocity"}
    save_fields(out_path, list(predicted.values()),
                attrs={"source": str(fields_path), "models": [str(p) for p in paths],
                       "output": "power-preserving" if power_preserving else "minimum-variance"})
    write_record(Path(out_path).with_suffix(".json"), "predict",
                 {"models": [str(p) for p in paths], "fields": str(fields_path), "tile": tile,
                  "batch_size": batch_size, "power_preserving": power_preserving},
                 {"wall": round(time.time() - start, 3)})
    log.info("wrote %s (%s)", out_path, ", ".join(predicted))
    return out_path

"""velnet on numpy arrays and fields: reconstruct a box, load a model, paint a snapshot, fit the
classical estimator and its power correction, describe a fields file.

These are the functions a notebook calls (`import velnet; velnet.reconstruct(...)`) and that
the `velnet` commands run. Units: positions and box sizes in Mpc/h, velocities in km/s, the
density as rho/rho_mean, k in h/Mpc; arrays are channels-last, `(N, N, N)` for a scalar and
`(N, N, N, 3)` for a vector (components along the array axes x, y, z).
"""
import importlib
import json

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, field_names, load_fields
from velnet.physics.cosmology import PRESETS, Cosmology
from velnet.tasks import DENSITY, VELOCITY

DEFAULT_ESTIMATORS = ("linear", "bernardeau", "2lpt-log")
"""The classical estimators `fit_classical` combines by default."""
DEFAULT_RADII = (0, 1, 2, 3, 4, 5, 6, 8)
"""Candidate Gaussian radii (Mpc/h) of the smoothed linear baseline `fit_classical` fits."""
REFERENCE_METHODS = {
    "estimator": ("velnet.physics.classical", "ClassicalEstimator"),
    "filter": ("velnet.physics.halo_filter", "HaloFilter"),
    "reconstruction": ("velnet.physics.reconstruction", "Reconstruction"),
}
"""The classical references `fit_classical` fits, by method: module and class."""


def as_cosmology(cosmology):
    """A `Cosmology` from itself, a preset name ("wu2021", "halo2024"), a dict of its parameters
    or that dict as JSON text; None stays None.

    Raises:
        VelnetInputError: anything else.
    """
    if cosmology is None or isinstance(cosmology, Cosmology):
        return cosmology
    if isinstance(cosmology, str):
        if cosmology in PRESETS:
            return PRESETS[cosmology]
        try:
            cosmology = json.loads(cosmology)
        except json.JSONDecodeError:
            raise VelnetInputError(None, f"a cosmology is a preset ({', '.join(PRESETS)}) or JSON. "
                                         f"Received: {cosmology!r}") from None
    try:
        return Cosmology.from_dict(cosmology)
    except (KeyError, TypeError, ValueError) as err:
        raise VelnetInputError(None, f"a cosmology needs Omega_m, Omega_b, h, sigma8 and n_s ({err}). "
                                     f"Received: {cosmology!r}") from None


def load_model(model=None):
    """Load a model by shipped name or path.

    Args:
        model: a shipped name (`velnet.shipped.shipped_models`, e.g. "wu2021-tiny-paper"), a
            network (`.keras` from `velnet train`) or a classical estimator (`.json` from
            `velnet baseline`); default velnet's default, the shipped classical estimator.

    Returns:
        `(model, metadata)`: a Keras model with physical outputs and its
        `velnet.networks.builders.ModelMetadata`, or a
        `velnet.physics.classical.ClassicalEstimator` and None.
    """
    from velnet.prediction.models import load_models

    return next(iter(load_models([model]).values()))


def _training_cosmology(models):
    """The cosmology the first of the models was trained or fitted on, or None."""
    for model, metadata in models.values():
        stored = metadata.cosmology if metadata is not None else getattr(model, "attrs", {}).get("cosmology")
        if stored:
            return Cosmology.from_dict(stored)
    return None


def reconstruct(density=None, *, box_size=None, redshift=None, cosmology=None, model=None, fields=None,
                tile=None, batch_size=4, power_preserving=False):
    """Reconstruct the velocity field of a periodic box (and what else the model predicts).

    Args:
        density: rho/rho_mean (mean 1) on an N^3 periodic mesh: a numpy array `(N, N, N)`,
            or a density `Field`. Its cells must be those the model was trained on (2 Mpc/h
            for the shipped models).
        box_size: side of the box, Mpc/h (for an array).
        redshift: z of the box (for an array).
        cosmology: for an array: a `Cosmology`, a preset name ("wu2021", "halo2024") or a dict
            of its parameters; default the cosmology the model was trained on.
        model: a shipped model's name, a network (`.keras`) or a classical estimator (`.json`),
            or a list of them (e.g. a velocity and a momentum network, or the halo paper's
            two stages); default velnet's default, the shipped classical estimator.
        fields: instead of `density`: a fields file, or a dict name -> `Field`, holding what
            the model reads (the halo networks read `velnet halo-fields` files).
        tile, batch_size: inference tile side (cells) and tiles per batch of tiled networks
            (`velnet.prediction.predict.predict_box`).
        power_preserving: the velocity with its power restored per k by the model's
            correction from `calibrate`, instead of the minimum-variance field.

    Returns:
        dict name -> `Field`: "velocity" `(N, N, N, 3)` in km/s; "momentum" `(N, N, N, 3)`,
        (rho/rho_mean) v in km/s (the model's, or the density times the velocity); "density"
        `(N, N, N)` rho/rho_mean where a model predicts it. `.value` is the numpy array.

    Raises:
        VelnetInputError: an unknown model, an array without box size or redshift, cells
            other than the model's, or fields the model needs and the box lacks.

    Example:
        >>> rho = np.exp(0.5 * np.random.default_rng(0).standard_normal((32, 32, 32)))
        >>> velnet.reconstruct(rho, box_size=64.0, redshift=0.0)["velocity"].value.shape
        (32, 32, 32, 3)
    """
    from velnet.prediction.models import fields_read, load_models
    from velnet.prediction.predict import predict_fields

    models = load_models(model if isinstance(model, (list, tuple)) else [model])
    if fields is not None:
        if not isinstance(fields, dict):
            available = field_names(fields)
            names = fields_read(models, available) | ({DENSITY} & set(available))
            fields = load_fields(fields, sorted(names))
        box = fields
    elif density is None:
        raise VelnetInputError(None, "reconstruct needs a density (an array or a Field) or fields")
    else:
        box = {DENSITY: _density_field(density, box_size, redshift,
                                       as_cosmology(cosmology) or _training_cosmology(models))}
    return predict_fields(models, box, tile, batch_size, power_preserving)


def _density_field(density, box_size, redshift, cosmology):
    """A density `Field` of an array (or the `Field` itself)."""
    if isinstance(density, Field):
        return density
    if box_size is None or redshift is None or cosmology is None:
        raise VelnetInputError(None, "a density array needs its box_size (Mpc/h), redshift and cosmology (the "
                                     "model's by default). Received: "
                                     f"box_size={box_size}, redshift={redshift}, cosmology={cosmology}")
    value = np.asarray(density, dtype=np.float32)
    if not (np.all(np.isfinite(value)) and value.min() >= 0):
        raise VelnetInputError(None, "the density rho/rho_mean must be finite and >= 0")
    return Field(value, DENSITY, float(box_size), float(redshift), cosmology)


def paint(snapshot, nmesh=128, **reader):
    """The CIC fields of a snapshot (see `data_prep.paint.paint_fields`; nbodykit).

    Args:
        snapshot: a FastPM BigFile folder, a Gadget file or an HDF5 snapshot.
        nmesh: cells per side.
        **reader: what the snapshot lacks or states in other units
            (`data_prep.readers.read_particles`: format, box_size in Mpc/h, cosmology (a
            `Cosmology` or a dict of some of its parameters), redshift, length_unit).

    Returns:
        dict name -> `Field`: "density" `(N, N, N)` rho/rho_mean, "momentum" and "velocity"
        `(N, N, N, 3)` km/s. `velnet.save_fields(path, list(fields.values()))` writes them
        (`velnet paint` writes them with provenance).
    """
    from data_prep.paint import paint_fields
    from data_prep.readers import read_particles

    return paint_fields(read_particles(snapshot, **reader), nmesh)


def _boxes(paths, names):
    """The fields `names` of each fields file, each with its path in attrs."""
    boxes = []
    for path in paths:
        box = load_fields(path, names)
        for field in box.values():
            field.attrs["path"] = str(path)
        boxes.append(box)
    return boxes


def fit_classical(fields_files, estimators=DEFAULT_ESTIMATORS, n_bins=64, min_modes=20, radii=DEFAULT_RADII,
                  method="estimator", out=None, moved_smoothing=None, log_radii=None):
    """Fit a classical reference on training boxes.

    Args:
        fields_files: training fields files: density and velocity ("estimator"), or halo
            fields files (`velnet halo-fields`; "filter", "reconstruction").
        estimators: "estimator": names among linear, bernardeau and 2lpt-log, each optionally
            smoothed as "name:R" with R in Mpc/h (or dicts {"name", "smoothing"}).
        n_bins: "estimator": |k| bins from 0 to the grid's corner.
        min_modes: "estimator": fewest training modes of a fitted bin (others keep the first
            estimator).
        radii: "estimator": candidate Gaussian radii (Mpc/h) of the smoothed linear baseline,
            fitted too.
        method: a `REFERENCE_METHODS` name: "estimator" (the matter's velocity from its
            density: estimator velocities weighted per |k| bin, velnet's default), "filter"
            (the per-(k, mu) linear filter of the redshift-space halo channels) or
            "reconstruction" (iterative redshift-space reconstruction of the halos).
        out: where to write it (a `.json` model for `reconstruct` and `velnet predict`).
        moved_smoothing: "filter": Gaussian radius (Mpc/h) of the reconstruction whose moved
            halo channels are features too (None: the filter's default, 4; 0: none).
        log_radii: "filter": Gaussian radii (Mpc/h) of the log features of the smoothed halo
            density (None: the filter's default, 2 and 4; empty: none).

    Returns:
        The reference: a `velnet.physics.classical.ClassicalEstimator`, `HaloFilter` or
        `Reconstruction`.

    Raises:
        VelnetInputError: an unknown method, or files it cannot fit on.
    """
    from velnet.provenance import versions

    if method not in REFERENCE_METHODS:
        raise VelnetInputError(None, f"method must be one of {sorted(REFERENCE_METHODS)}. Received: {method!r}")
    options = {k: v for k, v in (("moved_smoothing", moved_smoothing), ("log_radii", log_radii)) if v is not None}
    if options and method != "filter":
        raise VelnetInputError(None, f"{' and '.join(options)}: options of the filter; the {method!r} reference "
                                     "has none")
    module, name = REFERENCE_METHODS[method]
    kind = getattr(importlib.import_module(module), name)
    if hasattr(kind, "fit_files"):
        reference = kind.fit_files(fields_files, **options)
    else:
        boxes = _boxes(fields_files, [DENSITY, VELOCITY])
        reference = kind.fit([b[DENSITY] for b in boxes], [b[VELOCITY] for b in boxes],
                             [_estimator(e) for e in estimators], n_bins=n_bins, min_modes=min_modes,
                             smoothing_radii=radii)
    reference.attrs["versions"] = versions(("velnet", "numpy", "nbodykit"))
    if out is not None:
        reference.save(out)
    return reference


def _estimator(text):
    """'bernardeau' or 'bernardeau:1.5' (Gaussian radius in Mpc/h) -> estimator dict."""
    if isinstance(text, dict):
        return text
    name, _, radius = text.partition(":")
    try:
        return {"name": name, "smoothing": float(radius or 0.0)}
    except ValueError:
        raise VelnetInputError(None, f"an estimator is NAME or NAME:R (R in Mpc/h). Received: {text!r}") from None


def calibrate(model, fields_files):
    """Fit a velocity model's power-preserving correction on validation boxes and save it beside the model.

    Args:
        model: a network (`.keras`) or classical estimator (`.json`) predicting the velocity.
        fields_files: validation fields files (density, velocity).

    Returns:
        `(correction, path)`: the `velnet.prediction.power_correction.PowerCorrection` (gain per
        k bin) and the file it was written to, which `reconstruct(power_preserving=True)` and
        `velnet predict --power-preserving` read.
    """
    from velnet.fields.mesh import current_comm
    from velnet.prediction.power_correction import PowerCorrection, correction_path
    from velnet.prediction.predict import predict_with
    from velnet.shipped import model_path

    model, comm = model_path(model), current_comm()
    boxes = [load_fields(path, [DENSITY, VELOCITY], comm=comm) for path in fields_files]  # x-slabs under mpirun
    correction = PowerCorrection.fit([predict_with(model, b[DENSITY]) for b in boxes], [b[VELOCITY] for b in boxes])
    correction.attrs.update(model=str(model), fitted_on=[str(p) for p in fields_files])
    if comm is not None and comm.rank:
        return correction, correction_path(model)  # (every rank has the gains: rank 0 writes them)
    return correction, correction.save(correction_path(model))


def describe(fields_path):
    """What a fields file holds, one line per field: units, mesh, box, redshift, and mean, rms,
    min and max of its components."""
    def fmt(values):
        return "[" + ", ".join(f"{x:.4g}" for x in values) + "]"

    lines = []
    for name, f in load_fields(fields_path).items():
        comps = f.value.reshape(-1, 3 if f.is_vector else 1).astype(np.float64)
        lines.append(f"{name:11s} [{f.units}] {f.nmesh}^3 cells, box {f.box_size:g} Mpc/h, z={f.redshift:g}: "
                     f"mean {fmt(comps.mean(0))}, rms {fmt(comps.std(0))}, min {comps.min():.4g}, "
                     f"max {comps.max():.4g}")
    return "\n".join(lines)

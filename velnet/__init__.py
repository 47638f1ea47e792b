"""velnet: cosmic peculiar velocity and momentum fields reconstructed from density (Wu et al. 2021)
and from redshift-space halos (the 2024 halo paper) with 3D U-nets, against linear theory and
the best classical estimator.

From Python, on numpy arrays:

    import velnet
    fields = velnet.reconstruct(rho, box_size=256.0, redshift=0.0)   # rho/rho_mean, (N, N, N)
    v = fields["velocity"].value                                      # km/s, (N, N, N, 3)

`reconstruct` uses velnet's default (the shipped classical estimator) or any shipped or
trained model; `paint` turns a snapshot into fields, `load_fields` and `save_fields` read and
write fields files, `fit_classical` fits the classical reference on your boxes, `evaluate`
measures predictions against the truth with either paper's statistics. The pipeline from
snapshots to a trained network (`simulate`, `prepare`, `train`, `tune`, `predict`) is here
too, as the `velnet` command line runs it. Importing velnet loads neither TensorFlow nor
nbodykit: each function imports what it needs when first called.

Units: Mpc/h, km/s, h/Mpc, (Mpc/h)^3; fields are channels-last (`(N, N, N)` scalars,
`(N, N, N, 3)` vectors).
"""
import importlib

_EXPORTS = {
    "reconstruct": "velnet.api",
    "load_model": "velnet.api",
    "paint": "velnet.api",
    "fit_classical": "velnet.api",
    "calibrate": "velnet.api",
    "describe": "velnet.api",
    "evaluate": "velnet.evaluation",
    "Evaluation": "velnet.evaluation",
    "Field": "velnet.fields.field",
    "load_fields": "velnet.fields.field",
    "save_fields": "velnet.fields.field",
    "Cosmology": "velnet.physics.cosmology",
    "simulate": "velnet.pipeline",
    "find_halos": "velnet.pipeline",
    "make_halo_fields": "velnet.pipeline",
    "prepare": "velnet.pipeline",
    "train": "velnet.pipeline",
    "tune": "velnet.pipeline",
    "predict": "velnet.prediction.predict",
    "shipped_models": "velnet.shipped",
    "VelnetInputError": "velnet.errors",
}
"""Public name -> the module that defines it (imported on first use)."""
_RENAMED = {"predict": "predict_file"}
"""Public names whose function has another name in its module."""

__all__ = [
    "Cosmology",
    "Evaluation",
    "Field",
    "VelnetInputError",
    "calibrate",
    "describe",
    "evaluate",
    "find_halos",
    "fit_classical",
    "load_fields",
    "load_model",
    "make_halo_fields",
    "paint",
    "predict",
    "prepare",
    "reconstruct",
    "save_fields",
    "shipped_models",
    "simulate",
    "train",
    "tune",
]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'velnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})

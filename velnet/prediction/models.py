"""The models velnet predicts with, loaded from files or shipped names: networks (`.keras`) with
their metadata, classical references (`.json`); and the fields of a box they read.
"""
from pathlib import Path

from velnet.data.inputs import PREDICTED
from velnet.errors import VelnetInputError
from velnet.files import require_file
from velnet.physics.classical import ClassicalEstimator
from velnet.physics.references import load_reference, reference_format
from velnet.prediction.power_correction import is_power_correction_file
from velnet.shipped import model_path
from velnet.tasks import DENSITY, get_task


def load_one_model(path):
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


def streams_tiles(loaded):
    """Whether a loaded model is a tiled network, whose tiles `predict_file` writes as they come."""
    _, metadata = loaded
    return metadata is not None and not get_task(metadata.task).periodic


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
        names |= _fields_read(load_one_model(spec.density_model), available)
    return names


def reads_predictions(loaded):
    """Whether a loaded model reads another model's predictions (a stage-two model)."""
    _, metadata = loaded
    return metadata is not None and any(name.startswith(PREDICTED) for name in metadata.input_spec.field_names())


def load_models(model_paths):
    """Models by resolved path -> `(model, ModelMetadata)`, or `(ClassicalEstimator, None)`.

    Args:
        model_paths: one or more paths or shipped names.
    """
    paths = [model_paths] if isinstance(model_paths, (str, Path)) else list(model_paths)
    return {str(model_path(p).resolve()): load_one_model(model_path(p)) for p in paths}


def fields_read(models, available=()):
    """The names of the fields of a box that `load_models`' models read (halo references: of the
    fields `available`)."""
    return set().union(*(_fields_read(loaded, available) for loaded in models.values()))

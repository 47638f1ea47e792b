"""A box's fields as the input channels read them: those of its fields file and, prefixed `PREDICTED`,
those of its predictions file (`velnet predict`), checked to be of the same box."""
from pathlib import Path

from velnet.data.inputs import PREDICTED
from velnet.errors import VelnetInputError
from velnet.fields.field import field_names, load_fields, read_meta


def load_box(path, names=None, predictions=None):
    """The fields of one box: those of its fields file and, prefixed `PREDICTED`, its predictions file's.

    Args:
        path: the box's fields file.
        names: the fields to read (default all); names with the prefix `PREDICTED` come from
            `predictions`.
        predictions: the box's predictions file (`velnet predict` of a model on `path`), or None.

    Returns:
        dict name -> `Field`, each with `attrs["path"]` its file.

    Raises:
        VelnetInputError: a missing field, or a predictions file of another box.
    """
    own = None if names is None else [n for n in names if not n.startswith(PREDICTED)]
    box = load_fields(path, own)
    if predictions is not None:
        check_predictions(path, predictions)
        wanted = None if names is None else [n[len(PREDICTED):] for n in names if n.startswith(PREDICTED)]
        if wanted != []:
            box.update({PREDICTED + name: field for name, field in load_fields(predictions, wanted).items()})
    elif names is not None and len(own) < len(names):
        raise VelnetInputError(path, f"the inputs need {sorted(set(names) - set(own))}, fields of the box's "
                                     "predictions file (velnet predict), and none was given")
    for name, field in box.items():
        field.attrs["path"] = str(predictions if name.startswith(PREDICTED) else path)
    return box


def check_predictions(path, predictions):
    """Raise VelnetInputError unless `predictions` were predicted on the box of the fields file `path`."""
    box, predicted = read_meta(path), read_meta(predictions)
    for key in ("box_size", "nmesh", "redshift", "cosmology"):
        if box[key] != predicted[key]:
            raise VelnetInputError(predictions, f"{key} is {predicted[key]}, but the box {path} has {box[key]}")
    source = predicted.get("source")
    if source and Path(source).resolve() != Path(path).resolve():
        raise VelnetInputError(predictions, f"holds predictions for {source}, not for {path}")


def predicted_names(path):
    """The fields of a predictions file as `load_box` names them (prefixed `PREDICTED`)."""
    return [PREDICTED + name for name in field_names(path)]

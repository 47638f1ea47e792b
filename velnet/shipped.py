"""The models velnet ships, by name: `velnet/pretrained/<name>/<target>.keras` (networks) or `.json`
(classical estimators), each folder with the experiment that made it (`experiment.json`).

A model is named by its folder ("classical-wu2021", "wu2021-tiny-paper"), which means its
velocity model, or by folder and target ("wu2021-tiny-paper/velocity"); any other name is a
path.
"""
from pathlib import Path

from velnet.errors import VelnetInputError

PRETRAINED = Path(__file__).resolve().parent / "pretrained"
"""The folder of the shipped models."""
DEFAULT_MODEL = "classical-wu2021"
"""velnet's default: the classical estimator fitted on its training boxes (linear theory,
Bernardeau's relation and 2LPT combined per k; 2 Mpc/h cells, z = 0, experiments.classical)."""
DEFAULT_TARGET = "velocity"
"""The target a bare folder name means."""
SUFFIXES = (".keras", ".json")


def shipped_models():
    """Every shipped model: name ("folder/target") -> path."""
    return {f"{path.parent.name}/{path.stem}": path for suffix in SUFFIXES
            for path in sorted(PRETRAINED.glob(f"*/*{suffix}"))
            if path.stem.isidentifier() and path.stem != "experiment"}  # not logs, corrections


def model_path(model=None):
    """The file of a model given by shipped name or path (default `DEFAULT_MODEL`).

    Raises:
        VelnetInputError: neither an existing file nor a shipped name.
    """
    model = DEFAULT_MODEL if model is None else model
    path = Path(model)
    if path.is_file():
        return path
    name = str(model) if "/" in str(model) else f"{model}/{DEFAULT_TARGET}"
    shipped = shipped_models()
    if name in shipped:
        return shipped[name]
    raise VelnetInputError(path, f"is neither a model file nor a shipped model ({', '.join(sorted(shipped))})")

"""`Statistic`, the binned measurement that spectra and report results come as, and `to_json`, which
turns such results into strict JSON."""
import json

import numpy as np

from velnet.errors import VelnetInputError
from velnet.files import atomic_file, require_file


def to_json(obj):
    """`obj` with numpy scalars as Python numbers and NaN or infinities as None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(key): to_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(value) for value in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


class Statistic:
    """A binned measurement: named columns, all with the same first dimension, plus metadata.

    Like nbodykit's results, it carries its `attrs` and saves to, and loads from, JSON.

    Args:
        columns: dict name -> array (e.g. "k", "power", "modes").
        attrs: JSON-serialisable metadata (box size, mesh, field names, ...).
    """

    def __init__(self, columns, attrs=None):
        self.columns = {name: np.asarray(value) for name, value in columns.items()}
        lengths = {value.shape[0] for value in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns differ in length: { {n: v.shape for n, v in self.columns.items()} }")
        self.attrs = dict(attrs or {})

    def __getitem__(self, name):
        return self.columns[name]

    def __repr__(self):
        return f"Statistic(columns={list(self.columns)}, attrs={self.attrs})"

    def to_dict(self):
        """Plain lists and dicts, NaN and infinities as None (strict JSON)."""
        return to_json({"columns": {n: v.tolist() for n, v in self.columns.items()}, "attrs": self.attrs})

    def save(self, path):
        """Write strict JSON atomically; returns the path."""
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        return path

    @classmethod
    def load(cls, path):
        """Read a result written by `save`.

        Raises:
            VelnetInputError: the file is missing, not JSON, or not a saved Statistic.
        """
        path = require_file(path, "statistic JSON")
        try:
            state = json.loads(path.read_text())
            return cls({n: np.array(v, dtype=float) for n, v in state["columns"].items()}, state["attrs"])
        except (ValueError, KeyError, TypeError) as err:
            raise VelnetInputError(path, f"not a saved velnet Statistic ({err})") from None

"""Fields on a periodic mesh and their HDF5 files.

A `Field` is one channels-last array, `(N, N, N)` for a scalar or `(N, N, N, 3)` for a
vector, with the metadata every later stage needs: box size (Mpc/h), redshift, cosmology,
units. A box's fields live together in one HDF5 file, one dataset each, the shared
metadata on the file's root attributes. A line of sight is one of the box's axes, named
(`los_axis`).
"""
import json
from dataclasses import dataclass, field, replace

import h5py
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_box_size, check_cosmology, check_kind, check_velocity
from velnet.files import atomic_file, require_file
from velnet.physics.cosmology import Cosmology

AXES = {"x": 0, "y": 1, "z": 2}
"""Names of the box axes 0, 1, 2 (lines of sight along them)."""

UNITS = {
    "density": "rho/rho_mean",
    "ln_density": "ln(1 + rho/rho_mean)",
    "velocity": "km/s",
    "momentum": "(rho/rho_mean) km/s",
}
"""Units of the named fields of a box, the one table of them (`velnet.tasks.TARGETS` reads it);
other fields keep theirs in `attrs["units"]`."""


@dataclass
class Field:
    """One field on a periodic N^3 mesh.

    Attributes:
        value: float32 array, `(N, N, N)` (scalar) or `(N, N, N, 3)` (vector, components
            x, y, z along the array axes 0, 1, 2).
        name: what it is: "density", "ln_density", "velocity", "momentum", ...
        box_size: side of the periodic box, Mpc/h.
        redshift: z of the snapshot.
        cosmology: the simulation's `Cosmology`.
        attrs: anything else worth keeping (source file, painter, seed).
    """

    value: np.ndarray
    name: str
    box_size: float
    redshift: float
    cosmology: Cosmology
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        v = np.asarray(self.value)
        if v.ndim not in (3, 4) or v.shape[:3] != (v.shape[0],) * 3 or (v.ndim == 4 and v.shape[3] != 3):
            raise VelnetInputError(
                None, f"field {self.name!r} must be (N, N, N) or (N, N, N, 3); got {v.shape}")
        self.value = v

    @property
    def nmesh(self):
        return self.value.shape[0]

    @property
    def is_vector(self):
        return self.value.ndim == 4

    @property
    def units(self):
        return UNITS.get(self.name, self.attrs.get("units", ""))

    @property
    def cell_size(self):
        """Mesh spacing, Mpc/h."""
        return self.box_size / self.nmesh

    def meta(self):
        """The metadata shared by all fields of one box (goes on the HDF5 root)."""
        return {"box_size": float(self.box_size), "redshift": float(self.redshift),
                "nmesh": int(self.nmesh), "cosmology": self.cosmology.to_dict()}

    def with_value(self, value, name=None):
        """A copy with another array (and name), same metadata."""
        return replace(self, value=value, name=name or self.name, attrs=dict(self.attrs))


def los_axis(los):
    """The box axis (0, 1 or 2) of a line of sight given as an axis or as "x", "y", "z".

    Raises:
        VelnetInputError: anything else.
    """
    if isinstance(los, str) and los.lower() in AXES:
        return AXES[los.lower()]
    if isinstance(los, (int, np.integer)) and not isinstance(los, bool) and 0 <= los <= 2:
        return int(los)
    raise VelnetInputError(None, f"line of sight must be 0, 1, 2, 'x', 'y' or 'z'. Received: {los!r}")


def ln_density(density):
    """The network input of Wu et al. 2021, eq. 1: ln(1 + rho/rho_mean), same metadata."""
    return density.with_value(np.log1p(density.value).astype(np.float32), "ln_density")


def save_fields(path, fields, attrs=None):
    """Write fields of one box to an HDF5 file, atomically.

    Args:
        path: output `.h5` path.
        fields: list of `Field` sharing box size, mesh, redshift and cosmology.
        attrs: extra root attributes (JSON-serialisable values).
    """
    meta = fields[0].meta()
    for f in fields[1:]:
        if f.meta() != meta:
            raise VelnetInputError(path, f"field {f.name!r} has metadata {f.meta()}, not {meta}")
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as h5:
        for key, value in {**meta, **(attrs or {})}.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        for f in fields:
            ds = h5.create_dataset(f.name, data=f.value.astype(np.float32))
            ds.attrs["units"] = f.units
            for key, value in f.attrs.items():
                ds.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return path


def read_meta(path):
    """Root attributes of a fields file: box_size, redshift, nmesh, cosmology, ...

    Raises:
        VelnetInputError: the file is missing, not HDF5, or its metadata is missing or unusable.
    """
    path = require_file(path, "fields file")
    try:
        with h5py.File(path, "r") as h5:
            meta = _decode_attrs(h5.attrs, path)
    except OSError as err:
        raise VelnetInputError(path, f"not a readable HDF5 fields file ({err})") from None
    missing = {"box_size", "redshift", "nmesh", "cosmology"} - set(meta)
    if missing:
        raise VelnetInputError(path, f"metadata lacks {sorted(missing)}")
    meta["box_size"] = check_box_size(meta["box_size"], path)
    meta["cosmology"] = check_cosmology(meta["cosmology"], path)
    if isinstance(meta["nmesh"], bool) or not isinstance(meta["nmesh"], int) or meta["nmesh"] < 1:
        raise VelnetInputError(path, f"metadata nmesh must be a positive integer. Received: {meta['nmesh']!r}")
    try:
        redshift = float(meta["redshift"])
    except (TypeError, ValueError):
        redshift = float("nan")
    if not (np.isfinite(redshift) and redshift > -1):
        raise VelnetInputError(path, f"metadata redshift must be a number > -1. Received: {meta['redshift']!r}")
    meta["redshift"] = redshift
    return meta


LEGACY_MAKERS = (("models", "velnet predict"), ("halo_channels", "velnet halo-fields"), ("painter", "velnet paint"))
"""Root attributes that name the command that wrote a fields file from before "made_by" was written."""


def made_by(path):
    """The command that wrote a fields file ("velnet paint", "velnet predict", ...), or None if it is
    not a readable velnet fields file or does not say."""
    try:
        with h5py.File(path, "r") as h5:
            attrs = set(h5.attrs)
            maker = h5.attrs.get("made_by")
    except (OSError, ValueError):
        return None
    if maker is not None:
        return maker.decode() if isinstance(maker, bytes) else str(maker)
    return next((command for key, command in LEGACY_MAKERS if key in attrs), None)


def field_names(path):
    """The names of the fields a fields file holds."""
    read_meta(path)
    with h5py.File(path, "r") as h5:
        return sorted(h5.keys())


def load_fields(path, names=None):
    """Read a fields file into a dict name -> `Field` (attrs "path": the file, named in later errors).

    Raises:
        VelnetInputError: the file is missing, not HDF5, lacks a field, holds one that is not a
            float array of the file's mesh (a scalar or a vector as its name says) or holds
            NaN/inf, or a velocity beyond the speed of light.
    """
    meta = read_meta(path)
    cosmology = Cosmology.from_dict(meta["cosmology"])
    out = {}
    try:
        with h5py.File(path, "r") as h5:
            for name in names or list(h5.keys()):
                if name not in h5:
                    raise VelnetInputError(path, f"has no field {name!r} (it holds {sorted(h5.keys())})")
                value = _read_array(h5, name, meta["nmesh"], path)
                check_kind(name, value, path)
                if not np.all(np.isfinite(value)):
                    raise VelnetInputError(path, f"field {name!r} holds NaN or infinite values")
                out[name] = Field(value, name, meta["box_size"], meta["redshift"], cosmology,
                                  {**_decode_attrs(h5[name].attrs, path), "path": str(path)})
    except OSError as err:
        raise VelnetInputError(path, f"cannot be read: the file is truncated or corrupt ({err})") from None
    if "velocity" in out:
        check_velocity(out["velocity"], path)
    return out


def _read_array(h5, name, nmesh, path):
    """A float dataset of a fields file on its (nmesh,)*3 mesh; VelnetInputError otherwise."""
    dataset = h5[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
        raise VelnetInputError(path, f"{name!r} is not a numeric array (it is {dataset})")
    if dataset.shape[:3] != (nmesh,) * 3 or len(dataset.shape) not in (3, 4):
        raise VelnetInputError(path, f"field {name!r} is {dataset.shape}, not (N, N, N) or (N, N, N, 3) on the "
                                     f"file's mesh N = nmesh = {nmesh}")
    return dataset[...]


def _decode_attrs(attrs, path=None):
    """HDF5 attributes as Python values, JSON-encoded ones decoded; VelnetInputError naming `path`
    for one that cannot be."""
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str) and value.startswith(("[", "{")):
            try:
                value = json.loads(value)
            except ValueError as err:
                raise VelnetInputError(path, f"metadata {key!r} is not valid JSON ({err})") from None
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out

"""Fields on a periodic mesh and their HDF5 files.

A `Field` is one channels-last array, `(N, N, N)` for a scalar or `(N, N, N, 3)` for a
vector, with the metadata every later stage needs: box size (Mpc/h), redshift, cosmology,
units. A box's fields live together in one HDF5 file, one dataset each, the shared
metadata on the file's root attributes. A line of sight is one of the box's axes, named
(`los_axis`).

Under MPI a box is cut into x-slabs over the ranks of a communicator (`velnet.fields.mesh`):
a `Field` with `comm` holds its rank's planes `start ..` of the box, `load_fields(...,
comm=comm)` reads them, and `FieldsWriter` (and `save_fields`) writes them, the ranks taking
turns on the file (h5py without parallel HDF5).
"""
import contextlib
import json
from dataclasses import dataclass, field, replace

import h5py
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_box_size, check_cosmology, check_kind, check_velocity
from velnet.fields.mesh import slab_bounds
from velnet.files import atomic_file, open_h5, require_file
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
        start: first x-plane of `value` in the box: 0 for a whole box.
        comm: MPI communicator of several ranks over which the box is cut into x-slabs
            (`velnet.fields.mesh.slab_bounds`); `value` is then this rank's planes
            `(stop - start, N, N[, 3])`. None: the whole box is here.
    """

    value: np.ndarray
    name: str
    box_size: float
    redshift: float
    cosmology: Cosmology
    attrs: dict = field(default_factory=dict)
    start: int = 0
    comm: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        v = np.asarray(self.value)
        if self.comm is not None and self.comm.size < 2:
            self.comm = None
        n = v.shape[1] if v.ndim > 1 else 0
        start, stop = (0, n) if self.comm is None else slab_bounds(n, self.comm.rank, self.comm.size)
        if v.ndim not in (3, 4) or v.shape[1:3] != (n, n) or (v.shape[0], self.start) != (stop - start, start) \
                or (v.ndim == 4 and v.shape[3] != 3):
            slab = "" if self.comm is None else f" (its x-planes from {self.start} here)"
            raise VelnetInputError(
                None, f"field {self.name!r} must be (N, N, N) or (N, N, N, 3){slab}; got {v.shape}")
        self.value = v

    @property
    def nmesh(self):
        return self.value.shape[1]

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
    """Write fields of one box to an HDF5 file, atomically (collective for fields cut over MPI ranks).

    Args:
        path: output `.h5` path.
        fields: list of `Field` sharing box size, mesh, redshift and cosmology.
        attrs: extra root attributes (JSON-serialisable values).
    """
    with FieldsWriter(path, fields[0], attrs) as out:
        for f in fields:
            out.write(f)
    return path


class FieldsWriter:
    """Write the fields of one box to an HDF5 file x-planes at a time; it appears only when complete.

    On one process the datasets are written as they come. Under MPI (`like.comm`) every call
    is collective: each rank hands in its own slab, kept in memory until the block ends, when
    the ranks take turns writing their slabs to the file (h5py here has no parallel HDF5) and
    rank 0 moves it into place.

    Args:
        path: the `.h5` file.
        like: a `Field` of the box: its metadata go on the file's root, its `comm` splits it.
        attrs: extra root attributes (JSON-serialisable values).

    Example:
        with FieldsWriter(path, density) as out:
            out.write(density)
            velocity = out.create("velocity", vector=True)
            velocity[0:8] = planes  # x-planes 0..7 of the box, (8, N, N, 3)
    """

    def __init__(self, path, like, attrs=None):
        self.path, self.meta, self.comm = path, like.meta(), like.comm
        self.attrs = {**self.meta, **(attrs or {})}
        self.start, self.stop = like.start, like.start + like.value.shape[0]
        self._slabs = {}

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        if self.comm is None:
            self._h5 = self._stack.enter_context(open_h5(self._stack.enter_context(atomic_file(self.path)), "w"))
            _set_attrs(self._h5, self.attrs)
        return self

    def __exit__(self, kind, error, trace):
        if kind is None and self.comm is not None:  # (under MPI the stack is empty)
            self._write_slabs()
        return self._stack.__exit__(kind, error, trace)

    def create(self, name, vector=False, attrs=None):
        """A new dataset: x-planes of the box written by `sink[a:b] = values` (a, b in the box's planes).

        Returns:
            the h5py dataset (one process) or this rank's planes (MPI), float32
            `(N, N, N[, 3])`, readable back the same way.
        """
        shape = (self.meta["nmesh"],) * 3 + ((3,) if vector else ())
        if self.comm is not None:
            self._slabs[name] = (Planes(np.empty((self.stop - self.start,) + shape[1:], np.float32), self.start),
                                 dict(attrs or {}))
            return self._slabs[name][0]
        dataset = self._h5.create_dataset(name, shape, np.float32)
        _set_attrs(dataset, attrs or {})
        return dataset

    def write(self, f):
        """Write a `Field` (this rank's slab of it under MPI)."""
        if f.meta() != self.meta:
            raise VelnetInputError(self.path, f"field {f.name!r} has metadata {f.meta()}, not {self.meta}")
        sink = self.create(f.name, f.is_vector, {"units": f.units, **f.attrs})
        sink[f.start:f.start + f.value.shape[0]] = f.value

    def _write_slabs(self):
        """The ranks' slabs into the file, one rank after the other; rank 0 creates and moves it."""
        comm, shape = self.comm, (self.meta["nmesh"],) * 3
        with contextlib.ExitStack() as stack:
            tmp = None
            if comm.rank == 0:
                tmp = stack.enter_context(atomic_file(self.path))
                with open_h5(tmp, "w") as h5:
                    _set_attrs(h5, self.attrs)
                    for name, (planes, attrs) in self._slabs.items():
                        _set_attrs(h5.create_dataset(name, shape + planes.array.shape[3:], np.float32), attrs)
            tmp = comm.bcast(tmp)
            for rank in range(comm.size):
                if rank == comm.rank and self.stop > self.start:
                    with open_h5(tmp, "r+") as h5:
                        for name, (planes, _) in self._slabs.items():
                            h5[name][self.start:self.stop] = planes.array
                comm.Barrier()
        comm.Barrier()  # the file is in place for every rank


class Planes:
    """A rank's x-planes `start ..` of a box's array, indexed by the box's planes (`planes[a:b]`)."""

    def __init__(self, array, start):
        self.array, self.start = array, start

    def _local(self, key):
        key = key if isinstance(key, tuple) else (key,)
        x = key[0]
        return (slice(x.start - self.start, x.stop - self.start),) + key[1:]

    def __setitem__(self, key, value):
        self.array[self._local(key)] = value

    def __getitem__(self, key):
        return self.array[self._local(key)]


def _set_attrs(target, attrs):
    for key, value in attrs.items():
        target.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def read_meta(path):
    """Root attributes of a fields file: box_size, redshift, nmesh, cosmology, ...

    Raises:
        VelnetInputError: the file is missing, not HDF5, or its metadata is missing or unusable.
    """
    path = require_file(path, "fields file")
    try:
        with open_h5(path, "r") as h5:
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
        with open_h5(path, "r") as h5:
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
    with open_h5(path, "r") as h5:
        return sorted(h5.keys())


def load_fields(path, names=None, comm=None):
    """Read a fields file into a dict name -> `Field` (attrs "path": the file, named in later errors).

    Args:
        path: the fields file.
        names: the fields to read (default all).
        comm: MPI communicator of several ranks: each rank reads its x-slab
            (`velnet.fields.mesh.slab_bounds`); None: the whole box.

    Raises:
        VelnetInputError: the file is missing, not HDF5, lacks a field, holds one that is not a
            float array of the file's mesh (a scalar or a vector as its name says) or holds
            NaN/inf, or a velocity beyond the speed of light.
    """
    meta = read_meta(path)
    cosmology = Cosmology.from_dict(meta["cosmology"])
    comm = comm if comm is not None and comm.size > 1 else None
    nmesh = meta["nmesh"]
    start, stop = (0, nmesh) if comm is None else slab_bounds(nmesh, comm.rank, comm.size)
    out = {}
    try:
        with open_h5(path, "r") as h5:
            for name in names or list(h5.keys()):
                if name not in h5:
                    raise VelnetInputError(path, f"has no field {name!r} (it holds {sorted(h5.keys())})")
                value = _read_array(h5, name, nmesh, path, start, stop)
                check_kind(name, value, path)
                if not all(np.isfinite(value[i:i + 8]).all() for i in range(0, len(value), 8)):
                    raise VelnetInputError(path, f"field {name!r} holds NaN or infinite values")
                out[name] = Field(value, name, meta["box_size"], meta["redshift"], cosmology,
                                  {**_decode_attrs(h5[name].attrs, path), "path": str(path)}, start, comm)
    except OSError as err:
        raise VelnetInputError(path, f"cannot be read: the file is truncated or corrupt ({err})") from None
    if "velocity" in out:
        check_velocity(out["velocity"], path)
    return out


def _read_array(h5, name, nmesh, path, start=0, stop=None):
    """A float dataset of a fields file on its (nmesh,)*3 mesh, its x-planes `start:stop`;
    VelnetInputError otherwise."""
    dataset = h5[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
        raise VelnetInputError(path, f"{name!r} is not a numeric array (it is {dataset})")
    if dataset.shape[:3] != (nmesh,) * 3 or len(dataset.shape) not in (3, 4):
        raise VelnetInputError(path, f"field {name!r} is {dataset.shape}, not (N, N, N) or (N, N, N, 3) on the "
                                     f"file's mesh N = nmesh = {nmesh}")
    return dataset[start:stop]


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

"""Particle snapshots read into one form: FastPM BigFile, Gadget binary, Gadget-style HDF5.

Whatever the format, `read_particles` returns positions in Mpc/h wrapped into [0, L),
peculiar velocities in km/s, particle ids, the box size, the redshift and the full
cosmology. The unit conventions of each format:

- "bigfile" (FastPM, and velnet's own `simulate`): `1/Position` in Mpc/h, `1/Velocity` the
  peculiar velocity in km/s (FastPM writes P * 100 / a), `1/ID`; metadata on the `Header`
  block (BoxSize, ScalingFactor or Time, OmegaM or Om0, HubbleParam or h, OmegaB, Sigma8,
  SpectralIndex). A file without `1/ID` gets ids 0..N-1 in file order.
- "gadget" (Gadget binary, SnapFormat 1 or 2, as L-PICOLA and other COLA codes write it;
  read with `nbodykit.io.gadget.Gadget1File`): positions in Mpc/h, or kpc/h with
  `length_unit="kpc/h"` (divided by 1000, BoxSize too); velocities stored as Gadget's
  u = v / sqrt(a), so the peculiar velocity is v = sqrt(a) * u km/s; the header gives
  BoxSize, Time (a), Omega0 and HubbleParam. Dark matter is particle type 1.
- "hdf5" (Gadget/SWIFT-style HDF5, read with `nbodykit.io.hdf.HDFFile`): `Header`
  attributes as in Gadget (BoxSize, Time, Omega0, HubbleParam, NumFilesPerSnapshot),
  `PartType1/Coordinates`, `Velocities`, `ParticleIDs`, in the same units as "gadget"
  (a SWIFT `Cosmology` group, when present, adds Omega_b and h).

A snapshot split over several files is named by its first file (`snap_005.0` or
`snap_005.0.hdf5`); the others are found from the header's file count.
Parameters the file lacks (Gadget headers have no sigma8, n_s or Omega_b) come from the
`cosmology` argument; parameters the file has must agree with it.
"""
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from velnet.cosmology import Cosmology
from velnet.errors import VelnetInputError
from velnet.files import require_file

FORMATS = ("bigfile", "gadget", "hdf5")
LENGTH_UNITS = {"Mpc/h": 1.0, "kpc/h": 1e-3}
"""Length units a Gadget or HDF5 file may use, as the factor that converts them to Mpc/h."""

BOX_TOLERANCE = 1e-5
"""Positions within this fraction of L outside [0, L) count as rounding and are wrapped."""

_ALIASES = {
    "box_size": ("BoxSize",),
    "a": ("ScalingFactor", "Time", "Scale-factor"),
    "redshift": ("Redshift",),
    "Omega_m": ("OmegaM", "Om0", "Omega0", "Omega_m"),
    "Omega_b": ("OmegaB", "Ob0", "OmegaBaryon", "Omega_b"),
    "h": ("HubbleParam", "h"),
    "sigma8": ("Sigma8", "sigma8"),
    "n_s": ("SpectralIndex", "n_s", "ns"),
}
"""Header attribute names that different codes use for the same quantity."""

_COLUMNS = {
    "bigfile": ("Position", "Velocity", "ID"),
    "gadget": ("Position", "GadgetVelocity", "ID"),
    "hdf5": ("Coordinates", "Velocities", "ParticleIDs"),
}

_GADGET_BLOCKS = [("Position", ("auto", 3), "all"), ("GadgetVelocity", ("auto", 3), "all"),
                  ("ID", "auto", "all")]
"""The leading Gadget blocks velnet reads (nbodykit's column definitions, without gas)."""


@dataclass
class Particles:
    """Dark-matter particles of one snapshot (or this MPI rank's share of them).

    Attributes:
        position: `(N, 3)` float array, comoving position in Mpc/h, wrapped into [0, L).
        velocity: `(N, 3)` float array, peculiar velocity in km/s.
        ids: `(N,)` int64 particle ids.
        box_size: side L of the periodic box, Mpc/h.
        redshift: z of the snapshot.
        cosmology: the simulation's `Cosmology`.
        path: the file read.
        format: "bigfile", "gadget" or "hdf5".
        comm: the MPI communicator over which the particles are split, or None when this
            process holds all of them.
    """

    position: np.ndarray
    velocity: np.ndarray
    ids: np.ndarray
    box_size: float
    redshift: float
    cosmology: Cosmology
    path: str
    format: str
    comm: object = None

    def __len__(self):
        return len(self.position)

    @property
    def total(self):
        """Number of particles over all ranks."""
        return len(self) if self.comm is None else self.comm.allreduce(len(self))


def read_particles(path, format=None, box_size=None, cosmology=None, redshift=None,
                   length_unit="Mpc/h", comm=None):
    """Read the dark-matter particles of a snapshot.

    Args:
        path: the snapshot: a BigFile folder, a Gadget file or an HDF5 file (the first
            file, `.0` or `.0.hdf5`, of a multi-file snapshot).
        format: "bigfile", "gadget" or "hdf5"; None detects it from the content.
        box_size: box side in Mpc/h, used when the file lacks it and checked against the
            file otherwise.
        cosmology: a `Cosmology`, or a mapping with some of its parameters, supplying
            what the file lacks (e.g. `{"sigma8": 0.83, "n_s": 0.96, "Omega_b": 0.05}`
            for Gadget) and checked against what it has.
        redshift: z, used when the file lacks the scale factor, checked otherwise.
        length_unit: "Mpc/h" or "kpc/h", the length unit of Gadget and HDF5 files
            (BigFile is always Mpc/h).
        comm: an MPI communicator to split the particles over (each rank reads a
            contiguous share); None reads all of them here.

    Returns:
        `Particles`, positions in Mpc/h in [0, L), velocities in km/s.

    Raises:
        VelnetInputError: the file is missing, truncated, of an unknown or different
            format, lacks metadata that no argument supplies, disagrees with `box_size`,
            `cosmology` or `redshift`, holds NaN or infinite values, or has positions
            outside the box beyond rounding.
    """
    path = require_file(path, "snapshot")
    found = detect_format(path)
    if format is not None and format != found:
        if format not in FORMATS:
            raise VelnetInputError(path, f"unknown format {format!r}; use one of {FORMATS}")
        raise VelnetInputError(path, f"is not a {format} snapshot (its content is {found})")
    if length_unit not in LENGTH_UNITS:
        raise VelnetInputError(path, f"length_unit must be one of {list(LENGTH_UNITS)}; "
                                     f"received {length_unit!r}")
    to_mpch = 1.0 if found == "bigfile" else LENGTH_UNITS[length_unit]
    source, header = _open(path, found)
    box = _box_size(path, header, box_size, to_mpch)
    a = _scale_factor(path, header, redshift)
    cosmo = _cosmology(path, header, cosmology)

    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    start, stop = rank * source.size // size, (rank + 1) * source.size // size
    try:
        pos, vel, ids = _read_columns(source, found, start, stop)
        pos = pos * to_mpch if to_mpch != 1.0 else pos
        vel = vel if found == "bigfile" else vel * math.sqrt(a)  # Gadget u = v / sqrt(a)
        problem = _check_values(pos, vel, box)
    except _read_errors() as err:
        problem = f"is truncated or corrupt: reading particles {start}..{stop} failed ({_words(err)})"
    _raise_first(path, problem, comm)
    return Particles(wrap_positions(pos, box), vel, ids, box, 1.0 / a - 1.0, cosmo, str(path),
                     found, comm)


def detect_format(path):
    """The format of a snapshot from its content: "bigfile", "gadget" or "hdf5".

    Gadget files may be SnapFormat 1 or 2 (labelled blocks), little-endian.

    Raises:
        VelnetInputError: the content is none of them (big-endian Gadget files included).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "1" / "Position" / "header").is_file():
            return "bigfile"
        raise VelnetInputError(path, "is a folder but not a FastPM BigFile (no 1/Position block)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if len(head) < 8:
        raise VelnetInputError(path, f"is too short ({len(head)} bytes) to be a snapshot")
    first = int.from_bytes(head[:4], "little")
    if first == 256:
        return "gadget"
    if first == 8 and head[4:8] == b"HEAD":  # SnapFormat 2: labelled blocks
        return "gadget"
    if int.from_bytes(head[:4], "big") == 256:
        raise VelnetInputError(path, "is a big-endian Gadget file; convert it to little-endian")
    raise VelnetInputError(path, "is not a BigFile, Gadget-1 or HDF5 snapshot")


def _open(path, fmt):
    """Open a snapshot with nbodykit's file types; return (file stack, header dict)."""
    from nbodykit.io.bigfile import BigFile
    from nbodykit.io.gadget import Gadget1File
    from nbodykit.io.hdf import HDFFile
    from nbodykit.io.stack import FileStack

    try:
        if fmt == "bigfile":
            source = FileStack(BigFile, [str(path)], dataset="1")
            header, total = dict(source.attrs), None
        elif fmt == "gadget":
            first = Gadget1File(str(path), columndefs=_GADGET_BLOCKS, ptype=1)
            header = dict(first.attrs)
            files = _sibling_files(path, int(header["NumFiles"]), r"^(.*)\.0$", "{}.{}")
            source = FileStack(Gadget1File, files, columndefs=_GADGET_BLOCKS, ptype=1)
            total = int(header["Nall"][1]) + (int(header["NallHW"][1]) << 32)
        else:
            header = _hdf5_header(path)
            files = _sibling_files(path, int(header.get("NumFilesPerSnapshot", 1)),
                                   r"^(.*)\.0\.hdf5$", "{}.{}.hdf5")
            source = FileStack(HDFFile, files, dataset="PartType1", header="Header")
            total = _hdf5_total(header)
    except VelnetInputError:  # a ValueError, but already in words
        raise
    except KeyError as err:
        raise VelnetInputError(path, f"lacks {err} (not a {fmt} dark-matter snapshot?)") from None
    except _read_errors() as err:
        raise VelnetInputError(path, f"is truncated or corrupt ({_words(err)})") from None
    if source.size == 0:
        raise VelnetInputError(path, "holds no dark-matter particles")
    if total is not None and total != source.size:
        raise VelnetInputError(path, f"header counts {total} particles but the files hold {source.size}")
    return source, header


def _read_errors():
    """The exceptions a truncated or corrupt file raises in h5py, bigfile or nbodykit.io."""
    import bigfile

    return (OSError, ValueError, IndexError, RuntimeError, bigfile.Error)


def _words(err):
    """An exception as one line of text (bigfile's messages are bytes)."""
    message = err.args[0] if len(err.args) == 1 else str(err)
    message = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    return f"{type(err).__name__}: {message}"


def _sibling_files(path, nfiles, pattern, template):
    """The files of a snapshot split over `nfiles` files, named from its first file."""
    if nfiles <= 1:
        return [str(path)]
    match = re.match(pattern, str(path))
    if match is None:
        raise VelnetInputError(path, f"header says the snapshot spans {nfiles} files; "
                                     f"name its first file ({template.format('<base>', 0)})")
    files = [template.format(match.group(1), i) for i in range(nfiles)]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise VelnetInputError(path, f"snapshot spans {nfiles} files but {missing} are missing")
    return files


def _hdf5_header(path):
    import h5py

    with h5py.File(path, "r") as h5:
        if "Header" not in h5 or "PartType1" not in h5:
            raise VelnetInputError(path, "HDF5 file lacks the Header group or PartType1 particles")
        header = {k: np.asarray(v) for k, v in h5["Header"].attrs.items()}
        if "Cosmology" in h5:
            header.update({k: np.asarray(v) for k, v in h5["Cosmology"].attrs.items()})
    return header


def _hdf5_total(header):
    if "NumPart_Total" not in header:
        return None
    total = int(np.ravel(header["NumPart_Total"])[1])
    if "NumPart_Total_HighWord" in header:
        total += int(np.ravel(header["NumPart_Total_HighWord"])[1]) << 32
    return total


def _read_columns(source, fmt, start, stop):
    """Positions (file units), stored velocities and ids of particles [start, stop)."""
    pos_col, vel_col, id_col = _COLUMNS[fmt]
    has_ids = id_col in source.dtype.names
    names = [pos_col, vel_col] + ([id_col] if has_ids else [])
    data = source.read(names, start, stop)
    pos = np.asarray(data[pos_col], dtype=np.result_type(data[pos_col].dtype, np.float32))
    vel = np.asarray(data[vel_col], dtype=np.result_type(data[vel_col].dtype, np.float32))
    if pos.shape != (stop - start, 3) or vel.shape != (stop - start, 3):
        raise ValueError(f"expected ({stop - start}, 3) positions and velocities, "
                         f"got {pos.shape} and {vel.shape}")
    if not has_ids:
        return pos, vel, np.arange(start, stop, dtype=np.int64)
    ids = np.asarray(data[id_col]).reshape(-1).astype(np.int64)  # BigFile gives (N, 1)
    if len(ids) != stop - start:
        raise ValueError(f"expected {stop - start} ids, got {ids.shape}")
    return pos, vel, ids


def _header_value(header, key):
    """The first header attribute naming `key`, as a float; None when absent or zero."""
    for name in _ALIASES[key]:
        if name in header:
            value = np.ravel(np.asarray(header[name], dtype=float))
            if value.size and value[0] != 0.0:
                if key == "box_size" and not np.allclose(value, value[0]):
                    return tuple(value)
                return float(value[0])
    return None


def _box_size(path, header, given, to_mpch):
    found = _header_value(header, "box_size")
    if isinstance(found, tuple):
        raise VelnetInputError(path, f"box is not cubic: BoxSize = {found}")
    if found is None:
        if given is None:
            raise VelnetInputError(path, "header has no BoxSize; pass box_size=")
        return float(given)
    found *= to_mpch
    if given is not None and not math.isclose(found, given, rel_tol=1e-6):
        hint = " (is the file in kpc/h? pass length_unit='kpc/h')" if math.isclose(
            found, 1000 * given, rel_tol=1e-6) else ""
        raise VelnetInputError(path, f"box size {found} Mpc/h in the file differs from "
                                     f"box_size={given}{hint}")
    return found


def _scale_factor(path, header, given_z):
    a = _header_value(header, "a")
    if a is None:
        z = _header_value(header, "redshift")
        a = None if z is None else 1.0 / (1.0 + z)
    if a is None:
        if given_z is None:
            raise VelnetInputError(path, "header has no scale factor or redshift; pass redshift=")
        return 1.0 / (1.0 + given_z)
    if given_z is not None and abs((1.0 / a - 1.0) - given_z) > 1e-4 * (1.0 + given_z):
        raise VelnetInputError(path, f"snapshot is at z={1.0 / a - 1.0:.6g}, not redshift={given_z}")
    return a


def _cosmology(path, header, given):
    """Merge the header's cosmological parameters with those given; they must agree."""
    names = ("Omega_m", "Omega_b", "h", "sigma8", "n_s")
    found = {k: v for k in names if (v := _header_value(header, k)) is not None}
    given = given.to_dict() if isinstance(given, Cosmology) else dict(given or {})
    unknown = set(given) - set(names)
    if unknown:
        raise VelnetInputError(path, f"cosmology has unknown parameters {sorted(unknown)}; "
                                     f"known: {list(names)}")
    for key, value in found.items():
        if key in given and not math.isclose(value, given[key], rel_tol=1e-4):
            raise VelnetInputError(path, f"file has {key}={value:.6g} but cosmology "
                                         f"gives {given[key]}")
    merged = {**given, **found}
    missing = [k for k in names if k not in merged]
    if missing:
        raise VelnetInputError(path, f"file lacks cosmological parameters {missing}; "
                                     f"pass them with cosmology=")
    return Cosmology.from_dict(merged)


def _check_values(pos, vel, box):
    """A problem with the values read (as words), or None."""
    if len(pos) == 0:
        return None
    if not np.all(np.isfinite(pos)):
        return "positions hold NaN or infinite values"
    if not np.all(np.isfinite(vel)):
        return "velocities hold NaN or infinite values"
    tol = BOX_TOLERANCE * box
    lo, hi = float(pos.min()), float(pos.max())
    if lo < -tol or hi > box + tol:
        return (f"positions span [{lo:.6g}, {hi:.6g}] Mpc/h, outside the box [0, {box:g}) "
                f"beyond rounding (wrong length unit or box size?)")
    return None


def wrap_positions(pos, box):
    """Positions wrapped into [0, box), also where rounding would give exactly `box`."""
    pos = np.mod(pos, pos.dtype.type(box))
    pos[pos >= box] = 0.0
    return pos


def _raise_first(path, problem, comm):
    """Raise the first rank's problem on every rank, so no rank waits on another."""
    problems = [problem] if comm is None else comm.allgather(problem)
    problem = next((p for p in problems if p is not None), None)
    if problem is not None:
        raise VelnetInputError(path, problem)

"""Particle snapshots read into one form: FastPM BigFile, Gadget binary, Gadget-style HDF5.

Whatever the format, `read_particles` returns positions in Mpc/h wrapped into [0, L),
peculiar velocities in km/s, particle ids, the box size, the redshift and the full
cosmology. The unit conventions of each format:

- "bigfile" (FastPM, and velnet's own `simulate`): `1/Position` in Mpc/h, `1/Velocity` the
  peculiar velocity in km/s (FastPM writes P * 100 / a), `1/ID`; metadata on the `Header`
  block (BoxSize, ScalingFactor or Time, OmegaM or Om0, HubbleParam or h, OmegaB, Sigma8,
  SpectralIndex). A file without `1/ID` gets ids 0..N-1 in file order.
- "gadget" (Gadget binary, SnapFormat 1 or 2, as L-PICOLA and other COLA codes write it;
  read with `nbodykit.io.gadget.Gadget1File`): the file states no units: positions in
  Mpc/h, or kpc/h with `length_unit="kpc/h"` (`--length-unit kpc/h`; divided by 1000,
  BoxSize too); velocities stored as Gadget's u = v / sqrt(a), so the peculiar velocity is
  v = sqrt(a) * u km/s; the header gives BoxSize, Time (a), Omega0, OmegaLambda and
  HubbleParam. Dark matter is particle type 1.
- "hdf5" (Gadget-4, AREPO, SWIFT and other Gadget-style HDF5, read with
  `nbodykit.io.hdf.HDFFile`): `PartType1/Coordinates`, `Velocities`, `ParticleIDs`; the
  metadata are the attributes of the `Header`, `Parameters`, `Units` and `Cosmology` groups,
  whichever the file has (the first holding a name wins): BoxSize, Time or Scale-factor,
  Omega0 or Omega_m, OmegaLambda, OmegaBaryon or Omega_b, HubbleParam or h, Sigma8 and
  PrimordialIndex (Gadget-4's initial-condition parameters), NumFilesPerSnapshot. The
  units are the file's own: UnitLength_in_cm and UnitVelocity_in_cm_per_s (Gadget-4,
  AREPO), or SWIFT's "Unit length in cgs (U_L)" and "Unit time in cgs (U_t)"; a file
  without them is in Mpc/h and km/s, like "gadget".
  Lengths carry Gadget's 1/h (kpc/h) unless the file is SWIFT's (plain Mpc, times h here).
  Velocities are Gadget's u = v / sqrt(a), except SWIFT's, which are peculiar; the datasets'
  own scaling attributes (Gadget-4 `a_scaling`/`h_scaling`, SWIFT `a-scale exponent`/
  `h-scale exponent`) take precedence over these conventions.

A snapshot split over several files is named by its first file (`snap_005.0` or
`snap_005.0.hdf5`); the others are found from the header's file count.
Parameters the file lacks (Gadget headers have no sigma8, n_s or Omega_b) come from the
`cosmology` argument; parameters the file has must agree with it. A box outside
`snapshot_meta.PLAUSIBLE_BOX` Mpc/h is refused: it means a wrong length unit. Error messages name the
`velnet` command-line flag that fixes them; each is the Python keyword with dashes
(`--box-size` is `box_size`).
"""
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from velnet.errors import VelnetInputError
from velnet.files import require_file
from velnet.physics.cosmology import Cosmology

from .snapshot_meta import (
    BIGFILE_UNITS,
    LENGTH_UNITS,
    Units,
    checked_box_size,
    checked_scale_factor,
    hdf5_meta,
    hdf5_total,
    merged_cosmology,
    resolve_length_unit,
    scalar_attr,
)

FORMATS = ("bigfile", "gadget", "hdf5")

BOX_TOLERANCE = 1e-5
"""Positions within this fraction of L outside [0, L) count as rounding and are wrapped."""

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
                   length_unit=None, comm=None):
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
        length_unit: "Mpc/h" or "kpc/h", the length unit of positions and box size; None
            takes the unit the file states (HDF5), else Mpc/h. Given, it overrides the
            file's (with a warning where they differ).
        comm: an MPI communicator to split the particles over (each rank reads a
            contiguous share); None reads all of them here.

    Returns:
        `Particles`, positions in Mpc/h in [0, L), velocities in km/s.

    Raises:
        VelnetInputError: the file is missing, truncated, of an unknown or different
            format, lacks metadata that no argument supplies, disagrees with `box_size`,
            `cosmology` or `redshift`, has a box implausible in its length unit, holds NaN
            or infinite values, or has positions outside the box beyond rounding.
    """
    path = require_file(path, "snapshot")
    found = detect_format(path)
    if format is not None and format != found:
        if format not in FORMATS:
            raise VelnetInputError(path, f"unknown --format {format!r}; use one of {list(FORMATS)}")
        raise VelnetInputError(path, f"is not a {format} snapshot (its content is {found}); "
                                     f"drop --format or pass --format {found}")
    if length_unit is not None and length_unit not in LENGTH_UNITS:
        raise VelnetInputError(path, f"--length-unit must be one of {list(LENGTH_UNITS)}; "
                                     f"received {length_unit!r}")
    source, header, units = _open(path, found)
    cosmo = merged_cosmology(path, header, cosmology)
    to_mpch, unit = resolve_length_unit(path, units, length_unit, cosmo.h)
    box = checked_box_size(path, header, box_size, to_mpch, unit)
    a = checked_scale_factor(path, header, redshift)

    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    start, stop = rank * source.size // size, (rank + 1) * source.size // size
    try:
        pos, vel, ids = _read_columns(source, found, start, stop)
        pos = pos * to_mpch if to_mpch != 1.0 else pos
        to_kms = units.velocity * a ** units.a_exponent
        vel = vel * to_kms if to_kms != 1.0 else vel
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
    """Open a snapshot with nbodykit's file types; return (file stack, header dict, `Units`)."""
    from nbodykit.io.bigfile import BigFile
    from nbodykit.io.gadget import Gadget1File
    from nbodykit.io.hdf import HDFFile
    from nbodykit.io.stack import FileStack

    try:
        if fmt == "bigfile":
            source = FileStack(BigFile, [str(path)], dataset="1")
            header, total, units = dict(source.attrs), None, BIGFILE_UNITS
        elif fmt == "gadget":
            first = Gadget1File(str(path), columndefs=_GADGET_BLOCKS, ptype=1)
            header = dict(first.attrs)
            files = _sibling_files(path, int(header["NumFiles"]), r"^(.*)\.0$", "{}.{}")
            source = FileStack(Gadget1File, files, columndefs=_GADGET_BLOCKS, ptype=1)
            total = int(header["Nall"][1]) + (int(header["NallHW"][1]) << 32)
            units = Units()
        else:
            header, units = hdf5_meta(path)
            files = _sibling_files(path, int(scalar_attr(header.get("NumFilesPerSnapshot", 1))),
                                   r"^(.*)\.0\.hdf5$", "{}.{}.hdf5")
            source = FileStack(HDFFile, files, dataset="PartType1", header="Header")
            total = hdf5_total(header)
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
    return source, header, units


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
                f"beyond rounding (wrong --length-unit or --box-size?)")
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

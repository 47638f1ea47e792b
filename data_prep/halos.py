"""Halo catalogues and the redshift-space halo fields of the 2024 halo paper (velnet issue 4).

Halos come from velnet's own snapshots, by nbodykit's friends-of-friends (`find_halos`:
linking length 0.2 of the mean particle separation, at least 20 particles, mass = number of
particles times the particle mass Omega_m rho_crit L^3 / N, centre-of-mass position and
velocity, periodic-aware), or from another code's catalogue of halos and subhalos in HDF5,
FITS or text columns (`read_catalog`). Either is saved and reloaded as velnet's own HDF5
layout (`save_halos`, `load_halos`). Units: positions Mpc/h, velocities km/s (peculiar),
masses Msun/h.

The paper's input (section 2.2) is four channels of redshift-space halos, ranked by mass
and cut where the cumulative number density reaches 1e-4, 1e-3, 2e-3 and 3e-3 (h/Mpc)^3,
CIC-painted without ("number") or with ("mass") mass weighting (`paint_halo_channels`);
its targets are the real-space matter density, velocity and momentum; its extra inputs are
the linear velocity and momentum of delta_s / beta (`velnet.rsd`). `halo_fields` makes all
of them for one snapshot, `write_halo_fields` writes them as one fields file.

Number densities reached. The paper's 3e-3 (h/Mpc)^3 needs halos down to about
1.5e12 Msun/h at z = 0.59 (its edges: log10 M = 15.01, 13.30, 12.56, 12.31, 12.17), so
20 particles must weigh no more than that. FastPM boxes (10 steps, force mesh 2) at
z = 0.59 in the HALO2024 cosmology gave, with at least 20 particles per halo:

- 2 Mpc/h particle spacing (256 Mpc/h with 128^3; 5.9e11 Msun/h a particle):
  n = 1.9e-4 (h/Mpc)^3, the first channel and a tenth of the second;
- 1 Mpc/h spacing (128 Mpc/h with 128^3; 7.4e10 Msun/h): n = 1.7e-3 (h/Mpc)^3, the
  first two channels and part of the third; edges log10 M = 14.6, 13.34, 12.46, 12.19;
  beta = 1.69 (number) and 2.72 (mass weighting) on a 64^3 mesh, against the paper's
  1.85 and 2.57;
- 0.67 Mpc/h spacing (128 Mpc/h with 192^3; 2.2e10 Msun/h): n = 5.7e-3 (h/Mpc)^3, all
  four channels (lowest edge log10 M = 12.0).

So boxes coarser than about 0.8 Mpc/h per particle, such as velnet's quick test boxes
(2 Mpc/h), fall short of 3e-3: their channels hold all the halos there are (with a
warning), and the fields file records the number densities reached. To reach the
paper's, keep the preset's particle spacing of 1200/2048 = 0.59 Mpc/h (`velnet simulate
--preset halo2024 --box B` sets B / 0.59 particles per side; 128 Mpc/h is 218^3) and
paint at the paper's 2.35 Mpc/h mesh (nmesh = B / 2.35, 512 for 1200 Mpc/h); boxes of a
few hundred Mpc/h need MPI (`mpirun -n R velnet simulate ...`; `find_halos` and the
particle painting run on every rank's share of the particles).
"""
import json
import logging
import math
import warnings
from dataclasses import dataclass, field

import h5py
import numpy as np

from velnet.cosmology import PRESETS as COSMOLOGIES
from velnet.cosmology import Cosmology
from velnet.errors import VelnetInputError
from velnet.fields import Field, save_fields
from velnet.files import atomic_file, require_file
from velnet.rsd import BIAS_KMAX, linear_bias, linear_inputs, los_axis, redshift_space_positions

from .paint import paint_fields
from .readers import BOX_TOLERANCE, LENGTH_UNITS, read_particles, wrap_positions

log = logging.getLogger(__name__)

RHO_CRIT = 2.775e11
"""Critical density today, h^2 Msun / Mpc^3, i.e. (Msun/h) / (Mpc/h)^3."""

NUMBER_DENSITIES = (1e-4, 1e-3, 2e-3, 3e-3)
"""Cumulative halo number densities (h/Mpc)^3 closing the paper's four mass channels."""

REDSHIFT = 0.59
"""The 2024 paper's redshift (`velnet simulate --preset halo2024` writes `snapshot_z0.590`)."""

WEIGHTINGS = ("number", "mass")
"""Painting schemes: "number" (without M_halo weighting) and "mass" (with M_halo weighting)."""

MASS_UNITS = {"Msun/h": 1.0, "1e10 Msun/h": 1e10}
"""Mass units a catalogue may use, as the factor that converts them to Msun/h."""

FORMAT_TAG = "velnet-halos"
"""The `format` attribute of velnet's halo catalogue files."""

CATALOG_KEYS = ("format", "position", "velocity", "mass", "length_unit", "mass_unit", "group",
                "hdu", "columns", "box_size", "redshift", "cosmology")
"""The keys of a `read_catalog` config."""

_META_ALIASES = {
    "box_size": ("boxsize", "box", "lbox"),
    "redshift": ("redshift", "z"),
    "a": ("scalefactor", "scalingfactor", "time", "a"),
    "Omega_m": ("omegam", "omega0", "om0", "omegamatter"),
    "Omega_b": ("omegab", "ob0", "omegabaryon"),
    "h": ("h", "hubbleparam", "hubble"),
    "sigma8": ("sigma8",),
    "n_s": ("ns", "spectralindex"),
}
"""Header names (lower case, without '_', '-' or spaces) that catalogues use for metadata."""

_COSMO_KEYS = ("Omega_m", "Omega_b", "h", "sigma8", "n_s")


@dataclass
class HaloCatalog:
    """Halos (and subhalos) of one box.

    Attributes:
        position: `(N, 3)` float array, comoving position in Mpc/h, in [0, L).
        velocity: `(N, 3)` float array, peculiar velocity in km/s.
        mass: `(N,)` float64 mass in Msun/h.
        box_size: side L of the periodic box, Mpc/h.
        redshift: z of the catalogue.
        cosmology: the simulation's `Cosmology`.
        attrs: provenance (source, finder, linking_length, nmin, particle_mass, ...).
    """

    position: np.ndarray
    velocity: np.ndarray
    mass: np.ndarray
    box_size: float
    redshift: float
    cosmology: Cosmology
    attrs: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.mass)

    @property
    def volume(self):
        """Box volume, (Mpc/h)^3."""
        return float(self.box_size) ** 3

    @property
    def number_density(self):
        """Halos per (Mpc/h)^3."""
        return len(self) / self.volume


def particle_mass(cosmology, box_size, nparticles):
    """Mass of one simulation particle, Omega_m rho_crit L^3 / N, in Msun/h.

    Args:
        cosmology: a `Cosmology`.
        box_size: box side, Mpc/h.
        nparticles: total number of particles (N, not N per side).
    """
    return cosmology.Omega_m * RHO_CRIT * float(box_size) ** 3 / nparticles


def find_halos(particles, linking_length=0.2, nmin=20):
    """Friends-of-friends halos of a snapshot's particles, with nbodykit's `FOF`.

    Collective when `particles.comm` is set; every rank gets the whole catalogue.

    Args:
        particles: `data_prep.readers.Particles` (positions Mpc/h, velocities km/s).
        linking_length: in units of the mean particle separation L / N^(1/3).
        nmin: fewest particles a halo may have.

    Returns:
        `HaloCatalog`, heaviest first: centre-of-mass positions (periodic) and velocities,
        mass = particles x `particle_mass`.
    """
    from mpi4py import MPI
    from nbodykit.algorithms.fof import FOF
    from nbodykit.source.catalog import ArrayCatalog

    comm = particles.comm or MPI.COMM_SELF
    box = float(particles.box_size)
    catalog = ArrayCatalog({"Position": particles.position, "Velocity": particles.velocity},
                           BoxSize=[box] * 3, comm=comm)
    features = FOF(catalog, linking_length, nmin).find_features()
    length, position, velocity = (np.asarray(features[name].compute())
                                  for name in ("Length", "CMPosition", "CMVelocity"))
    keep = length > 0  # row 0 collects the particles in no halo
    length, position, velocity = (_gather(comm, x[keep]) for x in (length, position, velocity))
    mp = particle_mass(particles.cosmology, box, particles.total)
    order = np.argsort(-length, kind="stable")
    attrs = {"source": str(particles.path), "finder": "nbodykit FOF", "linking_length": float(linking_length),
             "nmin": int(nmin), "particle_mass": mp, "nparticles": int(particles.total)}
    return HaloCatalog(wrap_positions(position[order].astype(np.float64), box),
                       velocity[order].astype(np.float64), mp * length[order].astype(np.float64), box,
                       float(particles.redshift), particles.cosmology, attrs)


def write_halos(snapshot_path, out_h5, linking_length=0.2, nmin=20, **reader_kwargs):
    """Read a snapshot, find its FOF halos and save them (`save_halos`), atomically.

    Collective under MPI (nbodykit's current communicator); rank 0 writes.

    Args:
        snapshot_path: a snapshot `read_particles` reads.
        out_h5: the halo catalogue file to write.
        linking_length, nmin: as `find_halos`.
        **reader_kwargs: passed to `read_particles` (format, box_size, cosmology, ...).

    Returns:
        The `HaloCatalog`.
    """
    from nbodykit import CurrentMPIComm

    comm = reader_kwargs.pop("comm", None) or CurrentMPIComm.get()
    catalog = find_halos(read_particles(snapshot_path, comm=comm, **reader_kwargs), linking_length, nmin)
    if comm.rank == 0:
        save_halos(out_h5, catalog)
    comm.barrier()
    return catalog


def _gather(comm, array):
    """The concatenation of every rank's `array`, on every rank."""
    if comm.size == 1:
        return array
    return np.concatenate(comm.allgather(array))


def save_halos(path, catalog):
    """Write a `HaloCatalog` to HDF5, atomically.

    Layout: datasets "position" `(N, 3)` Mpc/h, "velocity" `(N, 3)` km/s, "mass" `(N,)`
    Msun/h; root attributes format="velnet-halos", box_size, redshift, cosmology (JSON),
    length_unit, velocity_unit, mass_unit, attrs (JSON).

    Returns:
        `path`.
    """
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(format=FORMAT_TAG, box_size=float(catalog.box_size), redshift=float(catalog.redshift),
                        cosmology=json.dumps(catalog.cosmology.to_dict()), length_unit="Mpc/h",
                        velocity_unit="km/s", mass_unit="Msun/h", attrs=json.dumps(catalog.attrs))
        h5.create_dataset("position", data=np.asarray(catalog.position, dtype=np.float64))
        h5.create_dataset("velocity", data=np.asarray(catalog.velocity, dtype=np.float64))
        h5.create_dataset("mass", data=np.asarray(catalog.mass, dtype=np.float64))
    return path


def load_halos(path):
    """Read a catalogue written by `save_halos`.

    Raises:
        VelnetInputError: the file is missing, not HDF5, not a velnet halo catalogue, or
            its values are inconsistent (see `read_catalog`).
    """
    path = require_file(path, "halo catalogue")
    try:
        with h5py.File(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT_TAG:
                raise VelnetInputError(path, f"is not a velnet halo catalogue (no format={FORMAT_TAG!r} "
                                             f"attribute); read other catalogues with read_catalog")
            meta = {key: h5.attrs[key] for key in ("box_size", "redshift", "cosmology", "attrs")}
            columns = {name: h5[name][...] for name in ("position", "velocity", "mass")}
    except OSError as err:
        raise VelnetInputError(path, f"is not a readable HDF5 file ({err})") from None
    except KeyError as err:
        raise VelnetInputError(path, f"lacks {err}") from None
    cosmology = Cosmology.from_dict(json.loads(meta["cosmology"]))
    return _catalog(path, columns["position"], columns["velocity"], columns["mass"], float(meta["box_size"]),
                    float(meta["redshift"]), cosmology, json.loads(meta["attrs"]))


def read_catalog(path, config):
    """Read another code's halo or subhalo catalogue (CosmicGrowth-style) into a `HaloCatalog`.

    Args:
        path: an HDF5, FITS or text (whitespace-separated columns, '#' comments) file.
        config: dict saying where things are:
            "position", "velocity": one column or dataset holding `(N, 3)` values, or a
                list of three (x, y, z); columns of a text file by index or by a name
                from "columns";
            "mass": one column or dataset;
            "length_unit": "Mpc/h" (default) or "kpc/h", for positions and a box size
                read from the file;
            "mass_unit": "Msun/h" (default) or "1e10 Msun/h";
            "format": "hdf5", "fits" or "text" (default: from the content);
            "group": HDF5 group holding the datasets, or a list of groups to join (e.g.
                ["halos", "subhalos"]); default the root;
            "hdu": FITS table extension, index or name (default 1);
            "columns": names of a text file's columns, in order;
            "box_size" (Mpc/h), "redshift", "cosmology" (a `Cosmology`, a preset name
                such as "halo2024", or a dict of its parameters): used where the file's
                attributes or header lack them, checked against them otherwise.
        Velocities are peculiar, in km/s.

    Returns:
        `HaloCatalog` with positions in Mpc/h wrapped into [0, L), masses in Msun/h,
        in file order.

    Raises:
        VelnetInputError: naming the file: unknown config keys or units, missing columns,
            wrong shapes, NaN or infinite values, masses <= 0, positions outside the box,
            metadata missing from both the file and the config, or disagreeing.
    """
    path = require_file(path, "halo catalogue")
    config = dict(config)
    unknown = set(config) - set(CATALOG_KEYS)
    if unknown:
        raise VelnetInputError(path, f"catalogue config has unknown keys {sorted(unknown)}; "
                                     f"known: {list(CATALOG_KEYS)}")
    missing = [key for key in ("position", "velocity", "mass") if key not in config]
    if missing:
        raise VelnetInputError(path, f"catalogue config must say where {missing} are")
    length_unit, mass_unit = config.get("length_unit", "Mpc/h"), config.get("mass_unit", "Msun/h")
    if length_unit not in LENGTH_UNITS or mass_unit not in MASS_UNITS:
        raise VelnetInputError(path, f"units must be length_unit in {list(LENGTH_UNITS)} and mass_unit in "
                                     f"{list(MASS_UNITS)}. Received: {length_unit!r}, {mass_unit!r}")
    fmt = config.get("format") or _detect_catalog_format(path)
    readers = {"hdf5": _read_hdf5, "fits": _read_fits, "text": _read_text}
    if fmt not in readers:
        raise VelnetInputError(path, f"format must be one of {list(readers)}. Received: {fmt!r}")
    columns, header = readers[fmt](path, config)
    to_mpch = LENGTH_UNITS[length_unit]
    found = _header_meta(header)
    if "box_size" in found:
        found["box_size"] *= to_mpch
    box, redshift, cosmology = _merge_meta(path, found, config)
    attrs = {"source": str(path), "format": fmt, "length_unit": length_unit, "mass_unit": mass_unit}
    return _catalog(path, columns["position"] * to_mpch, columns["velocity"],
                    columns["mass"] * MASS_UNITS[mass_unit], box, redshift, cosmology, attrs)


def combine_catalogs(catalogs):
    """One catalogue of several of the same box (e.g. halos and subhalos from separate files).

    Raises:
        VelnetInputError: the catalogues differ in box size, redshift or cosmology.
    """
    first = catalogs[0]
    for other in catalogs[1:]:
        if not (math.isclose(other.box_size, first.box_size, rel_tol=1e-6)
                and math.isclose(other.redshift, first.redshift, rel_tol=1e-4, abs_tol=1e-4)
                and other.cosmology == first.cosmology):
            raise VelnetInputError(other.attrs.get("source"), f"catalogue (box {other.box_size}, "
                                   f"z={other.redshift}, {other.cosmology}) is not of the box of "
                                   f"{first.attrs.get('source')} (box {first.box_size}, z={first.redshift}, "
                                   f"{first.cosmology})")
    return HaloCatalog(np.concatenate([c.position for c in catalogs]),
                       np.concatenate([c.velocity for c in catalogs]),
                       np.concatenate([c.mass for c in catalogs]), first.box_size, first.redshift,
                       first.cosmology, {"source": "; ".join(str(c.attrs.get("source")) for c in catalogs),
                                         "parts": [c.attrs for c in catalogs]})


def _detect_catalog_format(path):
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if head == b"SIMPLE  =":
        return "fits"
    return "text"


def _columns(path, config, get, available):
    """Position, velocity (N, 3) and mass (N,) float64 arrays through `get(ref)`."""
    out = {}
    for key in ("position", "velocity", "mass"):
        ref = config[key]
        vector = isinstance(ref, (list, tuple))
        if vector and len(ref) != 3:
            raise VelnetInputError(path, f"{key} needs one column or three (x, y, z). Received: {ref}")
        try:
            if vector:
                value = np.stack([np.asarray(get(r), dtype=np.float64).reshape(-1) for r in ref], axis=-1)
            else:
                value = np.asarray(get(ref), dtype=np.float64)
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise VelnetInputError(path, f"cannot read {key} from {ref!r} ({err}); "
                                         f"the file holds {available}") from None
        if value.ndim != (1 if key == "mass" else 2) or (key != "mass" and value.shape[1] != 3):
            raise VelnetInputError(path, f"{key} from {ref!r} has shape {value.shape}, not "
                                         f"{'(N,)' if key == 'mass' else '(N, 3)'}")
        out[key] = value
    lengths = {k: len(v) for k, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise VelnetInputError(path, f"columns differ in length: {lengths}")
    return out


def _read_hdf5(path, config):
    groups = config.get("group", "/")
    groups = [groups] if isinstance(groups, str) else list(groups)
    try:
        with h5py.File(path, "r") as h5:
            header = dict(h5.attrs)
            if "Header" in h5:
                header.update(h5["Header"].attrs)
            parts = []
            for name in groups:
                if name not in h5 or not isinstance(h5[name], h5py.Group):
                    raise VelnetInputError(path, f"has no group {name!r} (it holds {sorted(h5.keys())})")
                group = h5[name]
                header.update(group.attrs)
                parts.append(_columns(path, config, lambda ref: group[ref][...], sorted(group.keys())))
    except OSError as err:
        raise VelnetInputError(path, f"is not a readable HDF5 file ({err})") from None
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, header


def _read_fits(path, config):
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = config.get("hdu", 1)
            try:
                table = hdul[hdu]
            except (IndexError, KeyError):
                raise VelnetInputError(path, f"has no HDU {hdu!r} ({len(hdul)} HDUs)") from None
            if table.data is None or not hasattr(table, "columns"):
                raise VelnetInputError(path, f"HDU {hdu!r} is not a table")
            header = {**dict(hdul[0].header), **dict(table.header)}
            columns = _columns(path, config, lambda ref: table.data[ref], list(table.columns.names))
    except OSError as err:
        raise VelnetInputError(path, f"is not a readable FITS file ({err})") from None
    return columns, header


def _read_text(path, config):
    names = list(config.get("columns") or [])
    try:
        data = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise VelnetInputError(path, f"is not a table of numbers ({err})") from None
    if names and len(names) != data.shape[1]:
        raise VelnetInputError(path, f"has {data.shape[1]} columns but config names {len(names)}: {names}")

    def get(ref):
        index = names.index(ref) if isinstance(ref, str) and ref in names else ref
        if not isinstance(index, (int, np.integer)):
            raise KeyError(f"no column named {ref!r}")
        return data[:, index]

    return _columns(path, config, get, names or f"{data.shape[1]} columns, by index"), {}


def _header_meta(header):
    """Box size (file units), a, redshift and cosmological parameters found in a header."""
    normal = {str(k).lower().replace("_", "").replace("-", "").replace(" ", ""): v for k, v in header.items()}
    found = {}
    for key, aliases in _META_ALIASES.items():
        for alias in aliases:
            if alias in normal:
                try:
                    value = float(np.ravel(np.asarray(normal[alias], dtype=float))[0])
                except (TypeError, ValueError, IndexError):
                    continue
                if value != 0.0 or key == "redshift":
                    found[key] = value
                    break
    if "redshift" not in found and "a" in found:
        found["redshift"] = 1.0 / found["a"] - 1.0
    return found


def _merge_meta(path, found, config):
    """Box size, redshift and `Cosmology` from the file's header and the config, which must agree."""
    given = config.get("cosmology")
    if isinstance(given, str):
        if given not in COSMOLOGIES:
            raise VelnetInputError(path, f"unknown cosmology preset {given!r}; known: {sorted(COSMOLOGIES)}")
        given = COSMOLOGIES[given]
    given = given.to_dict() if isinstance(given, Cosmology) else dict(given or {})
    given.update({k: config[k] for k in ("box_size", "redshift") if config.get(k) is not None})
    for key, value in found.items():
        if key in given and not math.isclose(value, float(given[key]), rel_tol=1e-4, abs_tol=1e-6):
            raise VelnetInputError(path, f"file has {key}={value:.6g} but the config gives {given[key]}")
    merged = {**given, **{k: v for k, v in found.items() if k != "a"}}
    missing = [k for k in ("box_size", "redshift") + _COSMO_KEYS if k not in merged]
    if missing:
        raise VelnetInputError(path, f"catalogue lacks {missing}; give them in the config")
    return float(merged["box_size"]), float(merged["redshift"]), Cosmology.from_dict(merged)


def _catalog(path, position, velocity, mass, box, redshift, cosmology, attrs):
    """A checked `HaloCatalog`: finite values, positive masses, positions in the box (wrapped)."""
    position, velocity, mass = (np.asarray(x, dtype=np.float64) for x in (position, velocity, mass))
    if len(mass) == 0:
        raise VelnetInputError(path, "holds no halos")
    for name, value in (("positions", position), ("velocities", velocity), ("masses", mass)):
        if not np.all(np.isfinite(value)):
            raise VelnetInputError(path, f"{name} hold NaN or infinite values")
    if mass.min() <= 0:
        raise VelnetInputError(path, f"masses must be positive; the smallest is {mass.min():.6g}")
    lo, hi = float(position.min()), float(position.max())
    if lo < -BOX_TOLERANCE * box or hi > box * (1 + BOX_TOLERANCE):
        raise VelnetInputError(path, f"positions span [{lo:.6g}, {hi:.6g}] Mpc/h, outside the box [0, {box:g}) "
                                     f"(wrong length_unit or box_size?)")
    return HaloCatalog(wrap_positions(position, box), velocity, mass, box, redshift, cosmology, attrs)


@dataclass
class MassBins:
    """Halos ranked by mass into channels closed at cumulative number densities.

    Attributes:
        channel: `(N,)` int, the channel of each halo (0 = heaviest), -1 beyond the last.
        edges: `(n + 1,)` masses, Msun/h: the heaviest halo's, then the lightest of each
            channel (the paper's log10 M = 15.01, 13.30, 12.56, 12.31, 12.17).
        counts: `(n,)` halos per channel.
        target: `(n,)` cumulative number densities asked for, (h/Mpc)^3.
        reached: `(n,)` cumulative number densities reached, (h/Mpc)^3.
    """

    channel: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    target: np.ndarray
    reached: np.ndarray

    def to_dict(self):
        """JSON-ready metadata (without the per-halo channels)."""
        return {"mass_edges_msun_h": [float(m) for m in self.edges], "halo_counts": [int(c) for c in self.counts],
                "number_densities_target": [float(n) for n in self.target],
                "number_densities_reached": [float(n) for n in self.reached]}


def mass_bins(mass, volume, number_densities=NUMBER_DENSITIES):
    """Channels of the N_j = round(n_j V) most massive halos (the paper's mass intervals).

    Halos are ranked by mass, heaviest first (equal masses keep catalogue order); channel j
    holds ranks N_{j-1} .. N_j - 1. A catalogue with fewer than N_n halos puts all of them
    in the channels, leaves the rest short or empty, and warns.

    Args:
        mass: `(N,)` halo masses, Msun/h.
        volume: box volume, (Mpc/h)^3.
        number_densities: increasing cumulative number densities, (h/Mpc)^3.

    Returns:
        `MassBins`.

    Raises:
        VelnetInputError: no halos, or densities not positive and increasing.
    """
    mass = np.asarray(mass, dtype=np.float64)
    target = np.asarray(number_densities, dtype=np.float64)
    if target.ndim != 1 or len(target) == 0 or target[0] <= 0 or np.any(np.diff(target) <= 0):
        raise VelnetInputError(None, f"number densities must be positive and increasing. "
                                     f"Received: {list(number_densities)}")
    if len(mass) == 0:
        raise VelnetInputError(None, "no halos to bin")
    wanted = np.round(target * volume).astype(np.int64)
    cumulative = np.minimum(wanted, len(mass))
    if cumulative[-1] < wanted[-1]:
        warnings.warn(f"the catalogue's {len(mass)} halos reach a number density of {len(mass) / volume:.3g} "
                      f"(h/Mpc)^3, short of {target[-1]:.3g}: the channels hold all halos and "
                      f"{int(np.sum(cumulative < wanted))} of {len(target)} fall short", stacklevel=2)
    order = np.argsort(-mass, kind="stable")
    channel = np.full(len(mass), -1, dtype=np.int64)
    starts = np.concatenate([[0], cumulative[:-1]])
    for j, (start, stop) in enumerate(zip(starts, cumulative)):
        channel[order[start:stop]] = j
    edges = np.concatenate([[mass[order[0]]], mass[order[np.maximum(cumulative, 1) - 1]]])
    return MassBins(channel, edges, cumulative - starts, target, cumulative / volume)


def paint_halo_channels(catalog, nmesh, los="z", weighting="number", number_densities=NUMBER_DENSITIES):
    """The paper's input: redshift-space halos of each mass channel, CIC-painted.

    Halos move to redshift space along `los` (`velnet.rsd.redshift_space_positions`), are
    binned by `mass_bins`, and each channel is painted with plain CIC (as
    `data_prep.paint`) with weight 1 ("number", without mass weighting) or the halo mass
    ("mass", with mass weighting). Each channel is normalised by the mean weight per cell
    of all binned halos, W / N^3 (W: their number or total mass): channel j is
    rho_j / rho_mean, its mean is the channel's share of W, and the channels sum to
    1 + delta_s of all binned halos. Halos (or Msun/h) per cell = value * W / N^3; the
    metadata records W / N^3 as "mean_weight_per_cell".

    Args:
        catalog: `HaloCatalog`.
        nmesh: cells per side.
        los: line of sight, 0, 1, 2 or "x", "y", "z".
        weighting: "number" or "mass".
        number_densities: cumulative number densities closing the channels, (h/Mpc)^3.

    Returns:
        (fields, bins, meta): list of scalar `Field`s "halos_s_0".. (heaviest first),
        the `MassBins`, and a JSON-ready dict of metadata.

    Raises:
        VelnetInputError: unknown `weighting` or `los`, or see `mass_bins`.
    """
    if weighting not in WEIGHTINGS:
        raise VelnetInputError(None, f"weighting must be one of {WEIGHTINGS}. Received: {weighting!r}")
    axis = los_axis(los)
    bins = mass_bins(catalog.mass, catalog.volume, number_densities)
    s = redshift_space_positions(catalog.position, catalog.velocity, axis, catalog.box_size,
                                 catalog.redshift, catalog.cosmology)
    selected = bins.channel >= 0
    weight = catalog.mass[selected] if weighting == "mass" else np.ones(int(selected.sum()))
    mean_per_cell = float(weight.sum()) / nmesh**3
    unit = "Msun/h" if weighting == "mass" else "halos"
    fields = []
    for j in range(len(bins.counts)):
        value = _paint_weighted(s[selected], weight, bins.channel[selected] == j, catalog.box_size, nmesh)
        attrs = {"units": f"rho_{j} / rho_mean of all channels ({weighting}-weighted)", "channel": j,
                 "mass_min_msun_h": float(bins.edges[j + 1]), "mass_max_msun_h": float(bins.edges[j]),
                 "nhalos": int(bins.counts[j]), "painter": "cic", "compensated": False}
        fields.append(Field(value.astype(np.float32), f"halos_s_{j}", catalog.box_size, catalog.redshift,
                            catalog.cosmology, attrs))
    meta = {"los": "xyz"[axis], "los_axis": axis, "weighting": weighting,
            "halo_channels": [f.name for f in fields], "mean_weight_per_cell": mean_per_cell,
            "weight_unit": unit, **bins.to_dict()}
    return fields, bins, meta


def _paint_weighted(position, weight, mask, box, nmesh):
    """CIC mesh of sum(weight * mask * W_cic) / (sum(weight) / N^3), float64 `(N, N, N)`."""
    from mpi4py import MPI
    from nbodykit.source.catalog import ArrayCatalog

    catalog = ArrayCatalog({"Position": position, "Weight": weight, "Value": mask.astype(np.float64)},
                           BoxSize=box, comm=MPI.COMM_SELF)
    mesh = catalog.to_mesh(Nmesh=nmesh, resampler="cic", compensated=False, interlaced=False, dtype="f8")
    return mesh.compute(mode="real").preview()


def check_same_box(catalog, particles):
    """Raise unless a halo catalogue is of the particles' box, redshift and cosmology.

    Raises:
        VelnetInputError: naming the catalogue's file.
    """
    problems = []
    if not math.isclose(catalog.box_size, particles.box_size, rel_tol=1e-6):
        problems.append(f"box {catalog.box_size} vs {particles.box_size} Mpc/h")
    if not math.isclose(catalog.redshift, particles.redshift, rel_tol=1e-3, abs_tol=1e-3):
        problems.append(f"z={catalog.redshift:.4g} vs {particles.redshift:.4g}")
    a, b = catalog.cosmology.to_dict(), particles.cosmology.to_dict()
    if not all(math.isclose(a[k], b[k], rel_tol=1e-4) for k in a):
        problems.append(f"cosmology {a} vs {b}")
    if problems:
        raise VelnetInputError(catalog.attrs.get("source"),
                               f"halo catalogue is not of snapshot {particles.path}: {'; '.join(problems)}")


def halo_fields(particles, nmesh, catalog=None, los="z", weighting="number",
                number_densities=NUMBER_DENSITIES, kmax=BIAS_KMAX, linking_length=0.2, nmin=20):
    """All fields of the halo experiment for one snapshot.

    Collective when `particles.comm` is set (FOF and painting of the particles).

    Args:
        particles: `Particles` of the snapshot.
        nmesh: cells per side (the paper: 512 for 1200 Mpc/h, 2.35 Mpc/h cells).
        catalog: a `HaloCatalog` of the same box (`load_halos`, `read_catalog`); None finds
            FOF halos in the particles (`find_halos` with `linking_length`, `nmin`).
        los: line of sight of the redshift space, 0, 1, 2 or "x", "y", "z".
        weighting: "number" (without M_halo weighting) or "mass" (with it).
        number_densities: cumulative number densities of the channels, (h/Mpc)^3.
        kmax: upper k of the bias fit of eq. 4, h/Mpc.
        linking_length, nmin: FOF settings when `catalog` is None.

    Returns:
        (fields, attrs): dict name -> `Field`: "halos_s_0".."halos_s_3" (see
        `paint_halo_channels`), "density" (rho/rho_mean of the matter, real space),
        "velocity", "momentum" (km/s, `data_prep.paint.paint_fields`),
        "linear_velocity_s", "linear_momentum_s" (km/s, eq. 2-3 from the summed channels
        with beta of eq. 4); attrs: JSON-ready metadata (los, weighting, mass edges,
        target and reached number densities, counts, beta, the catalogue's provenance).

    Raises:
        VelnetInputError: the catalogue is not of this box, or bad settings.
    """
    los_axis(los)
    if catalog is None:
        catalog = find_halos(particles, linking_length, nmin)
    else:
        check_same_box(catalog, particles)
    channels, _, meta = paint_halo_channels(catalog, nmesh, los, weighting, number_densities)
    fields = {f.name: f for f in channels}
    fields.update(paint_fields(particles, nmesh))
    total = np.sum([f.value for f in channels], axis=0, dtype=np.float64)
    halos = Field(total, "halos_s", catalog.box_size, catalog.redshift, catalog.cosmology)
    beta = linear_bias(halos, fields["density"], kmax)
    fields.update(linear_inputs(halos, beta))
    log.info("%d halos (n = %.3g (h/Mpc)^3), %s weighting: beta = %.3f", len(catalog),
             catalog.number_density, weighting, beta)
    attrs = {**meta, "beta": beta, "beta_kmax": float(kmax), "nhalos": len(catalog),
             "halo_number_density": catalog.number_density, "halo_catalog": _json_ready(catalog.attrs)}
    return fields, attrs


def _json_ready(attrs):
    return json.loads(json.dumps(attrs, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


TARGETS = ("density", "velocity", "momentum", "linear_velocity_s", "linear_momentum_s")
"""The fields after the halo channels in a halo fields file."""


def write_halo_fields(snapshot_path, out_h5, nmesh, catalog=None, los="z", weighting="number",
                      number_densities=NUMBER_DENSITIES, kmax=BIAS_KMAX, linking_length=0.2, nmin=20,
                      **reader_kwargs):
    """Read a snapshot, make its `halo_fields` and write them to one fields file, atomically.

    Collective under MPI (nbodykit's current communicator); rank 0 writes.

    Args:
        snapshot_path: a snapshot `read_particles` reads.
        out_h5: the fields file (`velnet.fields.save_fields` layout; the halo channels
            are the scalar fields "halos_s_0".."halos_s_3", heaviest first).
        nmesh, catalog, los, weighting, number_densities, kmax, linking_length, nmin:
            as `halo_fields`.
        **reader_kwargs: passed to `read_particles` (format, box_size, cosmology, ...).

    Returns:
        `out_h5`.
    """
    from nbodykit import CurrentMPIComm

    comm = reader_kwargs.pop("comm", None) or CurrentMPIComm.get()
    particles = read_particles(snapshot_path, comm=comm, **reader_kwargs)
    fields, attrs = halo_fields(particles, nmesh, catalog, los, weighting, number_densities, kmax,
                                linking_length, nmin)
    attrs.update(source=str(particles.path), source_format=particles.format, nparticles=int(particles.total))
    if comm.rank == 0:
        names = attrs["halo_channels"] + list(TARGETS)
        save_fields(out_h5, [fields[name] for name in names], attrs=attrs)
    comm.barrier()
    return out_h5

"""Halo catalogues in and out: velnet's own HDF5 layout, other codes' columns, HBT+ subhalos.

A `HaloCatalog` holds the halos (and subhalos) of one box in velnet's units: positions Mpc/h,
velocities km/s (peculiar), masses Msun/h. It is saved and reloaded as velnet's HDF5 layout
(`save_halos`, `load_halos`); other codes' catalogues of halos and subhalos in HDF5, FITS or
text columns are read through a small column map (`read_catalog`); FOF halos of velnet's own
snapshots come from `data_prep.fof`.

HBT+ subhalos (`read_hbt`) and the 2024 halo paper's tracers made of them
(`halos_and_subhalos`). The paper's tracers are the halos and subhalos of CosmicGrowth, found by HBT+
(github.com/Kambrian/HBTplus), ranked together by mass. HBT+ writes, per snapshot S,
`SubSnap_SSS.hdf5` (OpenMP version) or `SSS/SubSnap_SSS.N.hdf5`, N = 0 .. NumberOfFiles - 1
(MPI version), each holding (`src/io/subhalo_io.cpp`):

- one-element datasets `NumberOfFiles`, `SnapshotId`, `NumberOfSubhalosInAllFiles`;
- `Cosmology/OmegaM0`, `OmegaLambda0`, `ScaleFactor` and `HubbleParam`, which is H(z) in
  internal units, not h (so h, sigma8, n_s and Omega_b must be given);
- `Subhalos`, a compound dataset, one row per subhalo, with among others `TrackId`,
  `Nbound`, `Mbound`, `HostHaloId` (row of the host in the FoF catalogue, -1 for field
  subhalos), `Rank` (0: the host's central subhalo, or a field subhalo; > 0: satellites),
  `ComovingMostBoundPosition` and `PhysicalAverageVelocity` (HBT+'s own position and
  velocity of a subhalo, `src/subhalo.h`).

The units are the run's, recorded with its other parameters as "Name value" lines in
`Parameters.log` (older versions: `VER<version>.param`) in HBT+'s SubhaloPath, the folder of
the `SubSnap` files or its parent: positions are comoving in LengthInMpch Mpc/h,
velocities the peculiar velocity (HBT+ multiplies Gadget's u by sqrt(a)) in VelInKmS km/s,
masses in MassInMsunh Msun/h (HBT+'s defaults when a name is absent: 1, 1, 1e10); BoxSize is
in LengthInMpch Mpc/h.
"""
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from velnet.errors import VelnetInputError
from velnet.files import atomic_file, require_file
from velnet.physics.cosmology import PRESETS as COSMOLOGIES
from velnet.physics.cosmology import Cosmology

from .readers import BOX_TOLERANCE, wrap_positions
from .snapshot_meta import LENGTH_UNITS

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


# --- HBT+ -------------------------------------------------------------------------------------

HBT_DEFAULTS = {"LengthInMpch": 1.0, "VelInKmS": 1.0, "MassInMsunh": 1e10}
"""HBT+'s unit parameters when its configuration does not set them."""

HBT_FIELDS = ("TrackId", "Nbound", "Mbound", "HostHaloId", "Rank", "ComovingMostBoundPosition",
              "PhysicalAverageVelocity")
"""The columns of `Subhalos` velnet reads."""


@dataclass(kw_only=True)
class Subhalos(HaloCatalog):
    """HBT+ subhalos of one snapshot: a `HaloCatalog` of bound masses, most-bound positions
    and mean velocities, with HBT+'s columns.

    Attributes:
        track_id: `(N,)` int64, HBT+'s TrackId.
        host_id: `(N,)` int64, row of the host halo in the FoF catalogue, -1 for field subhalos.
        rank: `(N,)` int64, 0 for a host's central (and field) subhalos, > 0 for satellites.
        nbound: `(N,)` int64 bound particles (1: a disrupted subhalo, its most-bound particle).
    """

    track_id: np.ndarray
    host_id: np.ndarray
    rank: np.ndarray
    nbound: np.ndarray


def is_hbt(path):
    """Whether `path` is an HBT+ `SubSnap` HDF5 file (a `Subhalos` compound dataset)."""
    try:
        with h5py.File(path, "r") as h5:
            return "Subhalos" in h5 and h5["Subhalos"].dtype.names is not None
    except OSError:
        return False


def read_hbt(path, cosmology=None, box_size=None, redshift=None):
    """Read the subhalos of an HBT+ snapshot.

    Args:
        path: `SubSnap_SSS.hdf5`, or the first file `SubSnap_SSS.0.hdf5` of a split one.
        cosmology: a `Cosmology`, a preset name or a dict of parameters: what the file
            lacks (h, Omega_b, sigma8, n_s), checked against its OmegaM0.
        box_size: Mpc/h, checked against the parameter file's BoxSize.
        redshift: checked against the file's ScaleFactor.

    Returns:
        `Subhalos`, in file order.

    Raises:
        VelnetInputError: naming the file: missing files or parameter file, missing columns,
            counts that disagree, or metadata that disagree with the arguments.
    """
    path = require_file(path, "HBT+ subhalo catalogue")
    params, params_path = _parameters(path)
    files = _files(path)
    data, meta = _read_tables(files)
    if len(data) != meta["NumberOfSubhalosInAllFiles"]:
        raise VelnetInputError(path, f"NumberOfSubhalosInAllFiles is {meta['NumberOfSubhalosInAllFiles']:g} "
                                     f"but {len(files)} file(s) hold {len(data)} subhalos")
    units = {k: float(params.get(k, v)) for k, v in HBT_DEFAULTS.items()}
    if "BoxSize" not in params:
        raise VelnetInputError(params_path, "has no BoxSize")
    box = float(params["BoxSize"]) * units["LengthInMpch"]
    if box_size is not None and not math.isclose(box, box_size, rel_tol=1e-6):
        raise VelnetInputError(path, f"box size {box:g} Mpc/h ({params_path}) differs from "
                                     f"--box-size {box_size:g}")
    a = meta["Cosmology/ScaleFactor"]
    if redshift is not None and abs(1 / a - 1 - redshift) > 1e-4 * (1 + redshift):
        raise VelnetInputError(path, f"catalogue is at z={1 / a - 1:.6g}, not --redshift {redshift:g}")
    cosmo = _cosmology(path, meta["Cosmology/OmegaM0"], meta["Cosmology/OmegaLambda0"], cosmology)
    attrs = {"source": str(path), "files": [str(f) for f in files], "finder": "HBT+",
             "parameters": str(params_path), **units}
    return Subhalos(
        position=data["ComovingMostBoundPosition"].astype(np.float64) * units["LengthInMpch"],
        velocity=data["PhysicalAverageVelocity"].astype(np.float64) * units["VelInKmS"],
        mass=data["Mbound"].astype(np.float64) * units["MassInMsunh"], box_size=box, redshift=1 / a - 1,
        cosmology=cosmo, attrs=attrs, **{name: data[column].astype(np.int64) for name, column in (
            ("track_id", "TrackId"), ("host_id", "HostHaloId"), ("rank", "Rank"), ("nbound", "Nbound"))})


def halos_and_subhalos(subhalos):
    """The 2024 paper's tracers: CosmicGrowth's halos and subhalos (HBT+) in one catalogue.

    Each host halo is one tracer at its central subhalo (rank 0: position and velocity), with
    the host's bound mass, the sum of the bound masses of its resolved subhalos; each satellite
    subhalo (rank > 0) is one more tracer with its own bound mass; a field subhalo (no host)
    is a halo of its own. Disrupted subhalos (one bound particle) are left out.

    Args:
        subhalos: `Subhalos` from `read_hbt`.

    Returns:
        `HaloCatalog` (positions Mpc/h, velocities km/s, masses Msun/h), hosts first, in the
        order of their centrals, then satellites; `attrs` count both.

    Raises:
        VelnetInputError: a host with no central subhalo, or none resolved.
    """
    source, resolved, host = subhalos.attrs.get("source"), subhalos.nbound > 1, subhalos.host_id
    halo = resolved & (subhalos.rank == 0)  # hosts' centrals, and field subhalos
    satellite = resolved & (subhalos.rank > 0)
    hosted = resolved & (host >= 0)
    hosts, member_of = np.unique(host[hosted], return_inverse=True)
    centrals = np.flatnonzero(halo & (host >= 0))
    if not np.array_equal(np.sort(host[centrals]), hosts):
        raise VelnetInputError(source, "every host halo with resolved subhalos must have exactly one "
                                       "resolved central (Rank 0) subhalo")
    host_mass = np.bincount(member_of, weights=subhalos.mass[hosted])
    mass = subhalos.mass.copy()
    mass[centrals] = host_mass[np.searchsorted(hosts, host[centrals])]
    rows = np.concatenate([np.flatnonzero(halo), np.flatnonzero(satellite)])
    if not len(rows):
        raise VelnetInputError(source, "holds no resolved subhalos (all have Nbound <= 1)")
    attrs = {**subhalos.attrs, "nhalos": int(halo.sum()), "nsubhalos": int(satellite.sum()),
             "tracers": "HBT+ halos (central subhalos with their host's bound mass, field subhalos) "
                        "and satellite subhalos (own bound mass); Nbound <= 1 left out"}
    return _catalog(source, subhalos.position[rows], subhalos.velocity[rows], mass[rows],
                    subhalos.box_size, subhalos.redshift, subhalos.cosmology, attrs)


def read_hbt_tracers(path, cosmology=None, box_size=None, redshift=None):
    """`halos_and_subhalos(read_hbt(...))`: an HBT+ snapshot as the 2024 paper's tracer catalogue."""
    return halos_and_subhalos(read_hbt(path, cosmology, box_size, redshift))


def _files(path):
    """The files of an HBT+ snapshot named by its first one."""
    with h5py.File(path, "r") as h5:
        nfiles = int(_first(h5, "NumberOfFiles")) if "NumberOfFiles" in h5 else 1
    if nfiles == 1:
        return [path]
    match = re.match(r"^(.*)\.0\.hdf5$", str(path))
    if match is None:
        raise VelnetInputError(path, f"the catalogue spans {nfiles} files; name its first "
                                     "(SubSnap_SSS.0.hdf5)")
    files = [Path(f"{match.group(1)}.{i}.hdf5") for i in range(nfiles)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise VelnetInputError(path, f"the catalogue spans {nfiles} files but {missing} are missing")
    return files


def _read_tables(files):
    """The `HBT_FIELDS` of every file's `Subhalos`, joined, and the first file's metadata (floats)."""
    rows, meta = [], None
    for name in files:
        try:
            with h5py.File(name, "r") as h5:
                meta = meta or {k: float(_first(h5, k)) for k in (
                    "NumberOfSubhalosInAllFiles", "Cosmology/OmegaM0", "Cosmology/OmegaLambda0",
                    "Cosmology/ScaleFactor")}
                table = h5["Subhalos"]
                missing = [f for f in HBT_FIELDS if f not in (table.dtype.names or ())]
                if missing:
                    raise VelnetInputError(name, f"Subhalos lacks the HBT+ columns {missing}")
                rows.append(table.fields(list(HBT_FIELDS))[...])
        except KeyError as err:
            raise VelnetInputError(name, f"is not an HBT+ SubSnap file (no {err})") from None
        except OSError as err:
            raise VelnetInputError(name, f"is not a readable HDF5 file ({err})") from None
    return np.concatenate(rows), meta


def _parameters(path):
    """The run's parameters ("Name value" lines) from Parameters.log or VER*.param near `path`."""
    for folder in (path.parent, path.parent.parent):
        candidates = [folder / "Parameters.log", *sorted(folder.glob("VER*.param"))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            params = {}
            for line in found.read_text().splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) >= 2:
                    params[words[0]] = words[1]
            return params, found
    raise VelnetInputError(path, f"no HBT+ parameter file (Parameters.log or VER*.param) in "
                                 f"{path.parent} or {path.parent.parent}: HBT+ writes it in its "
                                 "SubhaloPath; it holds the box size and units")


def _first(h5, name):
    return np.ravel(h5[name][...])[0]


def _cosmology(path, omega_m, omega_l, given):
    """The catalogue's `Cosmology`: its Omega_m (flat, checked against `given`), the rest from
    `given` (--cosmology)."""
    if abs(omega_m + omega_l - 1) > 1e-3:
        raise VelnetInputError(path, f"OmegaM0={omega_m:.6g} and OmegaLambda0={omega_l:.6g}: not "
                                     "flat, and velnet assumes a flat LCDM universe")
    if isinstance(given, str):
        if given not in COSMOLOGIES:
            raise VelnetInputError(path, f"unknown --cosmology preset {given!r}; known: "
                                         f"{sorted(COSMOLOGIES)}")
        given = COSMOLOGIES[given]
    given = given.to_dict() if isinstance(given, Cosmology) else dict(given or {})
    if "Omega_m" in given and not math.isclose(given["Omega_m"], omega_m, rel_tol=1e-4):
        raise VelnetInputError(path, f"file has Omega_m={omega_m:.6g} but --cosmology gives "
                                     f"{given['Omega_m']}")
    merged = {"Omega_m": omega_m, **given}  # HBT+ writes single precision: a given value is exact
    missing = [k for k in ("Omega_b", "h", "sigma8", "n_s") if k not in merged]
    if missing:
        raise VelnetInputError(path, f"HBT+ files lack {missing} (their HubbleParam is H(z), not h); "
                                     "give them with --cosmology (a preset such as halo2024, or JSON)")
    return Cosmology.from_dict(merged)

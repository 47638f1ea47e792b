"""Halo catalogues in and out: velnet's own HDF5 layout, other codes' columns.

A `HaloCatalog` holds the halos (and subhalos) of one box in velnet's units: positions Mpc/h,
velocities km/s (peculiar), masses Msun/h. It is saved and reloaded as velnet's HDF5 layout
(`save_halos`, `load_halos`); other codes' catalogues of halos and subhalos in HDF5, FITS or
text columns are read through a small column map (`read_catalog`); FOF halos of velnet's own
snapshots come from `data_prep.fof`. HBT+ subhalos are read by `data_prep.hbt`.
"""
import json
import math
from dataclasses import dataclass, field

import h5py
import numpy as np

from velnet.errors import VelnetInputError
from velnet.files import atomic_file, open_h5, require_file
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
    with atomic_file(path) as tmp, open_h5(tmp, "w") as h5:
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
        with open_h5(path, "r") as h5:
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
    return checked_catalog(path, columns["position"], columns["velocity"], columns["mass"], float(meta["box_size"]),
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
    return checked_catalog(path, columns["position"] * to_mpch, columns["velocity"],
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
        with open_h5(path, "r") as h5:
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


def checked_catalog(path, position, velocity, mass, box, redshift, cosmology, attrs):
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

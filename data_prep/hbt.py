"""HBT+ subhalo catalogues in velnet's units, and the 2024 halo paper's tracers made of them.

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
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from velnet.errors import VelnetInputError
from velnet.files import open_h5, require_file
from velnet.physics.cosmology import PRESETS as COSMOLOGIES
from velnet.physics.cosmology import Cosmology

from .catalogs import HaloCatalog, checked_catalog

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
        with open_h5(path, "r") as h5:
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
    return checked_catalog(source, subhalos.position[rows], subhalos.velocity[rows], mass[rows],
                    subhalos.box_size, subhalos.redshift, subhalos.cosmology, attrs)


def read_hbt_tracers(path, cosmology=None, box_size=None, redshift=None):
    """`halos_and_subhalos(read_hbt(...))`: an HBT+ snapshot as the 2024 paper's tracer catalogue."""
    return halos_and_subhalos(read_hbt(path, cosmology, box_size, redshift))


def _files(path):
    """The files of an HBT+ snapshot named by its first one."""
    with open_h5(path, "r") as h5:
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
            with open_h5(name, "r") as h5:
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

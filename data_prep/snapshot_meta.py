"""What a snapshot's header says, read and checked: the `Units` that turn a file's numbers into
Mpc/h and km/s (an HDF5 file's unit attributes among them), and the box size, scale factor and
cosmology of the header, each checked against the flags that supply or confirm it. The unit
conventions of each format are described in `data_prep.readers`.
"""
import logging
import math
from dataclasses import dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.physics.cosmology import Cosmology

log = logging.getLogger(__name__)

LENGTH_UNITS = {"Mpc/h": 1.0, "kpc/h": 1e-3}
"""Length units a Gadget or HDF5 file may use, as the factor that converts them to Mpc/h."""

MPC_CM = 3.085678e24
"""One Mpc in cm."""

PLAUSIBLE_BOX = (1.0, 2.0e4)
"""The range of box sizes, Mpc/h, taken as a cosmological box; others mean a wrong unit."""

_ALIASES = {
    "box_size": ("BoxSize",),
    "a": ("ScalingFactor", "Time", "Scale-factor"),
    "redshift": ("Redshift",),
    "Omega_m": ("OmegaM", "Om0", "Omega0", "Omega_m"),
    "Omega_L": ("OmegaLambda", "Omega_lambda", "OmegaL", "Ode0"),
    "Omega_b": ("OmegaB", "Ob0", "OmegaBaryon", "Omega_b"),
    "h": ("HubbleParam", "h"),
    "sigma8": ("Sigma8", "sigma8"),
    "n_s": ("SpectralIndex", "n_s", "ns", "PrimordialIndex"),
}
"""Header attribute names that different codes use for the same quantity."""

_HDF5_GROUPS = ("Header", "Parameters", "Units", "Cosmology")
"""Groups of an HDF5 snapshot whose attributes hold its metadata, in order of precedence."""


@dataclass(frozen=True)
class Units:
    """How a file's numbers become Mpc/h and km/s.

    Attributes:
        length: Mpc per file length unit (kpc: 1e-3).
        h_exponent: lengths are in `length` Mpc times h**h_exponent: -1 for Gadget's
            Mpc/h or kpc/h, 0 for SWIFT's plain Mpc.
        velocity: km/s per file velocity unit.
        a_exponent: the peculiar velocity is stored value x velocity x a**a_exponent (0.5
            for Gadget's u = v / sqrt(a), 0 for peculiar velocities).
        source: where the length unit comes from, in words; None when the file states none.
    """

    length: float = 1.0
    h_exponent: float = -1.0
    velocity: float = 1.0
    a_exponent: float = 0.5
    source: str = None

    def to_mpch(self, h):
        """Mpc/h per file length unit, for the Hubble parameter h."""
        return self.length * h ** (1.0 + self.h_exponent)

    @property
    def name(self):
        """The length unit in words: "Mpc/h", "kpc/h", "Mpc" (SWIFT), ..."""
        base = {1.0: "Mpc", 1e-3: "kpc"}.get(self.length, f"{self.length:.6g} Mpc")
        return base + {-1.0: "/h", 0.0: ""}.get(self.h_exponent, f" h^{self.h_exponent:g}")


BIGFILE_UNITS = Units(a_exponent=0.0, source="FastPM BigFile (always Mpc/h)")
"""FastPM writes Mpc/h and peculiar km/s."""


def hdf5_meta(path):
    """The metadata attributes (see `_HDF5_GROUPS`) and the `Units` of an HDF5 snapshot."""
    from velnet.files import open_h5

    with open_h5(path, "r") as h5:
        if "Header" not in h5 or "PartType1" not in h5:
            raise VelnetInputError(path, "HDF5 file lacks the Header group or PartType1 particles")
        header, origin = {}, {}
        for group in (g for g in _HDF5_GROUPS if g in h5):
            for key, value in h5[group].attrs.items():
                if key not in header:
                    header[key], origin[key] = np.asarray(value), group
        part = h5["PartType1"]
        scaling = {n: dict(part[n].attrs) for n in ("Coordinates", "Velocities") if n in part}
    return header, _hdf5_units(header, origin, scaling)


def _hdf5_units(header, origin, scaling):
    """`Units` from Gadget-4/AREPO or SWIFT unit attributes and the datasets' scaling attributes."""
    swift = "Unit length in cgs (U_L)" in header  # SWIFT writes its units in these words
    key = ("UnitLength_in_cm" if "UnitLength_in_cm" in header
           else "Unit length in cgs (U_L)" if swift else None)
    length = scalar_attr(header[key]) / MPC_CM if key else 1.0
    if "UnitVelocity_in_cm_per_s" in header:
        velocity = scalar_attr(header["UnitVelocity_in_cm_per_s"]) / 1e5
    elif key and "Unit time in cgs (U_t)" in header:
        velocity = scalar_attr(header[key]) / scalar_attr(header["Unit time in cgs (U_t)"]) / 1e5
    else:
        velocity = 1.0

    def exponent(dataset, gadget_name, swift_name, default):
        attrs = scaling.get(dataset, {})
        for name in (gadget_name, swift_name):
            if name in attrs:
                return scalar_attr(attrs[name])
        return default

    return Units(length=_snap(length, (1.0, 1e-3)),
                 h_exponent=exponent("Coordinates", "h_scaling", "h-scale exponent",
                                     0.0 if swift else -1.0),
                 velocity=_snap(velocity, (1.0,)),
                 a_exponent=exponent("Velocities", "a_scaling", "a-scale exponent",
                                     0.0 if swift else 0.5),
                 source=f"{key} = {scalar_attr(header[key]):.7g} in {origin[key]}" if key else None)


def scalar_attr(value):
    """The first element of an attribute, as a float."""
    return float(np.ravel(np.asarray(value, dtype=float))[0])


def _snap(value, exact, rel_tol=1e-4):
    """`value`, or the member of `exact` it equals within `rel_tol` (unit constants differ in
    their last digits between codes)."""
    return next((e for e in exact if math.isclose(value, e, rel_tol=rel_tol)), value)


def hdf5_total(header):
    if "NumPart_Total" not in header:
        return None
    total = int(np.ravel(header["NumPart_Total"])[1])
    if "NumPart_Total_HighWord" in header:
        total += int(np.ravel(header["NumPart_Total_HighWord"])[1]) << 32
    return total


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


def resolve_length_unit(path, units, given, h):
    """Mpc/h per file length unit and its name: `given` (--length-unit) over the file's."""
    if given is None:
        return units.to_mpch(h), units.name
    if units is BIGFILE_UNITS and given != "Mpc/h":
        raise VelnetInputError(path, f"is a FastPM BigFile, always in Mpc/h; drop --length-unit {given}")
    if units.source is not None and units.name != given:
        log.warning("%s: --length-unit %s overrides the file's %s (%s)", path, given, units.name,
                    units.source)
    return LENGTH_UNITS[given], given


def checked_box_size(path, header, given, to_mpch, unit):
    """Box side in Mpc/h: the file's, checked against `given` (--box-size) and for plausibility."""
    found = _header_value(header, "box_size")
    if isinstance(found, tuple):
        raise VelnetInputError(path, f"box is not cubic: BoxSize = {found}")
    if found is None:
        if given is None:
            raise VelnetInputError(path, "header has no BoxSize; give it with --box-size (Mpc/h)")
        box = float(given)
    else:
        box = found * to_mpch
        if given is not None and not math.isclose(box, given, rel_tol=1e-6):
            hint = ""
            if math.isclose(box, 1000 * given, rel_tol=1e-6):
                hint = " (is the file in kpc/h? pass --length-unit kpc/h)"
            elif math.isclose(1000 * box, given, rel_tol=1e-6):
                hint = " (is the file in Mpc/h? pass --length-unit Mpc/h)"
            raise VelnetInputError(path, f"box size {box:g} Mpc/h in the file (BoxSize = {found:g} "
                                         f"{unit}) differs from --box-size {given:g}{hint}")
    lo, hi = PLAUSIBLE_BOX
    if not lo <= box <= hi:
        other = "kpc/h" if box > hi else "Mpc/h"
        raise VelnetInputError(path, f"box size {box:g} Mpc/h (BoxSize read in {unit}) is implausible "
                                     f"for a cosmological box ({lo:g} to {hi:g} Mpc/h): the file is "
                                     f"probably in {other}; pass --length-unit {other}")
    return box


def checked_scale_factor(path, header, given_z):
    a = _header_value(header, "a")
    if a is None:
        z = _header_value(header, "redshift")
        a = None if z is None else 1.0 / (1.0 + z)
    if a is None:
        if given_z is None:
            raise VelnetInputError(path, "header has no scale factor or redshift; give it with "
                                         "--redshift")
        return 1.0 / (1.0 + given_z)
    if given_z is not None and abs((1.0 / a - 1.0) - given_z) > 1e-4 * (1.0 + given_z):
        raise VelnetInputError(path, f"snapshot is at z={1.0 / a - 1.0:.6g}, not --redshift {given_z:g}")
    return a


def merged_cosmology(path, header, given):
    """Merge the header's cosmological parameters with those given; they must agree."""
    names = ("Omega_m", "Omega_b", "h", "sigma8", "n_s")
    found = {k: v for k in names if (v := _header_value(header, k)) is not None}
    omega_l = _header_value(header, "Omega_L")
    if omega_l is not None and "Omega_m" in found and abs(found["Omega_m"] + omega_l - 1.0) > 1e-3:
        raise VelnetInputError(path, f"file has Omega_m={found['Omega_m']:.6g} and "
                                     f"Omega_Lambda={omega_l:.6g}: not flat, and velnet assumes a flat "
                                     "LCDM universe")
    given = given.to_dict() if isinstance(given, Cosmology) else dict(given or {})
    unknown = set(given) - set(names)
    if unknown:
        raise VelnetInputError(path, f"--cosmology has unknown parameters {sorted(unknown)}; "
                                     f"known: {list(names)}")
    for key, value in found.items():
        if key in given and not math.isclose(value, given[key], rel_tol=1e-4):
            raise VelnetInputError(path, f"file has {key}={value:.6g} but --cosmology "
                                         f"gives {given[key]}")
    merged = {**given, **found}
    missing = [k for k in names if k not in merged]
    if missing:
        raise VelnetInputError(path, f"file lacks cosmological parameters {missing}; give them with "
                                     f"--cosmology (a preset such as wu2021, or JSON)")
    return Cosmology.from_dict(merged)

"""Physics checks at the door: fields, meshes, boxes and cosmologies a step can trust.

A file can be well-formed and still wrong: a density contrast stored where rho/rho_mean is
expected, a vector stored as the density, a mesh the machine cannot hold. Each check raises
`VelnetInputError` naming the file (or the setting) and what to do, before any output is
written.
"""
import math
import os

import numpy as np

from velnet.errors import VelnetInputError

SCALARS = ("density", "ln_density", "linear_density_s")
"""Field names (besides the halo channels "halos_s_<j>") that must be scalars (N, N, N)."""
VECTORS = ("velocity", "momentum", "linear_velocity_s", "linear_momentum_s")
"""Field names that must be vectors (N, N, N, 3)."""
DENSITY_MEAN = (0.5, 2.0)
"""Range of the mean of a density rho/rho_mean (1 by definition; CIC of a box gives exactly 1)."""
SPEED_OF_LIGHT = 299792.458
"""km/s: no peculiar velocity reaches it."""
PAINT_BYTES_PER_CELL = 160
"""Memory painting takes per mesh cell: four float64 meshes, nbodykit's buffers, the float32 fields."""


def check_kind(name, value, path=None):
    """Raise unless a field of a known name has its kind: scalar `(N, N, N)` or vector `(N, N, N, 3)`.

    Args:
        name: the field's name (unknown names are not checked).
        value: its array.
        path: the file it came from, named in the error.
    """
    shape = np.shape(value)
    if (name in SCALARS or name.startswith("halos_s_")) and len(shape) != 3:
        raise VelnetInputError(path, f"field {name!r} must be a scalar (N, N, N); it is {shape}")
    if name in VECTORS and (len(shape) != 4 or shape[-1] != 3):
        raise VelnetInputError(path, f"field {name!r} must be a vector (N, N, N, 3); it is {shape}")


def check_density(field, path=None):
    """Raise unless `field` is a density rho/rho_mean: a finite, non-negative scalar with mean about 1.

    Args:
        field: the density `Field`.
        path: the file named in the error (default the field's attrs "path").
    """
    path, value = path or field.attrs.get("path"), field.value
    check_kind("density", value, path)
    if not np.all(np.isfinite(value)):
        raise VelnetInputError(path, "the density holds NaN or infinite values")
    low = float(value.min())
    if low < 0:
        cells = int(np.count_nonzero(value < 0))
        raise VelnetInputError(path, f"the density must be rho/rho_mean >= 0; {cells} cell(s) are negative "
                                     f"(lowest {low:.4g}): is it a density contrast delta = rho/rho_mean - 1? "
                                     "Store 1 + delta")
    mean = float(value.mean(dtype=np.float64))
    if getattr(field, "comm", None) is not None:  # this rank's x-slab: the mean of the whole box
        total, cells = field.comm.allreduce(np.array([mean * value.size, value.size], np.float64))
        mean = total / cells
    if not DENSITY_MEAN[0] <= mean <= DENSITY_MEAN[1]:
        raise VelnetInputError(path, f"the density must be rho/rho_mean, with mean about 1; its mean is {mean:.4g}: "
                                     "divide it by its mean (a mass or number per cell, or physical units?)")


def check_velocity(field, path=None):
    """Raise unless `field` is a finite vector velocity in km/s, below the speed of light (`path` as
    `check_density`)."""
    path, value = path or field.attrs.get("path"), field.value
    check_kind("velocity", value, path)
    if not all(np.isfinite(value[i:i + 8]).all() for i in range(0, len(value), 8)):  # a few planes at a time
        raise VelnetInputError(path, "the velocity holds NaN or infinite values")
    fastest = max((float(np.sqrt((value[i:i + 8].astype(np.float64) ** 2).sum(-1).max()))
                   for i in range(0, len(value), 8)), default=0.0)
    if fastest >= SPEED_OF_LIGHT:
        raise VelnetInputError(path, f"the velocity reaches {fastest:.4g} km/s, beyond the speed of light: "
                                     "it must be a peculiar velocity in km/s (in m/s or cm/s?)")


def check_box_size(box_size, path=None):
    """Raise unless a box side (Mpc/h) is a finite positive number; returns it as a float."""
    try:
        box = float(box_size)
    except (TypeError, ValueError):
        box = math.nan
    if not (math.isfinite(box) and box > 0):
        raise VelnetInputError(path, f"box size must be a positive number of Mpc/h. Received: {box_size!r}")
    return box


def check_mesh(nmesh, bytes_per_cell=PAINT_BYTES_PER_CELL, name="nmesh"):
    """Raise unless `nmesh` cells per side is an integer >= 2 whose mesh fits in this machine's memory.

    Args:
        nmesh: cells per side.
        bytes_per_cell: memory the step needs per cell of the mesh.
        name: the setting, named in the error (the flag is --<name>).

    Returns:
        `nmesh` as an int.
    """
    if isinstance(nmesh, bool) or not isinstance(nmesh, (int, np.integer)) or nmesh < 2:
        raise VelnetInputError(None, f"--{name} must be an integer of at least 2 cells per side. "
                                     f"Received: {name}={nmesh!r}")
    need, have = int(nmesh) ** 3 * bytes_per_cell, physical_memory()
    if need > have:
        largest = int((have / bytes_per_cell) ** (1 / 3))
        raise VelnetInputError(None, f"--{name} {nmesh} needs about {need / 2**30:.3g} GiB, more than this "
                                     f"machine's {have / 2**30:.3g} GiB: use at most about {largest}")
    return int(nmesh)


def physical_memory():
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_cosmology(values, path=None):
    """Raise unless a cosmology dict holds flat LCDM parameters a universe can have.

    Args:
        values: dict with Omega_m, Omega_b, h, sigma8, n_s.
        path: the file it came from.

    Returns:
        The values as floats.
    """
    keys = ("Omega_m", "Omega_b", "h", "sigma8", "n_s")
    try:
        out = {k: float(values[k]) for k in keys}
    except (KeyError, TypeError, ValueError):
        raise VelnetInputError(path, f"cosmology must be a dict of numbers {list(keys)}. "
                                     f"Received: {values!r}") from None
    sane = (all(math.isfinite(v) for v in out.values()) and 0 < out["Omega_m"] <= 1
            and 0 <= out["Omega_b"] <= out["Omega_m"] and 0 < out["h"] < 2 and out["sigma8"] > 0 and out["n_s"] > 0)
    if not sane:
        raise VelnetInputError(path, f"cosmology {out} is not a flat LCDM one (0 < Omega_b <= Omega_m <= 1, "
                                     "0 < h < 2, sigma8 > 0, n_s > 0)")
    return out

"""Classical velocity estimators from the density, and their optimal combination per |k|.

Every estimator turns rho/rho_mean into a dimensionless source s with div v = -f a H s,
so that v(k) = i f a H k s(k) / k^2 (curl-free, as `velnet.physics.linear.velocity_from_source`):

- "linear": s = delta, linear perturbation theory.
- "bernardeau": s = 1.5 [(1 + delta)^(2/3) - 1], Bernardeau's (1992) non-linear relation
  between density and velocity divergence; it tends to delta for small delta.
- "2lpt-log": second-order Lagrangian perturbation theory (2LPT) on the log-density
  linearisation delta_L = ln(rho/rho_mean) - <ln(rho/rho_mean)> (after Kitaura et al.
  2012): with phi_1 solving lap phi_1 = delta_L and lap phi_2 = sum_{i<j} [phi_1,ii
  phi_1,jj - phi_1,ij^2], v = a H (-f_1 grad phi_1 + f_2 D_2 grad phi_2), D_2 = -3/7
  Omega_m(a)^(-1/143), f_2 = 2 Omega_m(a)^(6/11); so s = delta_L - (f_2 D_2 / f_1) phi_2-source.
  Densities below `LOG_FLOOR` are raised to it before the logarithm (CIC leaves empty cells).

Each may first smooth delta with a Gaussian of radius R (Mpc/h).

`ClassicalEstimator` sums the velocities of several estimators with real weights per bin
of |k|, fitted by least squares on training boxes (the weighted sum is the best isotropic
filter of the set). The bins are absolute (h/Mpc, fixed by the cell size), so the weights
apply to boxes of any size with the same cells. Bins with fewer than `min_modes` training
modes (the largest scales, which small training boxes lack) keep the first estimator
alone (weight 1, the others 0), linear theory in the default set. The fitted estimator
saves to a JSON file that `velnet predict` applies like a trained network.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_density
from velnet.fields.mesh import mesh_of
from velnet.files import read_json_object, write_json
from velnet.physics.linear import fit_smoothing, linear_momentum, velocity_from_source

FORMAT = "velnet classical estimator"
ESTIMATORS = ("linear", "bernardeau", "2lpt-log")
DEFAULT_SET = ({"name": "linear", "smoothing": 0.0}, {"name": "bernardeau", "smoothing": 0.0},
               {"name": "2lpt-log", "smoothing": 0.0})
"""The combination velnet fits by default: the best on the validation box of experiments.classical."""
LOG_FLOOR = 0.01
"""rho/rho_mean below this is raised to it before the logarithm of "2lpt-log"."""


def _smoothed_density(density, smoothing):
    """rho/rho_mean, float32 (the field's own array when not smoothed), Gaussian-smoothed at `smoothing`
    Mpc/h (0: as is)."""
    rho = np.asarray(density.value, dtype=np.float32)
    if smoothing <= 0:
        return rho
    mesh = mesh_of(density)
    _, _, k2 = mesh.wavevectors()
    modes = mesh.rfft(rho)
    modes *= np.exp(np.float32(-0.5 * smoothing**2) * k2)
    del k2
    return np.maximum(mesh.irfft(modes), 0.0)


def _log_density(density, rho):
    """delta_L = ln(rho/rho_mean) - <ln(rho/rho_mean)> (rho raised to LOG_FLOOR first), float32."""
    out = np.log(np.maximum(rho, np.float32(LOG_FLOOR)))
    out -= np.float32(mesh_of(density).sum(np.sum(out, dtype=np.float64)) / density.nmesh**3)
    return out


def _second_order_source(delta_k, mesh):
    """sum_{i<j} [phi_ii phi_jj - phi_ij^2] for lap phi = delta, float32 planes.

    Args:
        delta_k: `Mesh.rfft` of delta (overwritten).
        mesh: its `velnet.fields.mesh.Mesh`.
    """
    full, odd, k2 = mesh.wavevectors()
    phi_k = delta_k
    phi_k *= np.float32(-1) / np.where(k2 > 0, k2, np.float32(1))
    if mesh.holds_zero_mode:
        phi_k[0, 0, 0] = 0.0
    del k2
    buffer = np.empty_like(phi_k)

    def second(i, j):
        ki, kj = (full[i], full[j]) if i == j else (odd[i], odd[j])
        np.multiply(phi_k, -ki * kj, out=buffer)
        return mesh.irfft(buffer)

    d0, d1 = second(0, 0), second(1, 1)
    out = d0 * d1
    d0 += d1
    del d1
    d2 = second(2, 2)
    d2 *= d0
    out += d2
    del d0, d2
    for i, j in ((0, 1), (0, 2), (1, 2)):
        dij = second(i, j)
        dij *= dij
        out -= dij
    return out


def _omega_m(cosmology, a):
    return cosmology.Omega_m * a**-3 / cosmology.efunc(a) ** 2


def source(density, name, smoothing=0.0):
    """The real-space source s of one estimator (div v = -f a H s).

    Args:
        density: scalar `Field` of rho/rho_mean with redshift and cosmology.
        name: one of `ESTIMATORS`.
        smoothing: Gaussian radius applied to delta first, Mpc/h.

    Returns:
        float32 `(N, N, N)` (this rank's x-planes under MPI).

    Raises:
        VelnetInputError: an unknown estimator or a negative radius.
    """
    if name not in ESTIMATORS:
        raise VelnetInputError(None, f"unknown classical estimator {name!r}; known: {list(ESTIMATORS)}")
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise VelnetInputError(None, f"smoothing must be a radius >= 0 Mpc/h. Received: smoothing={smoothing}")
    rho = _smoothed_density(density, smoothing)
    if name == "linear":
        return rho - np.float32(1)
    if name == "bernardeau":
        out = np.cbrt(rho)
        out *= out
        out -= np.float32(1)
        out *= np.float32(1.5)
        return out
    a = 1.0 / (1.0 + density.redshift)
    omega = _omega_m(density.cosmology, a)
    f1 = density.cosmology.growth_rate(a)
    f2_d2 = -3.0 / 7.0 * omega ** (-1.0 / 143.0) * 2.0 * omega ** (6.0 / 11.0)
    mesh = mesh_of(density)
    out = _second_order_source(mesh.rfft(_log_density(density, rho)), mesh)  # (delta_L made twice: less memory)
    out *= np.float32(-f2_d2 / f1)
    out += _log_density(density, rho)
    return out


def estimator_velocity(density, name, smoothing=0.0):
    """One estimator's velocity as a vector `Field` (km/s, float32)."""
    v = velocity_from_source(mesh_of(density).rfft(source(density, name, smoothing)), density)
    out = density.with_value(v, "velocity")
    out.attrs = {"method": name, "smoothing_mpc_h": float(smoothing)}
    return out


def absolute_kedges(cell_size, n_bins=64):
    """`n_bins + 1` evenly spaced |k| edges (h/Mpc) from 0 to the corner of the grid, sqrt(3) pi / cell."""
    return np.linspace(0.0, math.sqrt(3) * math.pi / cell_size * (1 + 1e-9), n_bins + 1)


def _check_estimators(estimators):
    out = []
    for e in estimators:
        if not isinstance(e, dict) or set(e) - {"name", "smoothing"} or "name" not in e:
            raise VelnetInputError(None, f"an estimator is {{'name': ..., 'smoothing': R}}. Received: {e!r}")
        if e["name"] not in ESTIMATORS:
            raise VelnetInputError(None, f"unknown classical estimator {e['name']!r}; known: {list(ESTIMATORS)}")
        out.append({"name": str(e["name"]), "smoothing": float(e.get("smoothing", 0.0))})
    if not out:
        raise VelnetInputError(None, "a classical combination needs at least one estimator")
    return out


@dataclass
class ClassicalEstimator:
    """Estimator velocities summed with weights per |k| bin.

    Attributes:
        estimators: list of {"name": one of `ESTIMATORS`, "smoothing": R in Mpc/h}.
        kedges: `(n_bins + 1,)` |k| bin edges, h/Mpc.
        weights: `(n_bins, n_estimators)` weight of each estimator's velocity per bin.
        cell_size: Mpc/h, the cells the weights were fitted on (and apply to).
        modes: `(n_bins,)` training modes per bin (both k and -k counted, as nbodykit does).
        attrs: what it was fitted on (fields files, cosmology, redshift, the smoothing radius
            of the smoothed linear baseline, ...).
    """

    estimators: list
    kedges: np.ndarray
    weights: np.ndarray
    cell_size: float
    modes: np.ndarray
    attrs: dict = field(default_factory=dict)

    target_name = "velocity"

    @property
    def label(self):
        """A short name, e.g. "linear + bernardeau"."""
        return " + ".join(e["name"] + (f" R={e['smoothing']:g}" if e["smoothing"] else "")
                          for e in self.estimators)

    def velocity(self, density):
        """The combined velocity of a box.

        Args:
            density: scalar `Field` of rho/rho_mean on cells of `cell_size`.

        Returns:
            vector `Field` "velocity", km/s, `(N, N, N, 3)` float32.

        Raises:
            VelnetInputError: the density is not rho/rho_mean (`check_density`), or its cell size
                differs from the fitted one.
        """
        check_density(density)
        if not np.isclose(density.cell_size, self.cell_size, rtol=1e-3):
            raise VelnetInputError(
                density.attrs.get("path"),
                f"cell size {density.cell_size:.4g} Mpc/h (box {density.box_size:g} / {density.nmesh}) differs "
                f"from the {self.cell_size:.4g} Mpc/h the classical estimator was fitted on")
        mesh = mesh_of(density)
        index = mesh.bin_index(self.kedges)
        weights = self.weights.astype(np.float32)
        total = np.zeros(mesh.kshape, np.complex64)
        for i, e in enumerate(self.estimators):
            modes = mesh.rfft(source(density, e["name"], e["smoothing"]))
            for x in range(len(modes)):  # a plane at a time: no temporary the size of the box
                modes[x] *= weights[index[x], i]
            total += modes
            del modes
        out = density.with_value(velocity_from_source(total, density), "velocity")
        out.attrs = {"method": f"classical: {self.label}, weights per |k|"}
        return out

    def prediction(self, density):
        """{"velocity", "momentum"} of a box; momentum = (rho/rho_mean) v."""
        velocity = self.velocity(density)
        return {"velocity": velocity, "momentum": linear_momentum(density, velocity)}

    @classmethod
    def fit(cls, densities, velocities, estimators=DEFAULT_SET, n_bins=64, min_modes=20,
            smoothing_radii=(0, 1, 2, 3, 4, 5, 6, 8)):
        """Least-squares weights per |k| bin on training boxes.

        In each bin with at least `min_modes` training modes the weights minimise the summed
        squared velocity error over those modes; the normal equations come from nbodykit
        cross power spectra of the estimators' velocities with each other and with the
        truth. Other bins keep the first estimator alone.

        Args:
            densities: list of scalar rho/rho_mean `Field`s, all with the same cell size.
            velocities: list of the true velocity `Field`s (km/s), one per density.
            estimators: list of {"name", "smoothing"}; the first is the large-scale limit.
            n_bins: |k| bins from 0 to the grid's corner.
            min_modes: fewest training modes (k and -k both counted) for a fitted bin.
            smoothing_radii: Gaussian radii (Mpc/h) among which the smoothed linear
                baseline's is fitted too (stored in attrs["linear_smoothing"]); empty: none.

        Raises:
            VelnetInputError: empty or unequal lists, mismatched meshes, or cell sizes that
                differ between boxes.
        """
        from velnet.statistics.spectra import fourier, power

        estimators = _check_estimators(estimators)
        if not densities or len(densities) != len(velocities):
            raise VelnetInputError(None, f"the fit needs equally many densities and velocities, at least one; "
                                         f"received {len(densities)} and {len(velocities)}")
        cell = densities[0].cell_size
        kedges = absolute_kedges(cell, n_bins)
        m = len(estimators)
        normal, rhs, modes = np.zeros((n_bins, m, m)), np.zeros((n_bins, m)), np.zeros(n_bins)
        for density, truth in zip(densities, velocities):
            _check_box(density, truth, cell)
            own = [fourier(estimator_velocity(density, e["name"], e["smoothing"])) for e in estimators]
            true_modes = fourier(truth)
            for i in range(m):
                cross = power(own[i], true_modes, kedges)
                count = cross["modes"]
                rhs[:, i] += np.nan_to_num(cross["power"]) * count
                for j in range(i, m):
                    pij = np.nan_to_num(power(own[i], own[j], kedges)["power"]) * count
                    normal[:, i, j] += pij
                    normal[:, j, i] += pij if j != i else 0.0
            modes += count
        limit = np.zeros(m)
        limit[0] = 1.0
        weights = np.tile(limit, (n_bins, 1))
        for b in np.flatnonzero((modes >= min_modes) & (normal[:, 0, 0] > 0)):  # (k = 0 carries no velocity)
            weights[b] = np.linalg.lstsq(normal[b], rhs[b], rcond=None)[0]
        attrs = {"fitted_on": [str(d.attrs.get("path", "")) for d in densities],
                 "cosmology": densities[0].cosmology.to_dict(), "redshift": float(densities[0].redshift),
                 "min_modes": int(min_modes)}
        if len(smoothing_radii):
            radius, errors = fit_smoothing(densities, velocities, smoothing_radii)
            attrs["linear_smoothing"] = {"radius": radius, "radii": [float(r) for r in smoothing_radii],
                                         "rms_error_km_s": [float(e) ** 0.5 for e in errors]}
        return cls(estimators, kedges, weights, float(cell), modes, attrs)

    def to_dict(self):
        return {"format": FORMAT, "target_name": self.target_name, "estimators": self.estimators,
                "cell_size": self.cell_size, "kedges": self.kedges.tolist(), "weights": self.weights.tolist(),
                "modes": self.modes.tolist(), "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d, path=None):
        """The estimator of `to_dict`'s output; VelnetInputError naming `path` if malformed."""
        try:
            if d.get("format") != FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, not {FORMAT!r}")
            kedges, weights = np.asarray(d["kedges"], float), np.asarray(d["weights"], float)
            estimators = _check_estimators(d["estimators"])
            if weights.shape != (len(kedges) - 1, len(estimators)) or not np.all(np.isfinite(weights)):
                raise ValueError(f"weights of shape {weights.shape} for {len(kedges) - 1} bins and "
                                 f"{len(estimators)} estimators (or not finite)")
            return cls(estimators, kedges, weights, float(d["cell_size"]), np.asarray(d["modes"], float),
                       dict(d.get("attrs", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problem = err.problem if isinstance(err, VelnetInputError) else str(err)
            raise VelnetInputError(path, f"not a velnet classical estimator file ({problem})") from None

    def save(self, path):
        """Write the estimator as JSON, atomically; returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        """Read a file written by `save`.

        Raises:
            VelnetInputError: the file is missing, not JSON or not such a file.
        """
        return cls.from_dict(read_json_object(path, "classical estimator"), path)


def _check_box(density, truth, cell):
    source_path = density.attrs.get("path")
    check_density(density)
    if not truth.is_vector or truth.nmesh != density.nmesh \
            or not np.isclose(truth.box_size, density.box_size):
        raise VelnetInputError(source_path, "each box needs a scalar density and a vector velocity on the same mesh")
    if not np.isclose(density.cell_size, cell, rtol=1e-3):
        raise VelnetInputError(source_path, f"cell size {density.cell_size:.4g} Mpc/h differs from the first "
                                            f"box's {cell:.4g} Mpc/h: fit boxes with equal cells")

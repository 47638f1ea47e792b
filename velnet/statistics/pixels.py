"""Per-cell statistics of a reconstructed field against the truth, for both papers.

Wu et al. 2021 (eq. 2-9, `pixel_statistics`): mean and standard deviation over cells of
|v|, |v_pred - v_true|, |cos theta| between the predicted and true velocity, and
|p| = |v| (1 + delta), the magnitude of the momentum field, in the whole box or in the
densest slices (`densest_slabs`). The 2024 halo paper: 1 - cos phi (`cosine`) and eq. 10,
the correlation coefficient C_r and relative deviations R (`agreement`).
"""
from dataclasses import asdict, dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.physics.linear import curl, divergence
from velnet.statistics.spectra import check_pair

QUANTITIES = {
    "abs_v": "|v| (km/s)",
    "theta_v": "theta_v = div v (km/s per Mpc/h)",
    "p": "p = |v| (1 + delta) (km/s)",
    "curl_p": "Theta_p = curl p (km/s per Mpc/h)",
}
"""The fields of the paper's Tables 1-4, by key, with their units."""


def cosine(a, b):
    """Cosine of the angle between two `(..., 3)` vector arrays, per cell; NaN where either is zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(a * b, axis=-1) / (magnitude(a) * magnitude(b))


def magnitude(value):
    """Norm over the last axis of `(..., 3)` vectors, float64."""
    return np.sqrt(np.sum(np.asarray(value, dtype=np.float64) ** 2, axis=-1))


def derived_fields(velocity, momentum):
    """The fields of the paper's Tables 1-4 from a velocity and a momentum field.

    Args:
        velocity: vector `Field`, km/s.
        momentum: vector `Field` (rho/rho_mean) v, km/s.

    Returns:
        dict (keys of `QUANTITIES`) -> `Field`: "abs_v" |v|, "theta_v" div v,
        "p" |momentum| = |v| (1 + delta), "curl_p" curl of the momentum (vector).
    """
    check_pair(velocity, momentum)
    return {
        "abs_v": velocity.with_value(magnitude(velocity.value).astype(np.float32), "abs_v"),
        "theta_v": velocity.with_value(divergence(velocity), "theta_v"),
        "p": momentum.with_value(magnitude(momentum.value).astype(np.float32), "p"),
        "curl_p": momentum.with_value(curl(momentum), "curl_p"),
    }


def mean_std(*arrays):
    """Mean and standard deviation of the finite values of one or more arrays, pooled."""
    values = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
    values = values[np.isfinite(values)]
    return {"mean": float(values.mean()), "std": float(values.std())}


def pixel_statistics(velocity, momentum, truth_velocity=None, region=None, truth_momentum=None):
    """Mean and standard deviation over cells (paper eq. 2-9).

    Args:
        velocity: vector `Field` (km/s) being described.
        momentum: its momentum `Field` (km/s); |p| = |v| (1 + delta).
        truth_velocity: the true velocity `Field`; adds the residual and angle statistics.
        region: index into the first three axes (e.g. `Slab.index()`); default all cells.
        truth_momentum: the true momentum `Field`; adds the momentum residual.

    Returns:
        dict name -> {"mean", "std"}: "abs_v" |v|, "abs_p" |p|, and with a truth
        "abs_v_residual" |v - v_true|, "abs_cos_theta" |cos theta| and "cos_theta"
        (cells where either velocity is zero are left out of the angles); with the true
        momentum "abs_p_residual" |p - p_true| (vectors).
    """
    region = region if region is not None else (slice(None),) * 3
    v = np.asarray(velocity.value[region], dtype=np.float64)
    out = {"abs_v": mean_std(magnitude(v)), "abs_p": mean_std(magnitude(momentum.value[region]))}
    if truth_velocity is not None:
        check_pair(truth_velocity, velocity)
        t = np.asarray(truth_velocity.value[region], dtype=np.float64)
        cos = cosine(v, t)
        out.update(abs_v_residual=mean_std(magnitude(v - t)), abs_cos_theta=mean_std(np.abs(cos)),
                   cos_theta=mean_std(cos))
    if truth_momentum is not None:
        check_pair(truth_momentum, momentum)
        residual = (np.asarray(momentum.value[region], dtype=np.float64)
                    - np.asarray(truth_momentum.value[region], dtype=np.float64))
        out["abs_p_residual"] = mean_std(magnitude(residual))
    return out


def agreement(pred, truth):
    """Eq. 10 of the 2024 paper between a predicted and a true field (pixel by pixel).

    Args:
        pred: array of any shape (a vector field's components all count as pixels).
        truth: array of the same shape.

    Returns:
        dict: "C_r" (correlation coefficient, ddof 1), "R_std" (sigma_pred / sigma_true - 1)
        and "R_mean" (mean_pred / mean_true - 1).

    Raises:
        VelnetInputError: the shapes differ.
    """
    f = np.asarray(pred, dtype=np.float64).ravel()
    g = np.asarray(truth, dtype=np.float64).ravel()
    if f.shape != g.shape:
        raise VelnetInputError(None, f"prediction and truth differ in shape: {np.shape(pred)} and {np.shape(truth)}")
    sf, sg = f.std(ddof=1), g.std(ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c_r = np.sum((f - f.mean()) * (g - g.mean())) / ((f.size - 1) * sf * sg)
        return {"C_r": float(c_r), "R_std": float(sf / sg - 1), "R_mean": float(f.mean() / g.mean() - 1)}


@dataclass
class Slab:
    """A periodic window of the mesh: `shape` cells from cell `start`, wrapping at the faces.

    Attributes:
        start: first cell (i, j, k).
        shape: cells along each axis.
        mean_density: mean rho/rho_mean inside.
        cell_size: Mpc/h.
    """

    start: tuple
    shape: tuple
    mean_density: float
    cell_size: float

    def index(self, nmesh):
        """Open-mesh index selecting the slab's cells from an `(N, N, N, ...)` array."""
        return np.ix_(*[(s + np.arange(n)) % nmesh for s, n in zip(self.start, self.shape)])

    def to_dict(self):
        return dict(asdict(self), start=[int(s) for s in self.start], shape=[int(s) for s in self.shape],
                    size_mpc_h=[n * self.cell_size for n in self.shape])


def _window_sums(value, shape):
    """Sum of `value` over every periodic window of `shape` cells, indexed by its first cell."""
    out = np.asarray(value, dtype=np.float64)
    for axis, width in enumerate(shape):
        padded = np.concatenate([out, np.take(out, np.arange(width - 1), axis=axis)], axis=axis)
        cums = np.cumsum(padded, axis=axis)
        zero = np.zeros_like(np.take(cums, [0], axis=axis))
        cums = np.concatenate([zero, cums], axis=axis)
        n = out.shape[axis]
        out = np.take(cums, np.arange(width, width + n), axis=axis) - np.take(cums, np.arange(n), axis=axis)
    return out


def densest_slabs(density, size=40.0, thickness=2.0, count=3, axis=2):
    """The paper's slices: the `count` densest non-overlapping slabs of size x size x thickness.

    Every periodic window of round(size / cell) x round(size / cell) cells across and
    round(thickness / cell) (at least 1) cells along `axis` is ranked by its mean density;
    the densest is taken, every window whose footprint in the plane overlaps it (at any
    depth) is discarded, and so on, so the slabs show distinct regions.

    Args:
        density: scalar `Field` rho/rho_mean.
        size: side of the slab in the plane, Mpc/h.
        thickness: depth along `axis`, Mpc/h.
        count: number of slabs.
        axis: the axis the slab is thin along (its plane holds the other two).

    Returns:
        list of `Slab`, densest first.

    Raises:
        VelnetInputError: the box is smaller than a slab or cannot hold `count` of them.
    """
    cells = max(1, round(size / density.cell_size))
    depth = max(1, round(thickness / density.cell_size))
    shape = [cells] * 3
    shape[axis] = depth
    if max(shape) > density.nmesh:
        raise VelnetInputError(density.attrs.get("source"),
                               f"a {size} Mpc/h slice does not fit in a {density.box_size} Mpc/h box")
    volume = float(np.prod(shape))
    score = _window_sums(density.value, shape) / volume
    out = []
    for _ in range(count):
        start = np.unravel_index(np.argmax(score), score.shape)
        if not np.isfinite(score[start]):
            raise VelnetInputError(density.attrs.get("source"),
                                   f"the box holds fewer than {count} non-overlapping slices")
        out.append(Slab(tuple(int(s) for s in start), tuple(shape), float(score[start]), density.cell_size))
        reach = [(s + np.arange(-w + 1, w)) % density.nmesh for s, w in zip(start, shape)]
        reach[axis] = np.arange(density.nmesh)
        score[np.ix_(*reach)] = -np.inf
    return out

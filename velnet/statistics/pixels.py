"""Per-cell statistics of a reconstructed field against the truth, for both papers.

Wu et al. 2021 (eq. 2-9, `pixel_statistics`): mean and standard deviation over cells of
|v|, |v_pred - v_true|, |cos theta| between the predicted and true velocity, and
|p| = |v| (1 + delta), the magnitude of the momentum field, in the whole box or in the
densest slices (`densest_slabs`). The 2024 halo paper: 1 - cos phi (`cosine`) and eq. 10,
the correlation coefficient C_r and relative deviations R (`agreement`).

Wu et al.'s statistics take fields cut into x-slabs over MPI ranks too: moments are gathered
a few planes at a time (`Moments`) and merged over the ranks, and the slices' windows reach
across them.
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.mesh import gather_planes
from velnet.physics.linear import curl, divergence
from velnet.statistics.spectra import check_pair

CHUNK = 8
"""x-planes per step of the per-cell statistics (float64 temporaries of that size only)."""

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


def derived_field(name, velocity=None, momentum=None):
    """One field of the paper's Tables 1-4, float32: "abs_v" |v| and "theta_v" div v of the velocity
    `Field` (km/s), "p" |momentum| = |v| (1 + delta) and "curl_p" curl of the momentum `Field`."""
    if name in ("abs_v", "p"):
        field = velocity if name == "abs_v" else momentum
        value = np.empty(field.value.shape[:3], np.float32)
        for x in range(len(value)):
            value[x] = magnitude(field.value[x])
        return field.with_value(value, name)
    if name == "theta_v":
        return velocity.with_value(divergence(velocity), name)
    return momentum.with_value(curl(momentum), name)


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
    return {name: derived_field(name, velocity, momentum) for name in QUANTITIES}


class Moments:
    """Count, mean and summed squared deviation of values, added a chunk at a time and merged over
    MPI ranks (the pairwise update of Chan, Golub and LeVeque): the mean and standard deviation of
    values never all held at once."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values):
        """Add the finite values of an array; returns self."""
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            mean = values.mean()
            self._merge(values.size, mean, np.sum((values - mean) ** 2))
        return self

    def _merge(self, count, mean, m2):
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta**2 * self.count * count / total
        self.count = total

    def result(self, comm=None):
        """{"mean", "std"} of everything added (on every rank of `comm`, collective); NaN for none."""
        merged = Moments()
        for part in [(self.count, self.mean, self.m2)] if comm is None else comm.allgather(
                (self.count, self.mean, self.m2)):
            if part[0]:
                merged._merge(*part)
        if not merged.count:
            return {"mean": math.nan, "std": math.nan}
        return {"mean": float(merged.mean), "std": float(np.sqrt(merged.m2 / merged.count))}


def mean_std(*arrays):
    """Mean and standard deviation of the finite values of one or more arrays, pooled."""
    moments = Moments()
    for array in arrays:
        moments.add(array)
    return moments.result()


def pixel_statistics(velocity, momentum, truth_velocity=None, region=None, truth_momentum=None):
    """Mean and standard deviation over cells (paper eq. 2-9).

    Args:
        velocity: vector `Field` (km/s) being described.
        momentum: its momentum `Field` (km/s); |p| = |v| (1 + delta).
        truth_velocity: the true velocity `Field`; adds the residual and angle statistics.
        region: index into the first three axes of the box (e.g. `Slab.index()`); default
            all cells.
        truth_momentum: the true momentum `Field`; adds the momentum residual.

    Returns:
        dict name -> {"mean", "std"}: "abs_v" |v|, "abs_p" |p|, and with a truth
        "abs_v_residual" |v - v_true|, "abs_cos_theta" |cos theta| and "cos_theta"
        (cells where either velocity is zero are left out of the angles); with the true
        momentum "abs_p_residual" |p - p_true| (vectors). Over all ranks under MPI
        (collective).
    """
    for truth in (truth_velocity, truth_momentum):
        if truth is not None:
            check_pair(truth, velocity)
    rows = {name: Moments() for name, given in (("abs_v", True), ("abs_p", True), ("abs_v_residual", truth_velocity),
                                                  ("abs_cos_theta", truth_velocity), ("cos_theta", truth_velocity),
                                                  ("abs_p_residual", truth_momentum)) if given is not None}
    for index in _held(velocity, region):
        v = np.asarray(velocity.value[index], dtype=np.float64)
        rows["abs_v"].add(magnitude(v))
        rows["abs_p"].add(magnitude(momentum.value[index]))
        if truth_velocity is not None:
            t = np.asarray(truth_velocity.value[index], dtype=np.float64)
            cos = cosine(v, t)
            rows["abs_v_residual"].add(magnitude(v - t))
            rows["abs_cos_theta"].add(np.abs(cos))
            rows["cos_theta"].add(cos)
        if truth_momentum is not None:
            rows["abs_p_residual"].add(magnitude(np.asarray(momentum.value[index], dtype=np.float64)
                                                 - truth_momentum.value[index]))
    return {name: moments.result(velocity.comm) for name, moments in rows.items()}


def _held(field, region):
    """Indices into `field.value` of the cells of `region` (all: a few x-planes at a time) held here."""
    if region is None:
        for x in range(0, field.value.shape[0], CHUNK):
            yield (slice(x, x + CHUNK),)
        return
    x = np.ravel(region[0]) - field.start
    x = x[(x >= 0) & (x < field.value.shape[0])]
    if x.size:
        yield np.ix_(x, np.ravel(region[1]), np.ravel(region[2]))


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


def _window_means(density, shape):
    """Mean of rho/rho_mean over every periodic window of `shape` cells, indexed by its first cell, for
    the windows that start on the x-planes held here (their last planes gathered from the next ranks)."""
    value, n = density.value, density.value.shape[0]
    if density.comm is None:
        value = np.concatenate([value, value[:shape[0] - 1]])
    else:
        reach = min(n + shape[0] - 1, density.nmesh) if n else 0
        value = gather_planes(value, density.start, density.comm, density.start, reach, density.nmesh)
        value = np.concatenate([value, value[:n + shape[0] - 1 - reach]])  # (windows wider than the rest of the box)
    out = np.asarray(value, dtype=np.float64)
    for axis, width in enumerate(shape):
        padded = out if axis == 0 else np.concatenate([out, np.take(out, np.arange(width - 1), axis=axis)], axis=axis)
        cums = np.cumsum(padded, axis=axis)
        zero = np.zeros_like(np.take(cums, [0], axis=axis))
        cums = np.concatenate([zero, cums], axis=axis)
        size = n if axis == 0 else out.shape[axis]
        out = np.take(cums, np.arange(width, width + size), axis=axis) - np.take(cums, np.arange(size), axis=axis)
    return out / float(np.prod(shape))


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
    score = _window_means(density, shape)
    out = []
    for _ in range(count):
        best = (-np.inf, (density.nmesh,) * 3)
        if score.size:
            local = np.unravel_index(int(np.argmax(score)), score.shape)
            best = (float(score[local]), (int(local[0]) + density.start, int(local[1]), int(local[2])))
        if density.comm is not None:  # the densest over the ranks, the first in the box's order on ties
            best = max(density.comm.allgather(best), key=lambda b: (b[0], [-s for s in b[1]]))
        value, start = best
        if not np.isfinite(value):
            raise VelnetInputError(density.attrs.get("source"),
                                   f"the box holds fewer than {count} non-overlapping slices")
        out.append(Slab(tuple(int(s) for s in start), tuple(shape), float(value), density.cell_size))
        reach = [(s + np.arange(-w + 1, w)) % density.nmesh for s, w in zip(start, shape)]
        reach[axis] = np.arange(density.nmesh)
        x = reach[0] - density.start
        score[np.ix_(x[(x >= 0) & (x < len(score))], *reach[1:])] = -np.inf
    return out

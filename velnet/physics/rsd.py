"""Redshift space: tracers moved by their line-of-sight velocity and back, the halo bias and the linear inputs.

The 2024 halo paper (section 2.1, eq. 1) places each halo at its redshift-space position

    s = r + (v . z) z / (a H(a)),

with r in Mpc/h, v the peculiar velocity in km/s, H in km/s per Mpc/h and z the unit
vector of a line of sight parallel to one box axis (the plane-parallel approximation);
s is wrapped into the periodic box. Its section 3.5 undoes this with a reconstructed
velocity field: `real_space_positions` solves eq. 1 for r given s (what an observer can
do), `read_back` moves s back by the field at the known r (the simulation test).

Its linear inputs (eq. 2-3) treat the redshift-space halo density contrast delta_s,
divided by a linear bias beta, as the matter density contrast:

    v_lin(k) = a f H i k / k^2 delta_s(k) / beta,   m_lin = (1 + delta_s / beta) v_lin,

where beta (eq. 4) is not Kaiser's f / b but the halo bias itself, measured between the
halo field and the real-space matter field as the k-average (in dk) of their power ratio,

    beta^2 = int_{k < 0.3} P_halo(k) / P_DM(k) dk / int_{k < 0.3} dk

(the paper finds 1.85 without and 2.57 with mass weighting). Both spectra come from
nbodykit's FFTPower through `velnet.statistics.spectra.power`, without shot-noise subtraction, as in
the paper; P_halo is taken of the redshift-space field that eq. 2 divides, so beta also
absorbs the Kaiser boost of its large-scale power.

That boost splits beta into a real-space bias b and Kaiser's factor f / b: the monopole
of b^2 (1 + (f / b) mu^2)^2 is b^2 + 2 b f / 3 + f^2 / 5 = beta^2 (`kaiser_bias`), and
`linear_density` divides delta_s(k) by b (1 + (f / b) mu^2) = b + f mu^2 (mu the cosine
of k to the line of sight): a linear estimate of the real-space matter density from the
redshift-space halos, over the whole box (the residual base of the halo-density task).
"""
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, los_axis
from velnet.fields.painting import readout
from velnet.physics.linear import linear_momentum, linear_velocity, wavevectors
from velnet.statistics.spectra import power

BIAS_KMAX = 0.3
"""Upper limit (h/Mpc) of the k-range of eq. 4."""
LINEAR_DENSITY_SMOOTHING = 2.0
"""Gaussian radius (Mpc/h) of `linear_density` in the halo fields files (see docs/results-halo2024.md)."""
ROOT_STEP = 0.25
"""Spacing, in cells, of the candidate positions along the line of sight in `real_space_positions`."""


def redshift_space_positions(position, velocity, los, box_size, redshift, cosmology):
    """Redshift-space positions of eq. 1, plane-parallel along one box axis, wrapped periodically.

    Args:
        position: `(N, 3)` real-space positions, Mpc/h.
        velocity: `(N, 3)` peculiar velocities, km/s.
        los: the line of sight: 0, 1, 2 or "x", "y", "z".
        box_size: side of the periodic box, Mpc/h.
        redshift: z of the snapshot.
        cosmology: a `Cosmology` (gives H(a) in km/s per Mpc/h).

    Returns:
        `(N, 3)` float64 positions in Mpc/h, in [0, box_size); only the `los` column moves,
        by v_los / (a H(a)).

    Raises:
        VelnetInputError: the arrays are not `(N, 3)` of equal length, or `los` is unknown.
    """
    axis = los_axis(los)
    s = np.array(position, dtype=np.float64)
    velocity = np.asarray(velocity, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 3 or velocity.shape != s.shape:
        raise VelnetInputError(None, f"positions and velocities must both be (N, 3). "
                                     f"Received: {s.shape} and {velocity.shape}")
    a = 1.0 / (1.0 + redshift)
    s[:, axis] += velocity[:, axis] / (a * float(cosmology.hubble(a)))
    s = np.mod(s, box_size)
    s[s >= box_size] = 0.0  # np.mod of a tiny negative number rounds up to box_size
    return s


def real_space_positions(positions, velocity, los, density=None, chunk=20000):
    """Undo redshift-space distortions (eq. 1) with a velocity field: solve r + v_los(r) / (a H) = s.

    Along the line of sight through each s, F(d) = d + v_los(s + d) / (a H) is read out
    (`velnet.fields.painting.readout`) every `ROOT_STEP` cells within reach of every velocity on the mesh; its
    roots, where F changes sign, are interpolated linearly. Where the redshift-space map
    folds (infall faster than the Hubble flow across a cell, around collapsing regions)
    there are several roots; the one with the highest `density` is taken (a halo sits in a
    density peak), or without a density the one nearest s. Fixed-point iteration
    r = s - v_los(r) / (a H) fails exactly there.

    Args:
        positions: `(M, 3)` redshift-space positions s, Mpc/h.
        velocity: vector `Field` (km/s) with the redshift and cosmology of the halos.
        los: the line of sight, 0, 1, 2 or "x", "y", "z".
        density: optional scalar `Field` on the same mesh (e.g. the reconstructed
            rho/rho_mean) that picks among several roots.
        chunk: positions handled at once (memory: chunk x candidates x 3 floats).

    Returns:
        `(M, 3)` float64 real-space positions in [0, box_size), only the `los` column moved.

    Raises:
        VelnetInputError: a scalar velocity, a vector density, bad positions or `los`.
    """
    axis = los_axis(los)
    if not velocity.is_vector:
        raise VelnetInputError(velocity.attrs.get("source"), f"{velocity.name!r} is not a vector field")
    if density is not None and density.is_vector:
        raise VelnetInputError(density.attrs.get("source"), f"{density.name!r} is not a scalar field")
    s = np.asarray(positions, dtype=np.float64)
    a = 1.0 / (1.0 + velocity.redshift)
    a_hubble = a * float(velocity.cosmology.hubble(a))
    v_los = velocity.with_value(velocity.value[..., axis], f"{velocity.name}_los")
    step = ROOT_STEP * velocity.cell_size
    reach = float(np.abs(v_los.value).max()) / a_hubble + 2 * velocity.cell_size
    offsets = np.arange(-reach, reach + step / 2, step)
    out = s.copy()
    for first in range(0, len(s), chunk):
        part = s[first:first + chunk]
        candidates = np.repeat(part[:, None, :], len(offsets), axis=1)
        candidates[..., axis] += offsets
        flat = candidates.reshape(-1, 3)
        f = offsets + readout(v_los, flat).reshape(len(part), -1) / a_hubble
        crossing = f[:, :-1] * f[:, 1:] <= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.nan_to_num(f[:, :-1] / (f[:, :-1] - f[:, 1:]))
        roots = offsets[:-1] + t * step
        if density is None:
            score = -np.abs(roots)
        else:
            rho = readout(density, flat).reshape(len(part), -1)
            score = rho[:, :-1] * (1 - t) + rho[:, 1:] * t
        pick = np.argmax(np.where(crossing, score, -np.inf), axis=1)
        shift = roots[np.arange(len(part)), pick]
        none = ~crossing.any(axis=1)  # cannot happen with this reach, but never leave a position unset
        shift[none] = offsets[np.argmin(np.abs(f[none]), axis=1)]
        out[first:first + chunk, axis] = np.mod(part[:, axis] + shift, velocity.box_size)
    out[out >= velocity.box_size] = 0.0
    return out


def read_back(positions, real, velocity, los):
    """Redshift-space positions moved back by the velocity field at the known real-space positions.

    s - v_los(r) / (a H): the simulation test of the velocities at the halos (no root search).

    Args:
        positions: `(M, 3)` redshift-space positions s, Mpc/h.
        real: `(M, 3)` their real-space positions r, Mpc/h.
        velocity: vector `Field` (km/s).
        los: the line of sight, 0, 1, 2 or "x", "y", "z".

    Returns:
        `(M, 3)` float64 positions in [0, box_size).
    """
    axis = los_axis(los)
    a = 1.0 / (1.0 + velocity.redshift)
    out = np.array(positions, dtype=np.float64)
    shift = readout(velocity, real)[:, axis] / (a * float(velocity.cosmology.hubble(a)))
    out[:, axis] = np.mod(out[:, axis] - shift, velocity.box_size)
    out[out >= velocity.box_size] = 0.0
    return out


def bias_kedges(box_size, kmax=BIAS_KMAX):
    """k bins of eq. 4: width k_f = 2 pi / L centred on multiples of k_f, all below `kmax` (h/Mpc).

    Raises:
        VelnetInputError: the box is too small to hold one bin below `kmax`.
    """
    kf = 2 * np.pi / box_size
    edges = kf * np.arange(0.5, kmax / kf + 1e-9)
    if len(edges) < 2:
        raise VelnetInputError(None, f"a {box_size} Mpc/h box has no k bin below kmax={kmax} h/Mpc "
                                     f"(the first ends at {1.5 * kf:.3g} h/Mpc)")
    return edges


def linear_bias(halo_density, matter_density, kmax=BIAS_KMAX):
    """beta of eq. 4: the root of the dk-average of P_halo / P_DM over k < kmax.

    Bins are those of `bias_kedges`; each bin with modes counts once per unit k, as in the
    integral (not weighted by its number of modes).

    Args:
        halo_density: scalar `Field` of the halo density relative to its mean (1 + delta_s).
        matter_density: scalar `Field` rho/rho_mean of the matter, same mesh and box.
        kmax: upper limit of the k-range, h/Mpc.

    Returns:
        beta (float).

    Raises:
        VelnetInputError: the fields differ in mesh or box, the box has no bin below
            `kmax`, or the matter field has no power there.
    """
    edges = bias_kedges(halo_density.box_size, kmax)
    p_halo = power(halo_density, kedges=edges)
    p_matter = power(matter_density, kedges=edges)
    used = (p_matter["modes"] > 0) & (p_matter["power"] > 0)
    if not used.any():
        raise VelnetInputError(matter_density.attrs.get("source"),
                               f"matter field {matter_density.name!r} has no power below k={kmax} h/Mpc")
    ratio = p_halo["power"][used] / p_matter["power"][used]
    width = np.diff(edges)[used]
    return float(np.sqrt(np.sum(ratio * width) / np.sum(width)))


def linear_inputs(halo_density, beta, smoothing=0.0):
    """The linear velocity and momentum of eq. 2-3 from the redshift-space halo field.

    Args:
        halo_density: scalar `Field` 1 + delta_s of the redshift-space halos, with the
            snapshot's redshift and cosmology.
        beta: the linear bias of eq. 4 (`linear_bias`), > 0.
        smoothing: optional Gaussian radius, Mpc/h (as `velnet.physics.linear.linear_velocity`).

    Returns:
        dict: "linear_velocity_s" `(N, N, N, 3)` km/s, the linear velocity of the density
        1 + delta_s / beta; "linear_momentum_s" `(N, N, N, 3)` km/s, (1 + delta_s / beta)
        times that velocity. Both carry attrs beta and smoothing_mpc_h.

    Raises:
        VelnetInputError: beta is not positive, or the field is not a scalar.
    """
    if not beta > 0:
        raise VelnetInputError(None, f"beta must be positive. Received: {beta}")
    delta_s = np.asarray(halo_density.value, dtype=np.float64) - 1.0
    density = Field((1.0 + delta_s / beta).astype(np.float32), "density", halo_density.box_size,
                    halo_density.redshift, halo_density.cosmology)
    velocity = linear_velocity(density, smoothing)
    momentum = linear_momentum(density, velocity)
    out = {}
    for name, field in (("linear_velocity_s", velocity), ("linear_momentum_s", momentum)):
        out[name] = field.with_value(field.value, name)
        out[name].attrs.update(beta=float(beta), smoothing_mpc_h=float(smoothing),
                               method="linear theory of delta_s / beta (eq. 2-3)", units="km/s")
    return out


def kaiser_bias(beta, growth_rate):
    """The real-space bias b whose Kaiser monopole b^2 + 2 b f / 3 + f^2 / 5 is beta^2 of eq. 4.

    Args:
        beta: the linear bias of eq. 4 (`linear_bias`), measured in redshift space.
        growth_rate: f = dlnD/dlna at the halos' redshift.

    Returns:
        b = -f / 3 + sqrt(beta^2 - 4 f^2 / 45) (float); Kaiser's factor is f / b.

    Raises:
        VelnetInputError: beta^2 <= f^2 / 5, below the monopole of any b > 0.
    """
    f = float(growth_rate)
    if not beta ** 2 > f ** 2 / 5:
        raise VelnetInputError(None, f"beta^2 must exceed f^2 / 5 = {f ** 2 / 5:.3g} (the Kaiser monopole of a "
                                     f"positive bias). Received: beta={beta}")
    return float(-f / 3 + np.sqrt(beta ** 2 - 4 * f ** 2 / 45))


def linear_density(halo_density, beta, los, smoothing=LINEAR_DENSITY_SMOOTHING):
    """The real-space matter density of linear theory from the redshift-space halo field.

    delta(k) = delta_s(k) exp(-k^2 R^2 / 2) / (b + f mu^2), with b = `kaiser_bias(beta, f)`,
    f the growth rate at the field's redshift and mu = k_los / k; the box mean is 1.

    Args:
        halo_density: scalar `Field` 1 + delta_s of the redshift-space halos, with the
            snapshot's redshift and cosmology.
        beta: the linear bias of eq. 4 (`linear_bias`).
        los: the line of sight of the redshift space: 0, 1, 2 or "x", "y", "z".
        smoothing: Gaussian radius R, Mpc/h (0: none).

    Returns:
        scalar `Field` "linear_density_s", rho/rho_mean `(N, N, N)` float32, with attrs
        beta, bias b, growth_rate f and smoothing_mpc_h.

    Raises:
        VelnetInputError: a vector field, an unknown `los`, a negative radius, or see
            `kaiser_bias`.
    """
    axis = los_axis(los)
    if halo_density.is_vector:
        raise VelnetInputError(halo_density.attrs.get("source"), f"{halo_density.name!r} is not a scalar field")
    if not smoothing >= 0:
        raise VelnetInputError(None, f"smoothing must be a radius >= 0 Mpc/h. Received: {smoothing}")
    f = halo_density.cosmology.growth_rate(1.0 / (1.0 + halo_density.redshift))
    b = kaiser_bias(beta, f)
    k, _, k2 = wavevectors(halo_density.nmesh, halo_density.box_size)
    mu2 = np.divide(k[axis] ** 2, k2, out=np.zeros_like(k2), where=k2 > 0)
    delta_k = np.fft.rfftn(np.asarray(halo_density.value, dtype=np.float64) - 1.0)
    delta_k *= np.exp(-0.5 * k2 * smoothing ** 2) / (b + f * mu2)
    delta_k[0, 0, 0] = 0.0
    value = 1.0 + np.fft.irfftn(delta_k, s=halo_density.value.shape, axes=(0, 1, 2))
    out = halo_density.with_value(value.astype(np.float32), "linear_density_s")
    out.attrs.update(beta=float(beta), bias=b, growth_rate=f, smoothing_mpc_h=float(smoothing),
                     method="delta_s / (b + f mu^2), b from beta (eq. 4) and the Kaiser monopole",
                     units="rho / rho_mean")
    return out

"""Anisotropic correlation functions xi(r_perp, r_par) about a line of sight along a box axis.

Of points (halo positions) by pair counts: Corrfunc through nbodykit's `SimulationBox2PCF`
(`points_xi`), as the 2024 halo paper's Fig. 13 measures the halos in redshift space, in
real space and corrected. Of fields on a mesh (the dark-matter density, true and
reconstructed, Fig. 13): xi(r) = <delta(x) delta(x + r)> from the Fourier modes nbodykit
computes, |delta_k|^2 transformed back and averaged in (r_perp, r_par) bins (`field_xi`).
Both use the same bins (`xi_centres`): width dr, from 0 to rmax, in Mpc/h.
"""
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import los_axis
from velnet.statistics.spectra import fourier

XI_RMAX, XI_DR = 40.0, 2.0
"""Largest separation (Mpc/h) and bin width of xi(r_perp, r_par)."""


def points_xi(positions, box_size, los, rmax=XI_RMAX, dr=XI_DR):
    """xi(r_perp, r_par) of points in a periodic box: Corrfunc pair counts via nbodykit `SimulationBox2PCF`.

    Natural estimator with analytic randoms ("projected" mode: r_par bins of 1 Mpc/h, then
    averaged in groups of `dr`, which keeps it exact since the bins have equal volumes).

    Args:
        positions: `(M, 3)` positions, Mpc/h.
        box_size: side of the periodic box, Mpc/h.
        los: the line of sight, 0, 1, 2 or "x", "y", "z".
        rmax: largest r_perp and r_par, Mpc/h (rounded down to a multiple of `dr`).
        dr: bin width, a whole number of Mpc/h.

    Returns:
        (r_perp, r_par, xi): bin centres (Mpc/h) and xi `(len(r_perp), len(r_par))`.
    """
    from mpi4py import MPI
    from nbodykit.algorithms.paircount_tpcf.tpcf import SimulationBox2PCF
    from nbodykit.source.catalog import ArrayCatalog

    step, npi = _xi_bins(rmax, dr)
    edges = np.arange(0.0, npi + step / 2, step)
    edges[0] = 1e-6 * step  # Corrfunc excludes self-pairs with a lower edge above 0
    catalog = ArrayCatalog({"Position": np.asarray(positions, dtype=np.float64)}, BoxSize=[float(box_size)] * 3,
                           comm=MPI.COMM_SELF)
    result = SimulationBox2PCF("projected", catalog, edges, pimax=npi, los="xyz"[los_axis(los)])
    xi = np.asarray(result.corr["corr"], dtype=np.float64)
    xi = xi.reshape(xi.shape[0], npi // step, step).mean(axis=-1)
    centres = xi_centres(rmax, dr)
    return centres, centres, xi


def field_xi(field, los, rmax=XI_RMAX, dr=XI_DR):
    """xi(r_perp, r_par) of a scalar field's density contrast on its periodic mesh.

    delta = field / mean - 1; xi(r) = (1 / N^3) sum_x delta(x) delta(x + r), from the modes of
    `velnet.statistics.spectra.fourier` (nbodykit), each cell separation r (periodic, |r_i| <= L/2) put in
    the bin of r_par = |r . los| and r_perp = |r - (r . los) los|.

    Args:
        field: scalar `Field` (rho/rho_mean, or a halo number density 1 + delta).
        los: the line of sight, 0, 1, 2 or "x", "y", "z".
        rmax, dr: as `points_xi` (Mpc/h).

    Returns:
        (r_perp, r_par, xi): bin centres (Mpc/h) and xi `(len(r_perp), len(r_par))`;
        NaN in bins that hold no cell separation.

    Raises:
        VelnetInputError: a vector field, or one with a mean of zero.
    """
    axis = los_axis(los)
    if field.is_vector:
        raise VelnetInputError(field.attrs.get("source"), f"xi needs a scalar field; {field.name!r} is a vector")
    mean = float(np.mean(field.value, dtype=np.float64))
    if mean == 0:
        raise VelnetInputError(field.attrs.get("source"), f"{field.name!r} has a mean of zero: no density contrast")
    modes = fourier(field.with_value(np.asarray(field.value, dtype=np.float64) / mean - 1.0)).modes[0]
    power = modes.copy()
    power[...] = modes * np.conj(modes)
    xi3d = np.asarray(power.c2r())
    n = field.nmesh
    offset = (np.arange(n) + n // 2) % n - n // 2  # cell offsets wrapped to [-N/2, N/2)
    r = [np.abs(offset) * field.cell_size] * 3
    grid = np.meshgrid(*r, indexing="ij")
    r_par = grid[axis]
    r_perp = np.sqrt(sum(g ** 2 for i, g in enumerate(grid) if i != axis))
    step, top = _xi_bins(rmax, dr)
    inside = (r_par < top) & (r_perp < top)
    index = (r_perp[inside] // step).astype(int) * (top // step) + (r_par[inside] // step).astype(int)
    nbin = top // step
    count = np.bincount(index, minlength=nbin * nbin)
    with np.errstate(invalid="ignore", divide="ignore"):
        xi = np.bincount(index, weights=xi3d[inside], minlength=nbin * nbin) / count
    centres = xi_centres(rmax, dr)
    return centres, centres, xi.reshape(nbin, nbin)


def anisotropy_residual(xi, reference, redshift_space, centres, rmin):
    """sum over the bins with rmin <= r <= rmax of (xi - xi_ref)^2, over the same of xi_s - xi_ref.

    1: the redshift-space anisotropy is all there; 0: the reference (real space) is recovered.
    """
    rmax = centres[-1] + (centres[1] - centres[0]) / 2
    radius = np.hypot(centres[:, None], centres[None, :])
    ring = (radius >= rmin) & (radius <= rmax)
    return float(np.sum((xi - reference)[ring] ** 2) / np.sum((redshift_space - reference)[ring] ** 2))


def _xi_bins(rmax, dr):
    """Bin width (whole Mpc/h) and the largest separation (a multiple of it) of the xi bins."""
    step = max(1, int(round(dr)))
    return step, max(1, int(rmax // step)) * step


def xi_centres(rmax=XI_RMAX, dr=XI_DR):
    """Bin centres (Mpc/h) of r_perp and r_par in `points_xi` and `field_xi`."""
    step, top = _xi_bins(rmax, dr)
    return np.arange(step / 2, top, step, dtype=float)

"""The evaluation report of the 2024 halo paper (section 3), for both halo weighting schemes side by side.

`evaluate_halo` measures reconstructions of the real-space dark-matter density, velocity
and momentum (from redshift-space halos) against the truth, over one or more test boxes:

- pixel statistics (Figs. 4-5): |v|, |m|, 1 - cos phi between predicted and true vectors,
  the divergences theta_v = div v and theta_m = div m, mean and standard deviation over
  the cells of all test boxes, with histograms;
- eq. 10: the correlation coefficient C_r = sum_i (f_i - <f>)(f'_i - <f'>) /
  ((N_pix - 1) sigma_f sigma_f') between prediction f and truth f' (for a vector field
  every component of every cell is a pixel) and the relative deviation R = O_f / O_f' - 1
  of an observable O: the standard deviation sigma for every field (the paper leaves O
  open; the mean of a divergence or a vector component is zero up to noise), the mean for
  the magnitudes and the density, and the power spectrum for R(k);
- joint distributions of prediction against truth (Figs. 6-7) and of density against
  speed and divergence (Figs. 8-9);
- power spectra (Figs. 10-12, nbodykit through `velnet.stats`) of the density, velocity,
  momentum and both divergences, with linear theory of the redshift-space halos (eq. 2-3;
  for the density, the halo field 1 + delta_s / beta that eq. 2 uses), R(k) and r(k),
  mean and 2-sigma band across test boxes;
- redshift-space distortions (section 3.5): halos moved back along the line of sight by
  the reconstructed velocity, found from their redshift-space positions
  (`real_space_positions`) or read out at their true positions (`read_back`); the
  anisotropic correlation function xi(r_perp, r_par) of the halos in redshift space, in
  real space and corrected (Fig. 13; Corrfunc pair counts through nbodykit's
  `SimulationBox2PCF`), and the multipoles P_2, P_4 of the reconstructed real-space density
  against the truth and the redshift-space halos (Fig. 14), and of the corrected halos.

The report folder (report.md, metrics.json, PNG figures) appears only when complete.
nbodykit, pmesh and mpi4py are imported inside the functions that need them.
"""
import json
import time

import numpy as np

from . import plots, stats
from .errors import VelnetInputError
from .evaluate import _num, _provenance
from .fields import Field
from .files import atomic_dir
from .linear import divergence
from .rsd import los_axis, redshift_space_positions

SCHEMES = {"number": "without M_halo weighting", "mass": "with M_halo weighting"}
"""Weighting schemes of the halo channels and the paper's names for them."""
UNET, LINEAR = "U-net", "linear"
"""Method names: the reconstruction, and linear theory of the redshift-space halos (eq. 2-3)."""
LINEAR_DENSITY = "halos_s / beta"
"""What the linear method is for the density: 1 + delta_s / beta, the field eq. 2 uses."""
QUANTITIES = {
    "density": "rho / rho_mean",
    "velocity": "v (km/s)",
    "momentum": "m = (1 + delta) v (km/s)",
    "theta_v": "theta_v = div v (km/s per Mpc/h)",
    "theta_m": "theta_m = div m (km/s per Mpc/h)",
}
"""The fields whose spectra are compared, with their units."""
K_RANGES = {"density": (0.0, 0.3), "velocity": (0.05, 0.2), "momentum": (0.05, 0.2),
            "theta_v": (0.05, 0.3), "theta_m": (0.05, 0.3)}
"""k ranges (h/Mpc) over which the paper summarises R(k) (section 3.3-3.4)."""
POLE_RANGE = (0.0, 0.3)
"""k range (h/Mpc) of the multipole summary (the paper: agreement within 2 sigma for k < 0.3)."""
PIXEL_ROWS = {
    "density": "rho / rho_mean",
    "abs_v": "abs(v) (km/s)",
    "one_minus_cos_v": "1 - cos phi, velocity",
    "theta_v": "theta_v (km/s per Mpc/h)",
    "abs_m": "abs(m) (km/s)",
    "one_minus_cos_m": "1 - cos phi, momentum",
    "theta_m": "theta_m (km/s per Mpc/h)",
}
"""Rows of the pixel-statistics table."""
AGREEMENT_ROWS = {"density": "rho", "velocity": "v (components)", "abs_v": "abs(v)", "theta_v": "theta_v",
                  "momentum": "m (components)", "abs_m": "abs(m)", "theta_m": "theta_m"}
"""Fields of the eq. 10 table; R of the mean is given for density and magnitudes only."""
MEAN_ROWS = ("density", "abs_v", "abs_m")
HALO_NUMBER_DENSITY = 3e-3
"""The heaviest halos up to this number density, (h/Mpc)^3, enter the RSD tests (the paper's sample)."""
XI_RMAX, XI_DR = 40.0, 2.0
"""Largest separation (Mpc/h, capped at a quarter of the box) and bin width of xi(r_perp, r_par)."""
XI_RMIN = 5.0
"""Smallest separation (Mpc/h) counted in the anisotropy residual."""
XI_LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0)
"""Contour levels of the xi figure (halos, so above the paper's dark-matter levels)."""
ROOT_STEP = 0.25
"""Spacing, in cells, of the candidate positions along the line of sight in `real_space_positions`."""
FROM_S, AT_R = "from s", "at r"
"""RSD correction modes: root search from the redshift-space position (what an observer can do),
and read-out at the known real-space position (the simulation test of the velocities at the halos)."""


def cic_readout(field, positions):
    """Values of a mesh field at arbitrary positions by cloud-in-cell interpolation (pmesh `readout`).

    The convention is nbodykit's painting: cell (i, j, k) holds the value at
    (i, j, k) * box_size / N, and positions wrap periodically.

    Args:
        field: scalar or vector `Field`.
        positions: `(M, 3)` positions in Mpc/h.

    Returns:
        float64 array `(M,)` (scalar) or `(M, 3)` (vector).

    Raises:
        VelnetInputError: positions are not `(M, 3)` or not finite.
    """
    from mpi4py import MPI
    from pmesh.pm import ParticleMesh

    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
        raise VelnetInputError(None, f"positions must be finite (M, 3). Received: shape {positions.shape}")
    mesh = ParticleMesh(BoxSize=float(field.box_size), Nmesh=[field.nmesh] * 3, dtype="f8", comm=MPI.COMM_SELF)
    components = [field.value[..., i] for i in range(3)] if field.is_vector else [field.value]
    out = []
    for component in components:
        real = mesh.create(type="real")
        real[...] = component
        out.append(real.readout(positions, resampler="cic"))
    return np.stack(out, axis=-1) if field.is_vector else out[0]


def real_space_positions(positions, velocity, los, density=None, chunk=20000):
    """Undo redshift-space distortions (eq. 1) with a velocity field: solve r + v_los(r) / (a H) = s.

    Along the line of sight through each s, F(d) = d + v_los(s + d) / (a H) is read out
    (`cic_readout`) every `ROOT_STEP` cells within reach of every velocity on the mesh; its
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
        f = offsets + cic_readout(v_los, flat).reshape(len(part), -1) / a_hubble
        crossing = f[:, :-1] * f[:, 1:] <= 0
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.nan_to_num(f[:, :-1] / (f[:, :-1] - f[:, 1:]))
        roots = offsets[:-1] + t * step
        if density is None:
            score = -np.abs(roots)
        else:
            rho = cic_readout(density, flat).reshape(len(part), -1)
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
    shift = cic_readout(velocity, real)[:, axis] / (a * float(velocity.cosmology.hubble(a)))
    out[:, axis] = np.mod(out[:, axis] - shift, velocity.box_size)
    out[out >= velocity.box_size] = 0.0
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


def heaviest(catalog, number_density=HALO_NUMBER_DENSITY):
    """Indices of the heaviest halos up to `number_density` (h/Mpc)^3 (all when there are fewer)."""
    count = min(len(catalog.mass), int(round(number_density * float(catalog.box_size) ** 3)))
    return np.argsort(-np.asarray(catalog.mass), kind="stable")[:count]


def xi_rp_pi(positions, box_size, los, rmax=XI_RMAX, dr=XI_DR):
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


def _xi_bins(rmax, dr):
    """Bin width (whole Mpc/h) and the largest separation (a multiple of it) of `xi_rp_pi`."""
    step = max(1, int(round(dr)))
    return step, max(1, int(rmax // step)) * step


def xi_centres(rmax=XI_RMAX, dr=XI_DR):
    """Bin centres (Mpc/h) of r_perp and r_par in `xi_rp_pi`."""
    step, npi = _xi_bins(rmax, dr)
    return np.arange(step / 2, npi, step, dtype=float)


def paint_points(positions, like, name):
    """CIC number density 1 + delta of points on the mesh of the `Field` `like` (nbodykit, uncompensated)."""
    from mpi4py import MPI
    from nbodykit.source.catalog import ArrayCatalog

    catalog = ArrayCatalog({"Position": np.asarray(positions, dtype=np.float64)}, BoxSize=[like.box_size] * 3,
                           comm=MPI.COMM_SELF)
    mesh = catalog.to_mesh(Nmesh=like.nmesh, resampler="cic", compensated=False, interlaced=False, dtype="f8")
    value = mesh.compute(mode="real").preview()
    return Field(value.astype(np.float32), name, like.box_size, like.redshift, like.cosmology)


def _los_offset(a, b, box_size, axis):
    """Periodic separation b - a along one axis, in [-L/2, L/2)."""
    return np.mod(b[:, axis] - a[:, axis] + box_size / 2, box_size) - box_size / 2


# ---------------------------------------------------------------- inputs and fields


def _as_list(entries, what):
    if isinstance(entries, dict):
        return [entries]
    entries = list(entries)
    if not entries:
        raise VelnetInputError(None, f"{what} holds no test box")
    return entries


def _check(truth, predictions, inputs, catalogs):
    """Normalise the arguments to lists per box and check fields, meshes and box counts."""
    truth = _as_list(truth, "truth_fields")
    if not predictions:
        raise VelnetInputError(None, "evaluate_halo needs predictions of at least one weighting scheme")
    predictions = {scheme: _as_list(boxes, f"predictions[{scheme!r}]") for scheme, boxes in predictions.items()}
    inputs = {scheme: _as_list(boxes, f"inputs[{scheme!r}]") for scheme, boxes in (inputs or {}).items()}
    catalogs = list(catalogs) if catalogs is not None else None
    for scheme in inputs:
        if scheme not in predictions:
            raise VelnetInputError(None, f"inputs for scheme {scheme!r}, which has no predictions")
    counts = {len(boxes) for boxes in [truth, *predictions.values(), *inputs.values()]}
    if catalogs is not None:
        counts.add(len(catalogs))
    if len(counts) != 1:
        raise VelnetInputError(None, f"truth, predictions, inputs and catalogues must cover the same test boxes; "
                                     f"received {len(truth)} true boxes and box counts {sorted(counts)}")
    shapes = {"density": False, "velocity": True, "momentum": True}
    for b, box in enumerate(truth):
        reference = box.get("density")
        groups = [("truth", box, shapes)] + [(f"{s} prediction", p[b], shapes) for s, p in predictions.items()]
        groups += [(f"{s} inputs", i[b], {"linear_velocity_s": True, "linear_momentum_s": True})
                   for s, i in inputs.items()]
        for label, fields, needed in groups:
            for name, vector in needed.items():
                field = fields.get(name)
                if field is None:
                    raise VelnetInputError(None, f"box {b}: {label} has no {name!r} field (it holds {sorted(fields)})")
                source = field.attrs.get("source")
                if reference is None or field.is_vector != vector or field.nmesh != reference.nmesh \
                        or not np.isclose(field.box_size, reference.box_size):
                    raise VelnetInputError(source, f"box {b}: {label} {name!r} is {field.value.shape} in a "
                                                   f"{field.box_size} Mpc/h box, not a "
                                                   f"{'vector' if vector else 'scalar'} on the true density's mesh")
                if not np.all(np.isfinite(field.value)):
                    raise VelnetInputError(source, f"box {b}: {label} {name!r} holds NaN or infinite values")
        for scheme, boxes in inputs.items():
            if not any(name.startswith("halos_s_") for name in boxes[b]):
                raise VelnetInputError(None, f"box {b}: {scheme} inputs hold no halo channels 'halos_s_<j>'")
            beta = boxes[b]["linear_velocity_s"].attrs.get("beta")
            if not (isinstance(beta, (int, float)) and beta > 0):
                raise VelnetInputError(boxes[b]["linear_velocity_s"].attrs.get("source"),
                                       f"box {b}: {scheme} linear_velocity_s has no positive 'beta' attribute "
                                       f"(eq. 4). Received: {beta!r}")
    return truth, predictions, inputs, catalogs


def _quantities(density, velocity, momentum):
    """The compared fields of one reconstruction (or the truth), as `Field`s."""
    return {"density": density, "velocity": velocity, "momentum": momentum,
            "theta_v": velocity.with_value(divergence(velocity), "theta_v"),
            "theta_m": momentum.with_value(divergence(momentum), "theta_m")}


def _linear(inputs):
    """Linear theory of the redshift-space halos: 1 + delta_s / beta and eq. 2-3."""
    velocity = inputs["linear_velocity_s"]
    beta = float(velocity.attrs["beta"])
    halos = np.sum([f.value for name, f in inputs.items() if name.startswith("halos_s_")], axis=0, dtype=np.float64)
    density = velocity.with_value((1.0 + (halos - 1.0) / beta).astype(np.float32), "density")
    return _quantities(density, velocity, inputs["linear_momentum_s"]), beta


def _magnitude(value):
    return np.sqrt(np.sum(np.asarray(value, dtype=np.float64) ** 2, axis=-1))


def _one_minus_cos(value, truth):
    """1 - cos phi per cell; NaN where either vector is zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - np.sum(value * truth, axis=-1) / (_magnitude(value) * _magnitude(truth))


def _pixels(q, truth_q=None):
    """Per-cell values of the pixel-statistics rows."""
    out = {"density": q["density"].value, "abs_v": _magnitude(q["velocity"].value), "theta_v": q["theta_v"].value,
           "abs_m": _magnitude(q["momentum"].value), "theta_m": q["theta_m"].value}
    if truth_q is not None:
        out["one_minus_cos_v"] = _one_minus_cos(q["velocity"].value, truth_q["velocity"].value)
        out["one_minus_cos_m"] = _one_minus_cos(q["momentum"].value, truth_q["momentum"].value)
    return out


def _row(quantities, pixels, row):
    """The values of an eq. 10 row: a pixel statistic (magnitudes) or a whole field."""
    return pixels[row] if row in pixels else quantities[row].value


def _mean_std(values):
    """Mean and standard deviation of the finite values of a list of arrays, pooled."""
    flat = np.concatenate([np.ravel(v) for v in values]).astype(np.float64)
    flat = flat[np.isfinite(flat)]
    return {"mean": float(flat.mean()), "std": float(flat.std())}


def _over_boxes(values):
    """Mean and standard deviation (ddof 1; NaN for one box) of per-box numbers or arrays."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan)
    return values.mean(axis=0), std


# ---------------------------------------------------------------- measurements


def _curve(k, each, truth_each=None, r_each=None):
    """A spectrum over boxes: mean and std of P, and of R = P / P_true - 1 and r when given."""
    mean, std = _over_boxes(each)
    curve = {"k": k, "mean": mean, "std": std}
    if truth_each is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            curve["R_mean"], curve["R_std"] = _over_boxes(np.asarray(each) / np.asarray(truth_each) - 1)
    if r_each is not None:
        curve["r_mean"], curve["r_std"] = _over_boxes(r_each)
    return curve


def _summary(curve, k_range):
    """R(k) and r(k) averaged over the bins inside `k_range` (h/Mpc), and the largest |R| there."""
    k = np.asarray(curve["k"], dtype=float)
    inside = np.isfinite(k) & (k > k_range[0]) & (k <= k_range[1]) & np.isfinite(curve["R_mean"])
    if not inside.any():
        return {"k_range": list(k_range), "bins": 0}
    r_values = np.asarray(curve["R_mean"])[inside]
    out = {"k_range": list(k_range), "bins": int(inside.sum()), "R_mean": float(r_values.mean()),
           "R_std": float(r_values.std()), "max_abs_R": float(np.abs(r_values).max())}
    if "r_mean" in curve:
        out["r_mean"] = float(np.mean(np.asarray(curve["r_mean"])[inside]))
    return out


def _spectra(truth_q, pred_q, linear_q, schemes, progress):
    """Per quantity: the truth's curve and, per scheme and method, curves with R(k) and r(k)."""
    out, summary = {}, {}
    for q in QUANTITIES:
        progress(f"power spectra of {q}")
        truth_each, each = [], {s: {} for s in schemes}
        for b, truth in enumerate(truth_q):
            modes = stats.fourier(truth[q])
            truth_power = stats.power(modes)
            truth_each.append(truth_power["power"])
            k = truth_power["k"]
            for s in schemes:
                methods = {UNET: pred_q[s][b]}
                if linear_q.get(s):
                    methods[LINEAR] = linear_q[s][b]
                for method, fields in methods.items():
                    comparison = stats.compare_spectra(fields[q], modes, truth_power=truth_power)
                    each[s].setdefault(method, []).append(comparison)
        out[q] = {"truth": _curve(k, truth_each)}
        summary[q] = {}
        for s in schemes:
            out[q][s], summary[q][s] = {}, {}
            for method, comparisons in each[s].items():
                curve = _curve(k, [c["power_pred"] for c in comparisons], truth_each, [c["r"] for c in comparisons])
                out[q][s][method] = curve
                summary[q][s][method] = _summary(curve, K_RANGES[q])
    return out, summary


def _pole_summary(curve, truth_curve, reference_curve):
    """Mean and std over k in POLE_RANGE of P_X - P_true, and sum |P_X - P_true| / sum |P_ref - P_true|."""
    k = np.asarray(curve["k"], dtype=float)
    inside = np.isfinite(k) & (k > POLE_RANGE[0]) & (k <= POLE_RANGE[1])
    diff = np.asarray(curve["mean"])[inside] - np.asarray(truth_curve["mean"])[inside]
    reference = np.asarray(reference_curve["mean"])[inside] - np.asarray(truth_curve["mean"])[inside]
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = float(np.sum(np.abs(diff)) / np.sum(np.abs(reference)))
    return {"k_range": list(POLE_RANGE), "bins": int(inside.sum()), "diff_mean": float(diff.mean()),
            "diff_std": float(diff.std()), "residual_fraction": fraction}


def _poles_curves(poles_each):
    """Multipole curves (mean, std over boxes) per series from per-box `Statistic`s."""
    first = next(iter(poles_each.values()))[0]
    ells = [int(c.split("_")[1]) for c in first.columns if c.startswith("power_")]
    return {ell: {name: _curve(first["k"], [p[f"power_{ell}"] for p in each]) for name, each in poles_each.items()}
            for ell in ells}


def _rsd(truth, pred_q, catalogs, schemes, los, progress):
    """Halo positions moved back with each velocity field; their xi(r_perp, r_par), P_ell and los offsets."""
    axis = los_axis(los)
    fields = [("true v", None), *((f"{s} U-net v", s) for s in schemes)]
    names = ["real space", "redshift space", *(f"{f}, {m}" for f, _ in fields for m in (FROM_S, AT_R))]
    xi_each = {n: [] for n in names}
    poles_each = {n: [] for n in names}
    offsets = {n: {"rms": [], "median": []} for n in names[1:]}
    nhalos = []
    rmax = min(XI_RMAX, catalogs[0].box_size / 4)
    for b, catalog in enumerate(catalogs):
        progress(f"RSD correction, box {b}")
        select = heaviest(catalog)
        nhalos.append(int(select.size))
        real = np.asarray(catalog.position, dtype=np.float64)[select]
        s = redshift_space_positions(real, np.asarray(catalog.velocity)[select], axis, catalog.box_size,
                                     catalog.redshift, catalog.cosmology)
        positions = {"real space": real, "redshift space": s}
        for name, scheme in fields:
            source = truth[b] if scheme is None else pred_q[scheme][b]
            positions[f"{name}, {FROM_S}"] = real_space_positions(s, source["velocity"], axis, source["density"])
            positions[f"{name}, {AT_R}"] = read_back(s, real, source["velocity"], axis)
        for name, where in positions.items():
            xi_each[name].append(xi_rp_pi(where, catalog.box_size, axis, rmax=rmax)[2])
            poles_each[name].append(stats.multipoles(paint_points(where, truth[b]["density"], "halos"), axis))
            if name != "real space":
                distance = np.abs(_los_offset(real, where, catalog.box_size, axis))
                offsets[name]["rms"].append(float(np.sqrt(np.mean(distance ** 2))))
                offsets[name]["median"].append(float(np.median(distance)))
    centres = xi_centres(rmax)
    rmax = centres[-1] + (centres[1] - centres[0]) / 2
    xi = {name: np.mean(each, axis=0) for name, each in xi_each.items()}
    radius = np.hypot(centres[:, None], centres[None, :])
    ring = (radius >= XI_RMIN) & (radius <= rmax)
    reference = np.sum((xi["redshift space"] - xi["real space"])[ring] ** 2)
    residual = {name: float(np.sum((xi[name] - xi["real space"])[ring] ** 2) / reference) for name in names[1:]}
    return {"nhalos": nhalos, "number_density": HALO_NUMBER_DENSITY, "root_step_cells": ROOT_STEP,
            "los_offset": {name: {key: dict(zip(("mean", "std"), _over_boxes(v))) for key, v in d.items()}
                           for name, d in offsets.items()},
            "xi": {"r_perp": centres, "r_par": centres, "curves": xi, "anisotropy_residual": residual,
                   "ring": [XI_RMIN, rmax]},
            "poles": _poles_curves(poles_each)}


def _measure(truth, predictions, inputs, catalogs, los, progress):
    schemes = list(predictions)
    progress("fields")
    truth_q = [_quantities(t["density"], t["velocity"], t["momentum"]) for t in truth]
    pred_q = {s: [_quantities(p["density"], p["velocity"], p["momentum"]) for p in boxes]
              for s, boxes in predictions.items()}
    linear_q, betas = {}, {}
    for s, boxes in inputs.items():
        pairs = [_linear(i) for i in boxes]
        linear_q[s], betas[s] = [q for q, _ in pairs], [beta for _, beta in pairs]

    progress("pixel statistics and eq. 10")
    truth_pixels = [_pixels(q) for q in truth_q]
    pixel = {"truth": {row: _mean_std([p[row] for p in truth_pixels]) for row in truth_pixels[0]}}
    agree = {}
    for s in schemes:
        pixel[s], agree[s] = {}, {}
        for method, boxes in ((UNET, pred_q[s]), (LINEAR, linear_q.get(s))):
            if not boxes:
                continue
            pixels = [_pixels(q, t) for q, t in zip(boxes, truth_q)]
            pixel[s][method] = {row: _mean_std([p[row] for p in pixels]) for row in PIXEL_ROWS}
            agree[s][method] = {}
            for row in AGREEMENT_ROWS:
                each = [agreement(_row(q, p, row), _row(t, tp, row))
                        for q, p, t, tp in zip(boxes, pixels, truth_q, truth_pixels)]
                agree[s][method][row] = {key: dict(zip(("mean", "std"), _over_boxes([e[key] for e in each])))
                                         for key in ("C_r", "R_std", "R_mean") if key != "R_mean" or row in MEAN_ROWS}

    spectra, spectra_summary = _spectra(truth_q, pred_q, linear_q, schemes, progress)

    progress("density multipoles")
    poles_each = {"truth": [stats.multipoles(t["density"], los) for t in truth]}
    for s in schemes:
        poles_each[f"{s} {UNET}"] = [stats.multipoles(p["density"], los) for p in predictions[s]]
        if linear_q.get(s):
            poles_each[f"{s} {LINEAR_DENSITY}"] = [stats.multipoles(q["density"], los) for q in linear_q[s]]
    poles = _poles_curves(poles_each)
    pole_summary = {}
    for ell, curves in poles.items():
        pole_summary[ell] = {}
        for s in schemes:
            reference = curves.get(f"{s} {LINEAR_DENSITY}", curves["truth"])
            pole_summary[ell][s] = {name.split(" ", 1)[1]: _pole_summary(curves[name], curves["truth"], reference)
                                    for name in curves if name.startswith(f"{s} ")}

    rsd = None
    if catalogs is not None:
        rsd = _rsd(truth, pred_q, catalogs, schemes, los, progress)
        rsd["pole_summary"] = {
            ell: {name: _pole_summary(curve, curves["real space"], curves["redshift space"])
                  for name, curve in curves.items() if name != "real space"}
            for ell, curves in rsd["poles"].items() if ell > 0}

    metrics = {"schemes": schemes, "boxes": len(truth), "beta": {s: v for s, v in betas.items()},
               "pixel": pixel, "agreement": agree, "spectra": spectra, "spectra_summary": spectra_summary,
               "multipoles": {"density": poles, "summary": pole_summary}, "rsd": rsd}
    return metrics, {"truth": truth_q, "pred": pred_q, "linear": linear_q}


# ---------------------------------------------------------------- report


def _pm_boxes(d, fmt="{:.3g}"):
    """'mean ± std' of a {"mean", "std"} dict; the std left out when it is None (one box)."""
    if d["std"] is None:
        return _num(d["mean"], fmt)
    return f"{_num(d['mean'], fmt)} ± {_num(d['std'], fmt)}"


def _columns(metrics):
    """(scheme, method) pairs in table order."""
    return [(s, m) for s in metrics["schemes"] for m in metrics["pixel"][s]]


def _pixel_table(metrics):
    cols = _columns(metrics)
    lines = ["| quantity | truth | " + " | ".join(f"{s}: {m}" for s, m in cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for row, label in PIXEL_ROWS.items():
        truth = metrics["pixel"]["truth"].get(row)
        cells = [_pm_boxes(truth) if truth else ""]
        cells += [_pm_boxes(metrics["pixel"][s][m][row]) for s, m in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _agreement_table(metrics):
    cols = _columns(metrics)
    lines = ["| field | statistic | " + " | ".join(f"{s}: {m}" for s, m in cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for row, label in AGREEMENT_ROWS.items():
        for key in ("C_r", "R_std", "R_mean"):
            if key not in metrics["agreement"][cols[0][0]][cols[0][1]][row]:
                continue
            cells = [_pm_boxes(metrics["agreement"][s][m][row][key], "{:.3f}") for s, m in cols]
            lines.append(f"| {label} | {key} | " + " | ".join(cells) + " |")
    return lines


def _spectra_table(metrics):
    lines = ["| field | k range (h/Mpc) | scheme: method | mean R(k) ± spread over k | max abs(R) | mean r(k) |",
             "|---|---|---|---|---|---|"]
    for q, schemes in metrics["spectra_summary"].items():
        for s, methods in schemes.items():
            for m, row in methods.items():
                name = LINEAR_DENSITY if (q == "density" and m == LINEAR) else m
                if not row.get("bins"):
                    lines.append(f"| {q} | {row['k_range']} | {s}: {name} | no bins | | |")
                    continue
                lines.append(f"| {q} | {row['k_range'][0]:g}-{row['k_range'][1]:g} ({row['bins']} bins) | {s}: {name} "
                             f"| {row['R_mean']:+.3f} ± {row['R_std']:.3f} | {row['max_abs_R']:.3f} "
                             f"| {_num(row.get('r_mean'), '{:.3f}')} |")
    return lines


def _pole_table(summary, label_of=lambda key: key):
    lines = ["| ell | series | mean (P_X - P_ref) ± spread over k, (Mpc/h)^3 | residual fraction |",
             "|---|---|---|---|"]
    for ell, rows in summary.items():
        for key, row in rows.items():
            lines.append(f"| {ell} | {label_of(key)} | {row['diff_mean']:.4g} ± {row['diff_std']:.4g} "
                         f"| {row['residual_fraction']:.3f} |")
    return lines


def _rsd_lines(rsd):
    if rsd is None:
        return ["No halo catalogues were given: no RSD correction measured.", ""]
    ring = rsd["xi"]["ring"]
    lines = [
        f"The heaviest halos up to n = {rsd['number_density']:g} (h/Mpc)^3 ({', '.join(map(str, rsd['nhalos']))} per "
        "box) are put in redshift space with their own velocities (eq. 1), then moved back along the line of sight "
        "with a dark-matter velocity field, the true one (the best a field-level correction can do: halo velocities "
        "differ from the local matter flow) or a U-net's, in two ways:", "",
        f"- {FROM_S}: what an observer can do: the root of r + v_los(r) / (a H) = s along the line of sight "
        f"(candidates every {rsd['root_step_cells']:g} cells, CIC read-out), the densest root (in the same "
        "source's density) where the map folds;",
        f"- {AT_R}: s - v_los(r) / (a H) with the field read out at the true real-space position, the simulation "
        "test of the velocities at the halos.", "",
        "| positions | line-of-sight offset from the real-space position (Mpc/h): rms | median | "
        "xi anisotropy residual |", "|---|---|---|---|"]
    for name, offset in rsd["los_offset"].items():
        lines.append(f"| {name} | {_pm_boxes(offset['rms'], '{:.2f}')} | {_pm_boxes(offset['median'], '{:.2f}')} "
                     f"| {rsd['xi']['anisotropy_residual'][name]:.3f} |")
    lines += ["", "Anisotropy residual: sum over (r_perp, r_par) bins with "
              f"{ring[0]:g} <= r <= {ring[1]:g} Mpc/h of (xi_X - xi_real)^2, divided by the same sum for the "
              "redshift-space halos (1: nothing corrected; 0: the real-space xi recovered).", "",
              "Multipoles of the halo number density (CIC on the evaluation mesh), reference: real space; the "
              "residual fraction is sum_k abs(P_X - P_real) / sum_k abs(P_s - P_real) over "
              f"{POLE_RANGE[0]:g} < k <= {POLE_RANGE[1]:g} h/Mpc:", "", *_pole_table(rsd["pole_summary"]), ""]
    return lines


def _report(metrics, truth, figures):
    density = truth[0]["density"]
    n = metrics["boxes"]
    band = ("mean and 2-sigma band over the test boxes" if n > 1
            else "a single test box, so no band and no spread over boxes")
    betas = "; ".join(f"{s}: {', '.join(f'{b:.2f}' for b in v)}" for s, v in metrics["beta"].items()) or "n/a"
    lines = [
        "# velnet evaluation report: the 2024 halo paper", "",
        f"{n} test box(es) of {density.box_size:g} Mpc/h, {density.nmesh}^3 cells of {density.cell_size:g} Mpc/h, "
        f"z = {density.redshift:g}, line of sight {metrics['config']['los']}, cosmology {density.cosmology.to_dict()}.",
        f"Weighting schemes: {', '.join(f'{s} ({SCHEMES.get(s, s)})' for s in metrics['schemes'])}. "
        f"Linear bias beta (eq. 4) per box: {betas}.", "",
        "Methods: U-net (the two-stage reconstruction) and linear (eq. 2-3: linear theory of the redshift-space halo "
        f"density divided by beta; for the density itself, {LINEAR_DENSITY} = 1 + delta_s / beta).", "",
        "## Pixel statistics (Figs. 4-5): mean ± standard deviation over the cells of all test boxes", "",
        *_pixel_table(metrics), "",
        "phi is the angle between the reconstructed and the true vector in a cell (cells where either is zero are "
        "left out); divergences are spectral.", "",
        "## Correlation coefficient and relative deviation (eq. 10)", "",
        "C_r between prediction and truth over all cells (vector fields: all components); R_std = sigma_pred / "
        "sigma_true - 1; R_mean = mean_pred / mean_true - 1 (density and magnitudes). Mean ± std over test boxes.",
        "", *_agreement_table(metrics), "",
        f"## Power spectra (Figs. 10-12): R(k) = P_pred / P_true - 1, {band}", "",
        "nbodykit FFTPower, bins of width 2 pi / L; vector spectra are summed over components (P_v of eq. 9). "
        "r(k) = P_pred,true / sqrt(P_pred P_true). The k ranges are the paper's.", "",
        *_spectra_table(metrics), "",
        "## Density multipoles (Fig. 14)", "",
        f"P_ell of the reconstructed real-space density against the true one, and of the redshift-space halos "
        f"({LINEAR_DENSITY}); reference: the true density. The residual fraction is sum_k abs(P_X - P_true) / "
        f"sum_k abs(P_s - P_true) with P_s that of {LINEAR_DENSITY} of the same scheme, over "
        f"{POLE_RANGE[0]:g} < k <= {POLE_RANGE[1]:g} h/Mpc.", "",
        *_pole_table({ell: {f"{s}: {name}": row for s, rows in by_scheme.items() for name, row in rows.items()}
                      for ell, by_scheme in metrics["multipoles"]["summary"].items() if int(ell) > 0}), "",
        "## Redshift-space distortions corrected (Fig. 13)", "", *_rsd_lines(metrics["rsd"]),
        "## Figures", "", *[f"- [{f}]({f})" for f in figures], "",
        f"Evaluated in {metrics['provenance']['seconds']:.1f} s on {metrics['provenance']['created']}.", ""]
    return "\n".join(lines)


def _band_rows(metrics, quantities, labels):
    """`plots.band_figure` rows for spectra of `quantities`."""
    rows = {}
    for q in quantities:
        spectra = metrics["spectra"][q]
        rows[f"P(k): {QUANTITIES[q]}"] = {
            f"{s} ({SCHEMES.get(s, s)})": {"truth": spectra["truth"],
                                           **{labels(q, m): c for m, c in spectra[s].items()}}
            for s in metrics["schemes"]}
    return rows


def _figures(folder, metrics, fields):
    schemes = metrics["schemes"]
    truth_q, pred_q = fields["truth"], fields["pred"]
    written = []

    def save(fig, name):
        fig.savefig(folder / name, dpi=100)
        written.append(name)

    truth_pix = [_pixels(q) for q in truth_q]
    pred_pix = {s: [_pixels(q, t) for q, t in zip(pred_q[s], truth_q)] for s in schemes}
    pooled = {s: {row: np.concatenate([np.ravel(p[row]) for p in pred_pix[s]]) for row in PIXEL_ROWS} for s in schemes}
    truth_pooled = {row: np.concatenate([np.ravel(p[row]) for p in truth_pix]) for row in truth_pix[0]}
    for kind, (magnitude, cosine, div) in {"velocity": ("abs_v", "one_minus_cos_v", "theta_v"),
                                           "momentum": ("abs_m", "one_minus_cos_m", "theta_m")}.items():
        panels = {PIXEL_ROWS[magnitude]: {"truth": truth_pooled[magnitude],
                                          **{s: pooled[s][magnitude] for s in schemes}},
                  PIXEL_ROWS[cosine]: {s: pooled[s][cosine] for s in schemes},
                  PIXEL_ROWS[div]: {"truth": truth_pooled[div], **{s: pooled[s][div] for s in schemes}}}
        save(plots.histogram_figure(panels, title=f"{kind}: U-net per cell, all test boxes"), f"histograms_{kind}.png")

    first = {s: pred_pix[s][0] for s in schemes}
    save(plots.pair_histogram_figure(
        {PIXEL_ROWS[row]: {f"{s} U-net": (truth_pix[0][row], first[s][row]) for s in schemes}
         for row in ("abs_v", "abs_m", "theta_v", "theta_m")},
        "true {}", "U-net {}", diagonal=True, title="U-net against truth per cell, test box 0 (Figs. 6-7)"),
        "joint_truth_prediction.png")
    log_density = {"truth": np.log10(np.maximum(truth_pix[0]["density"], 1e-2)),
                   **{s: np.log10(np.maximum(first[s]["density"], 1e-2)) for s in schemes}}
    pix = {"truth": truth_pix[0], **first}
    save(plots.pair_histogram_figure(
        {PIXEL_ROWS[row]: {name if name == "truth" else f"{name} U-net": (log_density[name], pix[name][row])
                           for name in pix}
         for row in ("abs_v", "theta_v", "abs_m", "theta_m")},
        "log10(rho / rho_mean)", "{}", title="density against speed and divergence, test box 0 (Figs. 8-9)"),
        "joint_density.png")

    def label(q, method):
        return LINEAR_DENSITY if (q == "density" and method == LINEAR) else method

    for name, quantities in (("density", ["density"]), ("velocity", ["velocity", "momentum"]),
                             ("divergence", ["theta_v", "theta_m"])):
        save(plots.band_figure(_band_rows(metrics, quantities, label), title=f"power spectra: {name}"),
             f"spectra_{name}.png")

    poles = metrics["multipoles"]["density"]
    rows = {}
    for ell in (e for e in poles if int(e) > 0):
        rows[f"k P_{ell}(k), density ((Mpc/h)^2)"] = {
            f"{s} ({SCHEMES.get(s, s)})": {name.replace(f"{s} ", ""): _times_k(curve)
                                           for name, curve in poles[ell].items()
                                           if name == "truth" or name.startswith(f"{s} ")}
            for s in schemes}
    rsd = metrics["rsd"]
    if rsd is not None:
        for ell in (e for e in rsd["poles"] if int(e) > 0):
            rows[f"k P_{ell}(k), halos ((Mpc/h)^2)"] = {
                f"{s} ({SCHEMES.get(s, s)})": {
                    ("truth" if name == "real space" else name): _times_k(rsd["poles"][ell][name])
                    for name in ("real space", "redshift space", f"true v, {FROM_S}", f"{s} U-net v, {FROM_S}",
                                 f"{s} U-net v, {AT_R}")}
                for s in schemes}
    save(plots.band_figure(rows, logy=False, title="multipoles about the line of sight (Fig. 14)"), "multipoles.png")

    if rsd is not None:
        xi = rsd["xi"]
        panels = {f"{s}, {mode}": {name: (xi["r_perp"], xi["r_par"], xi["curves"][name])
                                   for name in ("real space", "redshift space", f"true v, {mode}",
                                                f"{s} U-net v, {mode}")}
                  for s in schemes for mode in (FROM_S, AT_R)}
        save(plots.xi_contour_figure(panels, XI_LEVELS, title="halo xi(r_perp, r_par), mean over test boxes"), "xi.png")

    density = truth_q[0]["density"]
    depth = max(1, round(4.0 / density.cell_size))
    cut = slice(density.nmesh // 2, density.nmesh // 2 + depth)
    extent = (0.0, density.box_size, 0.0, density.box_size)
    save(plots.slice_figure(
        density.value[:, :, cut].mean(axis=2), truth_q[0]["velocity"].value[:, :, cut].mean(axis=2),
        {f"{s} U-net": pred_q[s][0]["velocity"].value[:, :, cut].mean(axis=2) for s in schemes}, extent,
        stride=max(1, density.nmesh // 24),
        title=f"velocity, test box 0, {depth * density.cell_size:g} Mpc/h slab across the middle (Fig. 4)"),
        "slice_velocity.png")
    return written


def _times_k(curve):
    k = np.asarray(curve["k"], dtype=float)
    std = curve.get("std")
    return {"k": k, "mean": k * np.asarray(curve["mean"], dtype=float),
            "std": None if std is None else k * np.asarray(std, dtype=float)}


def evaluate_halo(truth_fields, predictions_by_scheme, outdir, inputs_by_scheme=None, catalogs=None, los="z",
                  progress=None):
    """Compare halo-paper reconstructions with the truth for each weighting scheme; write a report folder.

    Args:
        truth_fields: one dict, or a list with one per test box, of true `Field`s:
            "density" (rho/rho_mean), "velocity" and "momentum" (km/s), real space.
        predictions_by_scheme: dict scheme ("number", "mass") -> list (one per test box) of
            dicts of predicted "density", "velocity" and "momentum" `Field`s.
        outdir: report folder; written atomically (replaced only when complete).
        inputs_by_scheme: optional dict scheme -> list of the boxes' halo fields (as in a
            `write_halo_fields` file: "halos_s_0".., "linear_velocity_s" with attrs
            "beta", "linear_momentum_s"); adds linear theory everywhere.
        catalogs: optional list of the boxes' halo catalogues (`HaloCatalog` or anything
            with position, velocity, mass, box_size, redshift, cosmology); adds the RSD
            correction and xi(r_perp, r_par).
        los: the line of sight of the redshift space, 0, 1, 2 or "x", "y", "z".
        progress: optional callable taking a short message, called before each step.

    Returns:
        the metrics dict written to metrics.json (numbers that do not exist are None).

    Raises:
        VelnetInputError: missing or non-finite fields, fields off the true density's mesh,
            different numbers of boxes, or an unknown `los` (nothing is left behind).
    """
    start = time.time()
    progress = progress or (lambda message: None)
    los_name = "xyz"[los_axis(los)]
    truth, predictions, inputs, catalogs = _check(truth_fields, predictions_by_scheme, inputs_by_scheme, catalogs)
    with atomic_dir(outdir) as folder:
        metrics, fields = _measure(truth, predictions, inputs, catalogs, los_name, progress)
        metrics["config"] = {"los": los_name, "k_ranges": K_RANGES, "pole_range": list(POLE_RANGE),
                             "halo_number_density": HALO_NUMBER_DENSITY, "xi_rmax": XI_RMAX, "xi_dr": XI_DR,
                             "xi_rmin": XI_RMIN, "root_step_cells": ROOT_STEP,
                             "box_size": truth[0]["density"].box_size, "nmesh": truth[0]["density"].nmesh,
                             "redshift": truth[0]["density"].redshift}
        progress("figures")
        metrics["figures"] = _figures(folder, metrics, fields)
        metrics["provenance"] = _provenance(time.time() - start)
        metrics = stats.to_json(metrics)
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))
        (folder / "report.md").write_text(_report(metrics, truth, metrics["figures"]))
    return metrics

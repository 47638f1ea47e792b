"""Power spectra that compare a reconstructed field with the truth (both papers), and their errors.

Power spectra come only from nbodykit's `FFTPower`, run on the Fourier modes of an
`ArrayMesh` of the field (`fourier` transforms a field once for several spectra). Bins
default to width k_f = 2 pi / L centred on multiples of k_f, up to the Nyquist k; any
other edges are served by summing FFTPower's own finer bins with their mode counts, which
reproduces what FFTPower reports for those edges. The box mean (k = 0) carries no power,
as FFTPower clears it. A vector field's spectrum is the sum over its components (the
trace P = sum_i P_ii). Spectra are in (field units)^2 (Mpc/h)^3, k in h/Mpc.

Multipoles P_ell(k) about a line of sight come from FFTPower's "2d" mode. The spread of
a spectrum over test boxes is rescaled to the error of the mean by eq. 11 of the 2024 halo
paper (`box_error`). Per-cell statistics are in `velnet.statistics.pixels`, correlation functions in
`velnet.statistics.clustering`, T(k) in sub-boxes in `velnet.statistics.subboxes`; every result is
a `velnet.statistics.statistic.Statistic`.

Fields cut into x-slabs over MPI ranks (`velnet.fields.field`) are measured where they lie:
FFTPower runs on pmesh's distributed modes and every rank gets the whole result.
`multipoles` takes whole fields. nbodykit and mpi4py are imported inside the functions that need them.
"""
from dataclasses import dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import los_axis
from velnet.fields.mesh import mesh_of, particle_mesh
from velnet.statistics.statistic import Statistic

ERROR_BANDS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
"""Default k bands (h/Mpc) of `error_spectrum`."""


def check_pair(a, b):
    """Raise VelnetInputError unless two fields share mesh, kind (scalar or vector) and box size."""
    if a.nmesh != b.nmesh or a.is_vector != b.is_vector or not np.isclose(a.box_size, b.box_size):
        raise VelnetInputError(getattr(b, "attrs", {}).get("source"),
                               f"field {b.name!r} ({b.nmesh}^3, {'vector' if b.is_vector else 'scalar'}, "
                               f"{b.box_size} Mpc/h box) does not match {a.name!r} ({a.nmesh}^3, "
                               f"{'vector' if a.is_vector else 'scalar'}, {a.box_size} Mpc/h box)")


@dataclass
class FourierModes:
    """A field's Fourier modes, one nbodykit `ComplexField` per component.

    Transform a field once with `fourier` when it enters several spectra; every spectrum
    function takes a `Field` or a `FourierModes`.
    """

    modes: list
    name: str
    box_size: float
    nmesh: int
    redshift: float
    is_vector: bool


def fourier(field):
    """The field's `FourierModes` (its float64 pmesh real field -> complex field, per component, as
    nbodykit's ArrayMesh computes them; distributed under MPI); passes them through."""
    if isinstance(field, FourierModes):
        return field
    return FourierModes(list(_components(field)), field.name, float(field.box_size), field.nmesh,
                        float(field.redshift), field.is_vector)


def _components(field):
    """Each component's Fourier modes in turn: those of `FourierModes`, or of a `Field` transformed one
    component at a time (so a vector field's modes are never all held at once)."""
    if isinstance(field, FourierModes):
        yield from field.modes
        return
    pm = particle_mesh(field.nmesh, field.box_size, field.comm, "f8")
    for component in [field.value[..., i] for i in range(3)] if field.is_vector else [field.value]:
        real = pm.create(type="real")
        real[...] = component
        modes = real.r2c()
        del real
        yield modes


def default_kedges(field):
    """Bins of width k_f = 2 pi / L centred on multiples of k_f, up to the Nyquist k (h/Mpc)."""
    kf = 2 * np.pi / field.box_size
    return kf * np.arange(0.5, field.nmesh // 2 + 1)


def _spectra(a, others, kedges):
    """Re P_ab (or P_aa) from FFTPower, summed over components, in the bins `kedges`, for each b of `others`.

    a's modes are made once per component for all of `others` (None: the auto spectrum).
    When every bin is a whole number of bins of the narrowest width dk (evenly spaced
    edges, or bands such as 0, 0.05, 0.1, 0.2, ...), FFTPower runs with that dk and its
    bins are summed, with their mode counts, into `kedges`. Otherwise FFTPower runs with
    `dk=0` (one bin per distinct |k|) and those bins are summed instead. Either way the
    result is what FFTPower reports for the bins `kedges`.

    Returns:
        one `(k, power, modes)` per entry of `others`: k (mode-weighted mean), power and
        modes per bin (NaN k and power where empty).
    """
    from nbodykit.algorithms.fftpower import FFTPower

    width = np.diff(kedges)
    dk = width.min()
    steps = (kedges - kedges[0]) / dk
    # (FFTPower fails on a single bin, so one-bin requests take the dk=0 route)
    nested = dk > 0 and steps[-1] > 1.5 and np.allclose(steps, np.round(steps), rtol=0, atol=1e-6)
    options = (dict(dk=dk, kmin=kedges[0], kmax=kedges[-1] + dk / 2) if nested
               else dict(dk=0, kmin=0.0, kmax=kedges[-1] + 2 * np.pi / a.box_size))
    streams = [None if b is None else _components(b) for b in others]
    totals = [0.0] * len(others)
    for modes_a in _components(a):
        for n, stream in enumerate(streams):
            result = FFTPower(modes_a, mode="1d", second=None if stream is None else next(stream), **options).power
            totals[n] = totals[n] + np.asarray(result["power"].real, dtype=float)
    k, count = np.asarray(result["k"], dtype=float), np.asarray(result["modes"], dtype=float)
    fine_edges = np.asarray(result.edges["k"])
    where = 0.5 * (fine_edges[:-1] + fine_edges[1:]) if nested else k
    return [_rebin(where, k, total, count, kedges) for total in totals]


def _rebin(where, k, power_fine, modes, kedges):
    """Mode-weighted means of FFTPower's bins (placed in `kedges` by `where`) in coarse bins.

    As in FFTPower, a bin starting at k = 0 counts the k = 0 mode, whose power it sets to 0.
    """
    index = np.digitize(where, kedges) - 1
    inside = (index >= 0) & (index < len(kedges) - 1) & (modes > 0)
    index, k, modes, power_fine = index[inside], k[inside], modes[inside], power_fine[inside]
    nbin = len(kedges) - 1
    count = np.bincount(index, weights=modes, minlength=nbin)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_k = np.bincount(index, weights=modes * k, minlength=nbin) / count
        mean_power = np.bincount(index, weights=modes * power_fine, minlength=nbin) / count
    return mean_k, mean_power, count


def _spectrum_attrs(field, kedges, **extra):
    return {"box_size": float(field.box_size), "nmesh": int(field.nmesh), "redshift": float(field.redshift),
            "kedges": [float(e) for e in kedges], "estimator": "nbodykit FFTPower on ArrayMesh", **extra}


def _edges(field, kedges):
    return default_kedges(field) if kedges is None else np.asarray(kedges, dtype=float)


def power(field_a, field_b=None, kedges=None):
    """Auto or cross power spectrum with nbodykit.

    Args:
        field_a: scalar or vector `Field` (or its `FourierModes`).
        field_b: optional second field of the same mesh and box: the cross spectrum
            Re P_ab (for vectors, sum_i Re P_{a_i b_i}).
        kedges: bin edges in h/Mpc; default `default_kedges(field_a)`.

    Returns:
        `Statistic` with columns k_lo, k_hi, k (mode-weighted mean), power
        ((units)^2 (Mpc/h)^3) and modes (0, with NaN k and power, for empty bins).

    Raises:
        VelnetInputError: the two fields differ in mesh, kind or box size.
    """
    if field_b is not None:
        check_pair(field_a, field_b)
    kedges = _edges(field_a, kedges)
    (k, p, modes), = _spectra(field_a, [field_b], kedges)
    names = [field_a.name] + ([field_b.name] if field_b is not None else [])
    return Statistic({"k_lo": kedges[:-1], "k_hi": kedges[1:], "k": k, "power": p, "modes": modes},
                     _spectrum_attrs(field_a, kedges, fields=names, kind="cross" if field_b is not None else "auto"))


def _truth_power(truth, kedges, truth_power):
    if truth_power is None:
        return power(truth, kedges=kedges)
    if not np.allclose(truth_power["k_lo"], kedges[:-1]):
        raise ValueError("truth_power was measured in other k bins")
    return truth_power


def compare_spectra(pred, truth, kedges=None, truth_power=None):
    """Prediction, truth and cross spectra, T(k) = P_pred / P_true and r(k) = P_pt / sqrt(P_pp P_tt).

    Args:
        pred: predicted `Field` (or `FourierModes`).
        truth: true `Field` (or `FourierModes`) on the same mesh and box.
        kedges: bin edges in h/Mpc; default `default_kedges(truth)`.
        truth_power: `power(truth, kedges=kedges)` if already measured.

    Returns:
        `Statistic` with columns k_lo, k_hi, k, modes, power_pred, power_true, power_cross, T, r.
    """
    check_pair(truth, pred)
    kedges = _edges(truth, kedges)
    truth = fourier(truth)
    p_tt = _truth_power(truth, kedges, truth_power)
    (_, p_pp, _), (_, p_pt, _) = _spectra(pred, [None, truth], kedges)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = p_pp / p_tt["power"]
        r = p_pt / np.sqrt(p_pp * p_tt["power"])
    columns = {name: p_tt[name] for name in ("k_lo", "k_hi", "k", "modes")}
    columns.update(power_pred=p_pp, power_true=p_tt["power"], power_cross=p_pt, T=t, r=r)
    return Statistic(columns, _spectrum_attrs(truth, kedges, fields=[pred.name, truth.name], kind="comparison"))


def transfer(pred, truth, kedges=None, truth_power=None):
    """T(k) = P_pred / P_true (paper eq. 12).

    Returns:
        `Statistic` with columns k_lo, k_hi, k, modes, T, power_pred, power_true.
    """
    check_pair(truth, pred)
    kedges = _edges(truth, kedges)
    p_tt = _truth_power(truth, kedges, truth_power)
    p_pp = power(pred, kedges=kedges)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = p_pp["power"] / p_tt["power"]
    columns = {name: p_tt[name] for name in ("k_lo", "k_hi", "k", "modes")}
    columns.update(T=t, power_pred=p_pp["power"], power_true=p_tt["power"])
    return Statistic(columns, dict(p_tt.attrs, fields=[pred.name, truth.name], kind="transfer"))


def correlation(pred, truth, kedges=None):
    """r(k) = P_pt / sqrt(P_pp P_tt): `compare_spectra`'s `Statistic` (columns k, r, T, ...)."""
    return compare_spectra(pred, truth, kedges)


def band_variance(field, edges=ERROR_BANDS):
    """Variance of one component of a field carried by the modes in each k band.

    From FFTPower's band power and mode count: var = P modes / V (Parseval), divided by
    the number of components. Bands that cover every k > 0 add up to the field's variance.

    Args:
        field: `Field` (or `FourierModes`).
        edges: band edges in h/Mpc.

    Returns:
        `Statistic` with columns k_lo, k_hi, k, variance ((units)^2) and modes.
    """
    p = power(field, kedges=edges)
    ncomp = 3 if field.is_vector else 1
    variance = np.nan_to_num(p["power"]) * p["modes"] / field.box_size**3 / ncomp
    columns = {name: p[name] for name in ("k_lo", "k_hi", "k", "modes")}
    return Statistic(dict(columns, variance=variance), dict(p.attrs, kind="band variance", components=ncomp))


def _rms_all(field):
    """rms of one component about its mean over the box (over all ranks)."""
    mesh, cells = mesh_of(field), field.nmesh**3
    mean = mesh.sum(np.sum(field.value, axis=(0, 1, 2), dtype=np.float64)) / cells
    square = mesh.sum(sum(np.sum((plane - mean) ** 2, axis=(0, 1)) for plane in field.value)) / cells
    return float(np.sqrt(np.mean(square)))


def error_spectrum(pred, truth, edges=ERROR_BANDS, truth_variance=None):
    """Where in k the error lives: rms of one component of (pred - truth) per k band.

    Args:
        pred: predicted `Field` (vector or scalar).
        truth: true `Field`.
        edges: band edges in h/Mpc.
        truth_variance: `band_variance(truth, edges)` if already measured.

    Returns:
        `Statistic` with columns k_lo, k_hi, modes, rms_error and rms_truth (units of the
        field), and attrs rms_error_all / rms_truth_all over all k > 0 (the rms about the
        box mean over cells).
    """
    check_pair(truth, pred)
    edges = np.asarray(edges, dtype=float)
    diff = truth.with_value(pred.value - truth.value, f"{pred.name} - truth")
    err = band_variance(diff, edges)
    ref = truth_variance if truth_variance is not None else band_variance(truth, edges)
    if not np.allclose(ref["k_lo"], err["k_lo"]):
        raise ValueError("truth_variance was measured in other k bands")
    columns = {"k_lo": err["k_lo"], "k_hi": err["k_hi"], "modes": err["modes"],
               "rms_error": np.sqrt(err["variance"]), "rms_truth": np.sqrt(ref["variance"])}
    attrs = dict(err.attrs, kind="error spectrum", fields=[pred.name, truth.name],
                 rms_error_all=_rms_all(diff), rms_truth_all=_rms_all(truth))
    return Statistic(columns, attrs)


def multipoles(field, los, kedges=None, poles=(0, 2, 4), nmu=10):
    """Power spectrum multipoles P_ell(k) about a line of sight along a box axis, with nbodykit.

    FFTPower in "2d" mode with `poles`; P_ell = (2 ell + 1) / 2 int P(k, mu) L_ell(mu) dmu
    (the 2024 halo paper's eq. 12). Multipoles are even in mu, so nbodykit's mu-binning of
    the half-complex mesh does not affect them.

    Args:
        field: scalar `Field` (e.g. rho/rho_mean, or the redshift-space halo density).
        los: the line of sight: axis 0, 1, 2 or "x", "y", "z".
        kedges: evenly spaced bin edges in h/Mpc; default `default_kedges(field)`.
        poles: even multipole orders.
        nmu: mu bins of the 2D measurement the poles are taken from.

    Returns:
        `Statistic` with columns k_lo, k_hi, k (mode-weighted mean), modes and
        power_<ell> for each ell ((units)^2 (Mpc/h)^3; NaN k and power for empty bins).

    Raises:
        VelnetInputError: a vector field, uneven `kedges`, odd poles or an unknown `los`.
    """
    from nbodykit.algorithms.fftpower import FFTPower
    from nbodykit.source.mesh.array import ArrayMesh

    axis = los_axis(los)
    if field.is_vector:
        raise VelnetInputError(field.attrs.get("source"), f"multipoles need a scalar field; {field.name!r} is a vector")
    if any(int(ell) != ell or ell < 0 or ell % 2 for ell in poles):
        raise VelnetInputError(None, f"poles must be even orders >= 0. Received: {list(poles)}")
    kedges = _edges(field, kedges)
    width = np.diff(kedges)
    if len(kedges) < 3 or not np.allclose(width, width[0]):
        raise VelnetInputError(None, f"multipoles need at least two evenly spaced k bins. Received: {list(kedges)}")
    unit = [0, 0, 0]
    unit[axis] = 1
    mesh = ArrayMesh(np.ascontiguousarray(field.value, dtype="f8"), BoxSize=field.box_size)
    result = FFTPower(mesh, mode="2d", Nmu=nmu, poles=[int(ell) for ell in poles], los=unit, dk=width[0],
                      kmin=kedges[0], kmax=kedges[-1] + width[0] / 2).poles
    n = len(kedges) - 1
    modes = np.asarray(result["modes"], dtype=float)[:n]
    empty = modes == 0
    columns = {"k_lo": kedges[:-1], "k_hi": kedges[1:],
               "k": np.where(empty, np.nan, np.asarray(result["k"], dtype=float)[:n]), "modes": modes}
    for ell in poles:
        columns[f"power_{int(ell)}"] = np.where(empty, np.nan, np.asarray(result[f"power_{int(ell)}"].real)[:n])
    return Statistic(columns, _spectrum_attrs(field, kedges, fields=[field.name], kind="multipoles",
                                              los="xyz"[axis], poles=[int(ell) for ell in poles], nmu=int(nmu)))


def box_error(spread, box_volume, boxes, independent_volume=None):
    """Eq. 11 of the 2024 halo paper: the error of a statistic from its spread over test boxes.

    Delta P = delta P sqrt(V_all / V_overlap), with delta P the standard deviation over the
    boxes, V_overlap the volume the boxes cover counted with overlaps (boxes x box volume)
    and V_all the independent volume among them (the paper: 25 boxes of 600 Mpc/h cut from
    1200 x 1200 x 600 (Mpc/h)^3, a factor 0.4). Boxes of separate simulations overlap
    nowhere: the factor is 1.

    Args:
        spread: standard deviation over the boxes (array or number).
        box_volume: volume of one box, (Mpc/h)^3.
        boxes: number of boxes.
        independent_volume: V_all, (Mpc/h)^3; default boxes x box_volume.

    Returns:
        `(Delta P, factor)`: the rescaled spread and sqrt(V_all / V_overlap).

    Raises:
        VelnetInputError: V_all not in (0, V_overlap].
    """
    overlap = boxes * float(box_volume)
    independent = overlap if independent_volume is None else float(independent_volume)
    if not 0 < independent <= overlap * (1 + 1e-9):
        raise VelnetInputError(None, f"the independent volume must be in (0, {overlap:g}] (Mpc/h)^3, the boxes' "
                                     f"total. Received: independent_volume={independent_volume}")
    factor = float(np.sqrt(independent / overlap))
    return np.asarray(spread, dtype=np.float64) * factor, factor

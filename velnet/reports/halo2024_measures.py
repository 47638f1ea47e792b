"""The measurements of the 2024 halo paper's report (section 3): what `halo2024.evaluate_halo` computes.

Pixel statistics and eq. 10 (`velnet.statistics.pixels`), power spectra with R(k) and r(k) and their
eq. 11 errors (`velnet.statistics.spectra`), density multipoles, xi(r_perp, r_par) of the dark matter and
of the halos (`velnet.statistics.clustering`), and the halos moved back to real space (`velnet.physics.rsd`), for
every weighting scheme and method over the test boxes.
"""
import numpy as np

from velnet.fields.field import Field, los_axis
from velnet.fields.mesh import smoothed
from velnet.fields.painting import paint
from velnet.physics.linear import divergence
from velnet.physics.rsd import ROOT_STEP, read_back, real_space_positions, redshift_space_positions
from velnet.statistics import spectra
from velnet.statistics.clustering import (
    XI_DR,
    XI_RMAX,
    anisotropy_residual,
    field_xi,
    points_xi,
    xi_centres,
)
from velnet.statistics.pixels import agreement, cosine, magnitude, mean_std

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
XI_RMIN = 5.0
"""Smallest separation (Mpc/h) counted in the xi residuals; the largest is XI_RMAX, capped at a quarter of the box."""
XI_LEVELS = (0.1, 0.2, 0.5, 1.0, 2.0)
"""Contour levels of the halo xi figure (halos, so above the paper's dark-matter levels)."""
XI_DENSITY_LEVELS = (0.02, 0.06, 0.12)
"""Contour levels of the dark-matter xi figure: the paper's Fig. 13."""
NETWORKS = ("density", "velocity", "momentum")
"""The networks whose loss curves Fig. 3 shows, left to right."""
FROM_S, SMOOTHED, AT_R = "from s", "from s, smoothed", "at r"
"""RSD correction modes: root search from the redshift-space position (what an observer can do), the
same with the velocity and density Gaussian-smoothed at `RSD_SMOOTHING`, and read-out at the known
real-space position (the simulation test of the velocities at the halos)."""
RSD_SMOOTHING = 3.0
"""Mpc/h. Where a velocity field folds the line of sight (1 + dv_los/dr / (a H) < 0, inside clusters)
the root search has several roots; smoothing unfolds it. The radius is chosen with the true fields
alone, on the halo experiment's training boxes 1-4 and validation boxes 25-26
(`experiments.halo_rsd_smoothing`): 97.3 % of the anisotropy removed at 3 Mpc/h, against 79.7 %
unsmoothed and 93.6 / 96.8 / 86.1 % at 2 / 4 / 6 Mpc/h; every method's field is then smoothed alike."""


def heaviest(catalog, number_density=HALO_NUMBER_DENSITY):
    """Indices of the heaviest halos up to `number_density` (h/Mpc)^3 (all when there are fewer)."""
    count = min(len(catalog.mass), int(round(number_density * float(catalog.box_size) ** 3)))
    return np.argsort(-np.asarray(catalog.mass), kind="stable")[:count]


def halo_density(positions, like, name="halos"):
    """CIC number density 1 + delta of points on the mesh of the `Field` `like` (`velnet.fields.painting.paint`)."""
    value = paint(positions, like.box_size, like.nmesh)
    return Field(value.astype(np.float32), name, like.box_size, like.redshift, like.cosmology)


def _los_offset(a, b, box_size, axis):
    """Periodic separation b - a along one axis, in [-L/2, L/2)."""
    return np.mod(b[:, axis] - a[:, axis] + box_size / 2, box_size) - box_size / 2


def quantities(density, velocity, momentum):
    """The compared fields of one reconstruction (or the truth), as `Field`s."""
    return {"density": density, "velocity": velocity, "momentum": momentum,
            "theta_v": velocity.with_value(divergence(velocity), "theta_v"),
            "theta_m": momentum.with_value(divergence(momentum), "theta_m")}


def linear_fields(inputs):
    """Linear theory of the redshift-space halos: 1 + delta_s / beta and eq. 2-3."""
    velocity = inputs["linear_velocity_s"]
    beta = float(velocity.attrs["beta"])
    halos = _halo_sum(inputs).value
    density = velocity.with_value((1.0 + (halos - 1.0) / beta).astype(np.float32), "density")
    return quantities(density, velocity, inputs["linear_momentum_s"]), beta


def pixel_values(q, truth_q=None):
    """Per-cell values of the pixel-statistics rows (1 - cos phi is NaN where either vector is zero)."""
    out = {"density": q["density"].value, "abs_v": magnitude(q["velocity"].value), "theta_v": q["theta_v"].value,
           "abs_m": magnitude(q["momentum"].value), "theta_m": q["theta_m"].value}
    if truth_q is not None:
        out["one_minus_cos_v"] = 1.0 - cosine(q["velocity"].value, truth_q["velocity"].value)
        out["one_minus_cos_m"] = 1.0 - cosine(q["momentum"].value, truth_q["momentum"].value)
    return out


def _row(quantities, pixels, row):
    """The values of an eq. 10 row: a pixel statistic (magnitudes) or a whole field."""
    return pixels[row] if row in pixels else quantities[row].value


def over_boxes(values):
    """Mean and standard deviation (ddof 1; NaN for one box) of per-box numbers or arrays."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1:], np.nan)
    return values.mean(axis=0), std


def _curve(k, each, factor, truth_each=None, r_each=None):
    """A spectrum over boxes: mean and std of P, its eq. 11 error (std x `factor`), and mean and std
    of R = P / P_true - 1 and r when given."""
    mean, std = over_boxes(each)
    curve = {"k": k, "mean": mean, "std": std, "error": std * factor}
    if truth_each is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            curve["R_mean"], curve["R_std"] = over_boxes(np.asarray(each) / np.asarray(truth_each) - 1)
    if r_each is not None:
        curve["r_mean"], curve["r_std"] = over_boxes(r_each)
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


def _spectra(truth_q, method_q, schemes, factor, progress):
    """Per quantity: the truth's curve and, per scheme and method, curves with R(k) and r(k)."""
    out, summary = {}, {}
    for q in QUANTITIES:
        progress(f"power spectra of {q}")
        truth_each, each = [], {s: {} for s in schemes}
        for b, truth in enumerate(truth_q):
            modes = spectra.fourier(truth[q])
            truth_power = spectra.power(modes)
            truth_each.append(truth_power["power"])
            k = truth_power["k"]
            for s in schemes:
                for method, boxes in method_q[s].items():
                    comparison = spectra.compare_spectra(boxes[b][q], modes, truth_power=truth_power)
                    each[s].setdefault(method, []).append(comparison)
        out[q] = {"truth": _curve(k, truth_each, factor)}
        summary[q] = {}
        for s in schemes:
            out[q][s], summary[q][s] = {}, {}
            for method, comparisons in each[s].items():
                curve = _curve(k, [c["power_pred"] for c in comparisons], factor, truth_each,
                               [c["r"] for c in comparisons])
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


def _poles_curves(poles_each, factor):
    """Multipole curves (mean, std and eq. 11 error over boxes) per series from per-box `Statistic`s."""
    first = next(iter(poles_each.values()))[0]
    ells = [int(c.split("_")[1]) for c in first.columns if c.startswith("power_")]
    return {ell: {name: _curve(first["k"], [p[f"power_{ell}"] for p in each], factor)
                  for name, each in poles_each.items()}
            for ell in ells}


def _density_xi(truth, method_q, inputs, schemes, los, progress):
    """xi(r_perp, r_par) of the true and reconstructed dark matter and of the redshift-space halos (Fig. 13).

    Each mean over boxes; "residual" per curve: sum over XI_RMIN <= r <= rmax of (xi - xi_true)^2
    over the same of xi_true^2 (0: the true xi).
    """
    progress("dark-matter xi(r_perp, r_par)")
    rmax = min(XI_RMAX, truth[0]["density"].box_size / 4)
    each = {"truth": [field_xi(t["density"], los, rmax)[2] for t in truth]}
    for s in schemes:
        for method, boxes in _reconstructions(method_q[s]).items():
            each[f"{s} {method}"] = [field_xi(q["density"], los, rmax)[2] for q in boxes]
        if inputs.get(s):
            each[f"{s} halos_s"] = [field_xi(_halo_sum(i), los, rmax)[2] for i in inputs[s]]
    centres = xi_centres(rmax, XI_DR)
    curves = {name: np.mean(values, axis=0) for name, values in each.items()}
    radius = np.hypot(centres[:, None], centres[None, :])
    ring = (radius >= XI_RMIN) & (radius <= centres[-1] + (centres[1] - centres[0]) / 2) & np.isfinite(curves["truth"])
    norm = np.sum(curves["truth"][ring] ** 2)
    residual = {name: float(np.sum((xi - curves["truth"])[ring] ** 2) / norm) for name, xi in curves.items()
                if name != "truth"}
    return {"r_perp": centres, "r_par": centres, "curves": curves, "residual": residual, "levels": XI_DENSITY_LEVELS,
            "ring": [XI_RMIN, float(centres[-1] + (centres[1] - centres[0]) / 2)]}


def _halo_sum(inputs):
    """1 + delta_s of all the redshift-space halos: the sum of a box's halo channels, as a `Field`."""
    channels = [f for name, f in inputs.items() if name.startswith("halos_s_")]
    return channels[0].with_value(np.sum([f.value for f in channels], axis=0, dtype=np.float64), "halos_s")


def training_summary(histories):
    """Per scheme and network: epochs run, the best val_loss and its epoch, from CSVLogger rows."""
    return {s: {name: {"epochs": len(rows), "best_epoch": min(rows, key=lambda r: r["val_loss"])["epoch"],
                       "best_val_loss": min(r["val_loss"] for r in rows), "final_loss": rows[-1]["loss"]}
                for name, rows in by_network.items()}
            for s, by_network in histories.items()}


def _rsd(truth, method_q, catalogs, schemes, los, factor, progress):
    """Halo positions moved back with each velocity field; their xi(r_perp, r_par), P_ell and los offsets."""
    axis = los_axis(los)
    fields = [("true v", None), *((f"{s} {m} v", (s, m)) for s in schemes for m in _reconstructions(method_q[s]))]
    names = ["real space", "redshift space", *(f"{f}, {m}" for f, _ in fields for m in (FROM_S, SMOOTHED, AT_R))]
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
        for name, method in fields:
            source = truth[b] if method is None else method_q[method[0]][method[1]][b]
            positions[f"{name}, {FROM_S}"] = real_space_positions(s, source["velocity"], axis, source["density"])
            v_r, rho_r = (source[f].with_value(smoothed(source[f], RSD_SMOOTHING)) for f in ("velocity", "density"))
            positions[f"{name}, {SMOOTHED}"] = real_space_positions(s, v_r, axis, rho_r)
            positions[f"{name}, {AT_R}"] = read_back(s, real, source["velocity"], axis)
        for name, where in positions.items():
            xi_each[name].append(points_xi(where, catalog.box_size, axis, rmax=rmax)[2])
            poles_each[name].append(spectra.multipoles(halo_density(where, truth[b]["density"]), axis))
            if name != "real space":
                distance = np.abs(_los_offset(real, where, catalog.box_size, axis))
                offsets[name]["rms"].append(float(np.sqrt(np.mean(distance ** 2))))
                offsets[name]["median"].append(float(np.median(distance)))
    centres = xi_centres(rmax, XI_DR)
    xi = {name: np.mean(each, axis=0) for name, each in xi_each.items()}
    residual = {name: anisotropy_residual(xi[name], xi["real space"], xi["redshift space"], centres, XI_RMIN)
                for name in names[1:]}
    return {"nhalos": nhalos, "number_density": HALO_NUMBER_DENSITY, "root_step_cells": ROOT_STEP,
            "los_offset": {name: {key: dict(zip(("mean", "std"), over_boxes(v))) for key, v in d.items()}
                           for name, d in offsets.items()},
            "xi": {"r_perp": centres, "r_par": centres, "curves": xi, "anisotropy_residual": residual,
                   "ring": [XI_RMIN, float(centres[-1] + (centres[1] - centres[0]) / 2)]},
            "poles": _poles_curves(poles_each, factor)}


def _reconstructions(methods):
    """The methods of a scheme that reconstruct every field (all but eq. 2-3's linear theory)."""
    return {m: boxes for m, boxes in methods.items() if m != LINEAR}


def mean_abs_error(pred, truth):
    """Mean over cells of abs(pred - truth); for vectors, of the length of the difference."""
    diff = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    return float(np.mean(magnitude(diff) if diff.ndim == 4 else np.abs(diff)))


def measure(truth, predictions, inputs, catalogs, los, factor, progress, baselines=None):
    """Every statistic of the report.

    Args:
        truth: list per box of dicts of true `Field`s.
        predictions: dict scheme -> list per box of the U-net's predicted `Field`s.
        inputs: dict scheme -> list per box of halo fields (adds eq. 2-3's linear theory).
        catalogs, los, factor, progress: as `evaluate_halo`.
        baselines: dict scheme -> dict method name -> list per box of predicted `Field`s (the
            classical halo references), measured beside the U-net.

    Returns:
        (metrics, fields): the metrics dict and the compared fields per scheme and method.
    """
    schemes = list(predictions)
    progress("fields")
    truth_q = [quantities(t["density"], t["velocity"], t["momentum"]) for t in truth]
    method_q, betas = {}, {}
    for s in schemes:
        methods = {UNET: predictions[s], **(baselines or {}).get(s, {})}
        method_q[s] = {m: [quantities(p["density"], p["velocity"], p["momentum"]) for p in boxes]
                       for m, boxes in methods.items()}
        if inputs.get(s):
            pairs = [linear_fields(i) for i in inputs[s]]
            method_q[s][LINEAR], betas[s] = [q for q, _ in pairs], [beta for _, beta in pairs]

    progress("pixel statistics and eq. 10")
    truth_pixels = [pixel_values(q) for q in truth_q]
    pixel = {"truth": {row: mean_std(*(p[row] for p in truth_pixels)) for row in truth_pixels[0]}}
    agree = {}
    for s in schemes:
        pixel[s], agree[s] = {}, {}
        for method, boxes in method_q[s].items():
            pixels = [pixel_values(q, t) for q, t in zip(boxes, truth_q)]
            pixel[s][method] = {row: mean_std(*(p[row] for p in pixels)) for row in PIXEL_ROWS}
            agree[s][method] = {}
            for row in AGREEMENT_ROWS:
                pairs = [(_row(q, p, row), _row(t, tp, row))
                         for q, p, t, tp in zip(boxes, pixels, truth_q, truth_pixels)]
                each = [{**agreement(a, b), "mean_abs_error": mean_abs_error(a, b)} for a, b in pairs]
                agree[s][method][row] = {key: dict(zip(("mean", "std"), over_boxes([e[key] for e in each])))
                                         for key in ("C_r", "R_std", "R_mean", "mean_abs_error")
                                         if key != "R_mean" or row in MEAN_ROWS}

    spectra_rows, spectra_summary = _spectra(truth_q, method_q, schemes, factor, progress)

    progress("density multipoles")
    poles_each = {"truth": [spectra.multipoles(t["density"], los) for t in truth]}
    for s in schemes:
        for method, boxes in method_q[s].items():
            name = LINEAR_DENSITY if method == LINEAR else method
            poles_each[f"{s} {name}"] = [spectra.multipoles(q["density"], los) for q in boxes]
    poles = _poles_curves(poles_each, factor)
    pole_summary = {}
    for ell, curves in poles.items():
        pole_summary[ell] = {}
        for s in schemes:
            reference = curves.get(f"{s} {LINEAR_DENSITY}", curves["truth"])
            pole_summary[ell][s] = {name.split(" ", 1)[1]: _pole_summary(curves[name], curves["truth"], reference)
                                    for name in curves if name.startswith(f"{s} ")}

    rsd = None
    if catalogs is not None:
        rsd = _rsd(truth, method_q, catalogs, schemes, los, factor, progress)
        rsd["pole_summary"] = {
            ell: {name: _pole_summary(curve, curves["real space"], curves["redshift space"])
                  for name, curve in curves.items() if name != "real space"}
            for ell, curves in rsd["poles"].items() if ell > 0}

    metrics = {"schemes": schemes, "boxes": len(truth), "beta": {s: v for s, v in betas.items()},
               "pixel": pixel, "agreement": agree, "spectra": spectra_rows, "spectra_summary": spectra_summary,
               "multipoles": {"density": poles, "summary": pole_summary},
               "density_xi": _density_xi(truth, method_q, inputs, schemes, los, progress), "rsd": rsd}
    return metrics, {"truth": truth_q, "methods": method_q}

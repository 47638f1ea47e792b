"""The text of the 2024 halo paper's report: report.md, its tables and what they mean."""
from velnet.reports.common import number, plus_minus
from velnet.reports.halo2024_measures import (
    AGREEMENT_ROWS,
    AT_R,
    FROM_S,
    LINEAR,
    LINEAR_DENSITY,
    PIXEL_ROWS,
    POLE_RANGE,
    RSD_SMOOTHING,
    SCHEMES,
    SMOOTHED,
)


def _columns(metrics):
    """(scheme, method) pairs in table order."""
    return [(s, m) for s in metrics["schemes"] for m in metrics["pixel"][s]]


def _pixel_table(metrics):
    cols = _columns(metrics)
    lines = ["| quantity | truth | " + " | ".join(f"{s}: {m}" for s, m in cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for row, label in PIXEL_ROWS.items():
        truth = metrics["pixel"]["truth"].get(row)
        cells = [plus_minus(truth) if truth else ""]
        cells += [plus_minus(metrics["pixel"][s][m][row]) for s, m in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _agreement_table(metrics):
    cols = _columns(metrics)
    lines = ["| field | statistic | " + " | ".join(f"{s}: {m}" for s, m in cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for row, label in AGREEMENT_ROWS.items():
        for key in ("C_r", "R_std", "R_mean"):
            if key not in metrics["agreement"][cols[0][0]][cols[0][1]][row]:
                continue
            cells = [plus_minus(metrics["agreement"][s][m][row][key], "{:.3f}") for s, m in cols]
            lines.append(f"| {label} | {key} | " + " | ".join(cells) + " |")
    return lines


REFERENCE_ROWS = ("density", "velocity", "theta_v", "momentum", "theta_m")
"""The fields of the comparison with the classical halo reference."""


def _reference_lines(metrics):
    """Each method against the classical halo reference of its scheme: C_r and mean abs(error)."""
    references = metrics.get("reference") or {}
    if not references:
        return ["No classical halo reference was given (velnet evaluate --classical SCHEME=FILE).", ""]
    lines = ["Each method against the classical halo reference of its weighting (the first baseline given): C_r "
             "(eq. 10) and the mean over cells of abs(prediction - truth) (vectors: the length of the difference; "
             "km/s, km/s per Mpc/h for divergences, rho/rho_mean for the density), mean over the test boxes. A ratio "
             "below 1 and a positive difference mean the method beats the reference.", "",
             "| scheme | field | method | C_r | C_r - C_r(reference) | mean abs(error) | error / reference's |",
             "|---|---|---|---|---|---|---|"]
    for s, reference in references.items():
        agree = metrics["agreement"][s]
        for row in REFERENCE_ROWS:
            ref = agree[reference][row]
            for method, rows in agree.items():
                c_r, err = rows[row]["C_r"]["mean"], rows[row]["mean_abs_error"]["mean"]
                lines.append(f"| {s} | {AGREEMENT_ROWS[row]} | {method}{' (reference)' if method == reference else ''} "
                             f"| {c_r:.3f} | {c_r - ref['C_r']['mean']:+.3f} | {number(err, '{:.4g}')} "
                             f"| {err / ref['mean_abs_error']['mean']:.3f} |")
    return lines + [""]


SECTION3 = (
    # (label, the paper's value, how to read it from the metrics)
    ("C_r, v components", "about 0.9", ("agreement", "velocity")),
    ("C_r, theta_v", "about 0.9", ("agreement", "theta_v")),
    ("C_r, m components", "about 0.9", ("agreement", "momentum")),
    ("C_r, rho", "not given (its eq. 10 is for v, theta_v, m, theta_m)", ("agreement", "density")),
    ("1 - cos phi, velocity", "0.01 ± 0.06", ("pixel", "one_minus_cos_v")),
    ("mean R(k), density, k < 0.3", "abs(R) < 0.13", ("spectra", "density")),
    ("mean R(k), velocity, 0.05-0.2", "abs(R) < 0.07", ("spectra", "velocity")),
    ("mean R(k), momentum, 0.05-0.2", "abs(R) < 0.07", ("spectra", "momentum")),
    ("mean R(k), theta_v, 0.05-0.3", "within ± 0.1", ("spectra", "theta_v")),
    ("xi anisotropy removed, halos moved from s", "'good agreement'", ("rsd", "from s")),
    (f"xi anisotropy removed, moved from s, fields smoothed at {RSD_SMOOTHING:g} Mpc/h", "", ("rsd", SMOOTHED)),
    ("xi anisotropy removed, halos read at r", "", ("rsd", "at r")),
)
"""Rows of the summary table: the statistics of the paper's section 3 that it states as numbers."""


def _section3_value(metrics, scheme, method, source, key):
    if source == "agreement":
        return f"{metrics['agreement'][scheme][method][key]['C_r']['mean']:.3f}"
    if source == "pixel":
        return plus_minus(metrics["pixel"][scheme][method][key], "{:.3f}")
    if source == "spectra":
        row = metrics["spectra_summary"][key][scheme][method]
        return f"{row['R_mean']:+.3f}" if row.get("bins") else "no bins"
    rsd = metrics.get("rsd")
    name = f"{scheme} {method} v, {key}"
    if method == LINEAR or rsd is None or name not in rsd["xi"]["anisotropy_residual"]:
        return ""
    return f"{1 - rsd['xi']['anisotropy_residual'][name]:.0%}"


def _section3_lines(metrics):
    """The summary: the paper's section-3 numbers beside every scheme and method, over all test boxes."""
    cols = _columns(metrics)
    lines = ["| statistic | paper | " + " | ".join(f"{s}: {m}" for s, m in cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for label, paper, (source, key) in SECTION3:
        cells = [_section3_value(metrics, s, m, source, key) for s, m in cols]
        lines.append(f"| {label} | {paper} | " + " | ".join(cells) + " |")
    return lines + ["", "Anisotropy removed: 1 - the xi anisotropy residual of the halos moved back with the "
                        "method's velocity (section 'Redshift-space distortions corrected').", ""]


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
                             f"| {number(row.get('r_mean'), '{:.3f}')} |")
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
        "differ from the local matter flow) or a method's, in three ways:", "",
        f"- {FROM_S}: what an observer can do: the root of r + v_los(r) / (a H) = s along the line of sight "
        f"(candidates every {rsd['root_step_cells']:g} cells, CIC read-out), the densest root (in the same "
        "source's density) where the map folds;",
        f"- {SMOOTHED}: the same with the velocity and density Gaussian-smoothed at {RSD_SMOOTHING:g} Mpc/h, which "
        "unfolds the map inside clusters (the radius where the true fields' correction peaks on the experiment's "
        "training and validation boxes);",
        f"- {AT_R}: s - v_los(r) / (a H) with the field read out at the true real-space position, the simulation "
        "test of the velocities at the halos.", "",
        "| positions | line-of-sight offset from the real-space position (Mpc/h): rms | median | "
        "xi anisotropy residual |", "|---|---|---|---|"]
    for name, offset in rsd["los_offset"].items():
        lines.append(f"| {name} | {plus_minus(offset['rms'], '{:.2f}')} | {plus_minus(offset['median'], '{:.2f}')} "
                     f"| {rsd['xi']['anisotropy_residual'][name]:.3f} |")
    lines += ["", "Anisotropy residual: sum over (r_perp, r_par) bins with "
              f"{ring[0]:g} <= r <= {ring[1]:g} Mpc/h of (xi_X - xi_real)^2, divided by the same sum for the "
              "redshift-space halos (1: nothing corrected; 0: the real-space xi recovered).", "",
              "Multipoles of the halo number density (CIC on the evaluation mesh), reference: real space; the "
              "residual fraction is sum_k abs(P_X - P_real) / sum_k abs(P_s - P_real) over "
              f"{POLE_RANGE[0]:g} < k <= {POLE_RANGE[1]:g} h/Mpc:", "", *_pole_table(rsd["pole_summary"]), ""]
    return lines


def _density_xi_lines(xi):
    ring = xi["ring"]
    lines = ["xi(r_perp, r_par) of the real-space dark-matter density, true and reconstructed, and of the "
             "redshift-space halos (the sum of the halo channels, 1 + delta_s), each from its mesh: "
             "<delta(x) delta(x + r)> over every pair of cells, in bins of "
             f"{xi['r_perp'][1] - xi['r_perp'][0]:g} Mpc/h (mean over the test boxes; the figure's contours at the "
             f"paper's levels {', '.join(f'{v:g}' for v in xi['levels'])}). Residual: sum over bins with "
             f"{ring[0]:g} <= r <= {ring[1]:g} Mpc/h of (xi_X - xi_true)^2 / sum of xi_true^2 (0: the true xi).", "",
             "| field | residual against the true dark matter |", "|---|---|"]
    lines += [f"| {name} | {number(value, '{:.3f}')} |" for name, value in xi["residual"].items()]
    return lines + [""]


def _training_lines(training):
    if not training:
        return ["No training histories were given.", ""]
    lines = ["Loss (training) and val_loss (validation) per epoch of each network (Fig. 3; the losses are eq. 5 "
             "for the density and eq. 6 for velocity and momentum, in normalised units):", "",
             "| scheme | network | epochs | best val_loss (epoch) | last training loss |", "|---|---|---|---|---|"]
    for s, networks in training.items():
        for name, row in networks.items():
            lines.append(f"| {s} | {name} | {row['epochs']} | {number(row['best_val_loss'], '{:.4g}')} "
                         f"({row['best_epoch']}) | {number(row['final_loss'], '{:.4g}')} |")
    return lines + [""]


def report_text(metrics, truth, figures):
    density = truth[0]["density"]
    n = metrics["boxes"]
    factor = metrics["config"]["eq11_factor"]
    band = (f"mean and 2-sigma band over the test boxes, sigma = Delta P of eq. 11: the standard deviation over the "
            f"boxes times sqrt(V_all / V_overlap) = {factor:.3g}" if n > 1
            else "a single test box, so no band and no spread over boxes")
    betas = "; ".join(f"{s}: {', '.join(f'{b:.2f}' for b in v)}" for s, v in metrics["beta"].items()) or "n/a"
    lines = [
        "# velnet evaluation report: the 2024 halo paper", "",
        f"{n} test box(es) of {density.box_size:g} Mpc/h, {density.nmesh}^3 cells of {density.cell_size:g} Mpc/h, "
        f"z = {density.redshift:g}, line of sight {metrics['config']['los']}, cosmology {density.cosmology.to_dict()}.",
        f"Weighting schemes: {', '.join(f'{s} ({SCHEMES.get(s, s)})' for s in metrics['schemes'])}. "
        f"Linear bias beta (eq. 4) per box: {betas}.", "",
        "Methods: U-net (the two-stage reconstruction), the classical halo references where given (filter: the "
        "per-(k, mu) linear filter of the four halo channels fitted on the training boxes; reconstruction: iterative "
        "redshift-space reconstruction of the displacement, v = f a H psi, as kSZ analyses use), and linear (eq. 2-3: "
        "linear theory of the redshift-space halo density divided by beta; for the density itself, "
        f"{LINEAR_DENSITY} = 1 + delta_s / beta).", "",
        "## The paper's section 3 in numbers", "", *_section3_lines(metrics),
        "## Against the classical halo reference", "", *_reference_lines(metrics),
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
        "r(k) = P_pred,true / sqrt(P_pred P_true). The k ranges are the paper's. Eq. 11: Delta P(k) = delta P(k) "
        "sqrt(V_all / V_overlap), with delta P the standard deviation over the test boxes, V_overlap their total "
        f"volume ({metrics['config']['boxes_volume']:.4g} (Mpc/h)^3) and V_all the independent volume among them "
        f"({metrics['config']['independent_volume']:.4g}; the paper's 25 overlapping boxes: a factor 0.4; boxes "
        "of separate simulations: 1).", "",
        *_spectra_table(metrics), "",
        "## Density multipoles (Fig. 14)", "",
        f"P_ell of the reconstructed real-space density against the true one, and of the redshift-space halos "
        f"({LINEAR_DENSITY}); reference: the true density. The residual fraction is sum_k abs(P_X - P_true) / "
        f"sum_k abs(P_s - P_true) with P_s that of {LINEAR_DENSITY} of the same scheme, over "
        f"{POLE_RANGE[0]:g} < k <= {POLE_RANGE[1]:g} h/Mpc.", "",
        *_pole_table({ell: {f"{s}: {name}": row for s, rows in by_scheme.items() for name, row in rows.items()}
                      for ell, by_scheme in metrics["multipoles"]["summary"].items() if int(ell) > 0}), "",
        "## Dark-matter xi(r_perp, r_par) in real space (Fig. 13)", "", *_density_xi_lines(metrics["density_xi"]),
        "## Redshift-space distortions corrected: halos (Fig. 13)", "", *_rsd_lines(metrics["rsd"]),
        "## Training (Fig. 3)", "", *_training_lines(metrics["training"]),
        "## Figures", "", *[f"- [{f}]({f})" for f in figures], "",
        f"Evaluated in {metrics['provenance']['seconds']:.1f} s on {metrics['provenance']['created']}.", ""]
    return "\n".join(lines)

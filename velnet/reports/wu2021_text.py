"""The text of Wu et al. 2021's report: report.md, its tables and what they mean."""
from velnet.reports.common import number, plus_minus
from velnet.reports.wu2021_measures import PHASE_FRACTION, R_LOW, T_NEAR, TABLE_K, WORST_RANGE
from velnet.statistics import pixels
from velnet.statistics.subboxes import SUBBOX_NOTE

_PIXEL_ROWS = {"abs_v": "abs(v) (km/s)", "abs_v_residual": "abs(v_residual) (km/s)",
               "abs_cos_theta": "abs(cos theta)", "cos_theta": "cos theta (signed)", "abs_p": "abs(p) (km/s)",
               "abs_p_residual": "abs(p_residual) (km/s)"}
_TITLES = {"abs_v": "P_abs(v)", "theta_v": "P_theta_v", "p": "P_p", "curl_p": "P_curl_p"}


def _pixel_table(pixel, methods):
    lines = ["| quantity | truth | " + " | ".join(methods) + " |", "|---" * (2 + len(methods)) + "|"]
    for key, label in _PIXEL_ROWS.items():
        cells = [plus_minus(pixel[n][key]) if key in pixel[n] else "" for n in ["truth", *methods]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _spectrum_table(q, table, methods):
    head = " | ".join(f"k={k}" for k in TABLE_K)
    lines = [f"**{_TITLES[q]}** ({pixels.QUANTITIES[q]})", "",
             f"| | {head} | worst T over {WORST_RANGE[0]}<k<{WORST_RANGE[1]} |", "|---" * (len(TABLE_K) + 2) + "|"]
    for name in methods:
        row = table[name]
        worst = row["worst_T"]
        where = "n/a" if worst["k"] is None else f"{worst['T']:.3f} at k={worst['k']:.3f}"
        lines.append(f"| T(k), {name} | " + " | ".join(number(row['T'][str(k)], "{:.3f}") for k in TABLE_K)
                     + f" | {where} |")
    for name in methods:
        lines.append(f"| r(k), {name} | " + " | ".join(number(table[name]['r'][str(k)], "{:.3f}") for k in TABLE_K)
                     + " | |")
    return lines + [""]


def _error_table(errors, methods):
    first = errors[methods[0]]
    bands = [f"{lo:g}-{hi:g}" for lo, hi in zip(first["columns"]["k_lo"], first["columns"]["k_hi"])]
    lines = ["| k band (h/Mpc) | " + " | ".join(bands) + " | all k |", "|---" * (len(bands) + 2) + "|",
             "| truth rms | " + " | ".join(number(v, "{:.1f}") for v in first["columns"]["rms_truth"])
             + f" | {number(first['attrs']['rms_truth_all'], '{:.1f}')} |"]
    for name in methods:
        err = errors[name]
        lines.append(f"| {name} error rms | " + " | ".join(number(v, "{:.1f}") for v in err["columns"]["rms_error"])
                     + f" | {number(err['attrs']['rms_error_all'], '{:.1f}')} |")
    return lines


def _subbox_table(metrics, methods):
    lines = ["| spectrum | method | " + " | ".join(f"k={k}" for k in TABLE_K) + " |",
             "|---" * (len(TABLE_K) + 2) + "|"]
    for q in pixels.QUANTITIES:
        for name in methods:
            row = metrics["subboxes"][q]["table"][name]
            cells = []
            for k in TABLE_K:
                mean, spread = row["T_mean"][str(k)], row["T_std"][str(k)]
                cells.append(number(mean, "{:.3f}") + ("" if spread is None else f" ± {spread:.3f}"))
            lines.append(f"| {_TITLES[q]} | {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _phase_sentences(metrics):
    out = []
    for q in pixels.QUANTITIES:
        for name, row in metrics["spectra"][q]["table"].items():
            flag = row["phases_wrong"]
            if flag:
                out.append(f"- {name}, {_TITLES[q]}: power right, phases wrong. For {flag['k_min']:.2f} <= k <= "
                           f"{flag['k_max']:.2f} h/Mpc ({flag['bins']} of {flag['bins_in_range']} bins in "
                           f"{WORST_RANGE[0]}-{WORST_RANGE[1]}) T(k) is within {T_NEAR:.0%} of 1 but r(k) is only "
                           f"between {flag['r_min']:.2f} and {flag['r_max']:.2f}: the field has the right amount "
                           "of structure in the wrong places.")
    return out or [f"- No method has T(k) within {T_NEAR:.0%} of 1 together with r(k) < {R_LOW} in "
                   f"{PHASE_FRACTION:.0%} or more of the bins over {WORST_RANGE[0]} < k < {WORST_RANGE[1]} h/Mpc."]


def _reference_table(metrics, reference):
    """Each method's mean abs(v_res) and band errors as ratios to the reference's."""
    errors, pixel = metrics["error_spectrum"], metrics["pixel"]
    ref = errors[reference]["columns"]
    bands = [f"{lo:g}-{hi:g}" for lo, hi in zip(ref["k_lo"], ref["k_hi"])]
    lines = [f"Ratios to {reference} (below 1: better than the reference). Its own values: mean abs(v_res) "
             f"{number(pixel[reference]['abs_v_residual']['mean'], '{:.1f}')} km/s; band errors "
             + " / ".join(number(v, "{:.1f}") for v in ref["rms_error"]) + " km/s.", "",
             "| method | mean abs(v_res) | " + " | ".join(bands) + " |", "|---" * (len(bands) + 2) + "|"]
    for name in metrics["methods"]:
        if name == reference:
            continue
        ratio = pixel[name]["abs_v_residual"]["mean"] / pixel[reference]["abs_v_residual"]["mean"]
        cells = [number(e / r if r else None, "{:.2f}") for e, r in zip(errors[name]["columns"]["rms_error"],
                                                                      ref["rms_error"])]
        lines.append(f"| {name} | {ratio:.2f} | " + " | ".join(cells) + " |")
    return lines + [""]


def report_text(metrics, density, figures):
    methods = metrics["methods"]
    cfg = metrics["config"]
    reference = cfg.get("reference")
    sub = next(iter(metrics["subboxes"]["abs_v"]["results"].values()))["attrs"]
    lines = [
        "# velnet evaluation report", "",
        f"Box {density.box_size:g} Mpc/h, {density.nmesh}^3 cells of {density.cell_size:g} Mpc/h, "
        f"z = {density.redshift:g}, cosmology {density.cosmology.to_dict()}.",
        f"Methods compared with the truth: {', '.join(methods)}.", "",
        "Definitions (Wu et al. 2021, section 4): |v| the speed; v_residual = v_pred - v_true; theta the angle "
        "between predicted and true velocity; p = |v| (1 + delta), the magnitude of the momentum field (the "
        "paper's text writes p = |v| delta; the momentum magnitude is the non-negative version); "
        "theta_v = div v; curl p = curl of the momentum vector (its spectrum is summed over the three "
        "components). Power spectra: nbodykit FFTPower on the whole periodic box, bins of width 2 pi / L; "
        "T(k) = P_pred / P_true, r(k) = P_pred,true / sqrt(P_pred P_true), read at each k by linear "
        "interpolation between bins.", "",
        "## Pixel statistics, whole box (mean ± standard deviation over cells)", "",
        *_pixel_table(metrics["pixel"], methods), "",
        "The paper quotes the same quantities in three 40x40x2 (Mpc/h)^3 slices (see 'Slices' below).", "",
        "## T(k) and r(k), whole box (the paper's Tables 1-4)", "",
    ]
    for q in pixels.QUANTITIES:
        lines += _spectrum_table(q, metrics["spectra"][q]["table"], methods)
    if reference:
        lines += ["## Against the classical reference", "", *_reference_table(metrics, reference)]
    lines += ["## Power right, phases wrong?", "", *_phase_sentences(metrics), "",
              "## Where the error lives: rms of one velocity component per k band (km/s)", "",
              "Band variances come from FFTPower's band power times its mode count over the volume (Parseval); "
              "'all k' is the standard deviation over cells (the box mean excluded).", "",
              *_error_table(metrics["error_spectrum"], methods), "",
              f"## Sub-boxes: T(k), mean ± spread over {sub['n_sub']} sub-box(es) of {sub['sub_box_size']:g} Mpc/h",
              "",
              f"As the paper measured it, in ({cfg['subbox_size']:g} Mpc/h)^3 boxes (here {sub['sub_box_cells']} "
              "cells per side, the nearest whole number of cells; spread = standard deviation over sub-boxes, "
              f"shown when there are several). Caveat: {SUBBOX_NOTE}.", ""]
    lines += _subbox_table(metrics, methods)
    lines += ["## Slices (an extra view)", "",
              "Chosen as the paper did, 40x40x2 (Mpc/h)^3 slices centred on the highest-density regions: every "
              "periodic window of that size (thin along z) is ranked by its mean density; the densest is taken, "
              "every window whose x-y footprint overlaps it (at any z) is dropped, and so on. Each holds few cells, "
              "so these numbers are noisy.",
              ""]
    for i, entry in enumerate(metrics["slices"], start=1):
        slab = entry["slab"]
        lines += [f"**Slice {i}**: cells {slab['start']} + {slab['shape']} (wrapping), mean rho/rho_mean "
                  f"{slab['mean_density']:.2f}", "", *_pixel_table(entry["pixel"], methods), ""]
    lines += ["## Figures", "", *[f"- [{f}]({f})" for f in figures], "",
              f"Evaluated in {metrics['provenance']['seconds']:.1f} s on {metrics['provenance']['created']}.", ""]
    return "\n".join(lines)

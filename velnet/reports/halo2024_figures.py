"""The figures of the 2024 halo paper's report (Figs. 3-14), from its measurements."""
import numpy as np

from velnet.reports import plots
from velnet.reports.halo2024_measures import (
    AT_R,
    FROM_S,
    LINEAR,
    LINEAR_DENSITY,
    NETWORKS,
    PIXEL_ROWS,
    QUANTITIES,
    SCHEMES,
    SMOOTHED,
    UNET,
    XI_LEVELS,
    pixel_values,
)


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


def figures(folder, metrics, fields, histories):
    schemes = metrics["schemes"]
    truth_q = fields["truth"]
    pred_q = {s: fields["methods"][s][UNET] for s in schemes}
    written = []

    def save(fig, name):
        fig.savefig(folder / name, dpi=100)
        written.append(name)

    truth_pix = [pixel_values(q) for q in truth_q]
    pred_pix = {s: [pixel_values(q, t) for q, t in zip(pred_q[s], truth_q)] for s in schemes}
    pooled = {s: {row: np.concatenate([np.ravel(p[row]) for p in pred_pix[s]]) for row in PIXEL_ROWS} for s in schemes}
    truth_pooled = {row: np.concatenate([np.ravel(p[row]) for p in truth_pix]) for row in truth_pix[0]}
    for kind, (size, angle, div) in {"velocity": ("abs_v", "one_minus_cos_v", "theta_v"),
                                     "momentum": ("abs_m", "one_minus_cos_m", "theta_m")}.items():
        panels = {PIXEL_ROWS[size]: {"truth": truth_pooled[size], **{s: pooled[s][size] for s in schemes}},
                  PIXEL_ROWS[angle]: {s: pooled[s][angle] for s in schemes},
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
                                 f"{s} U-net v, {SMOOTHED}", f"{s} U-net v, {AT_R}")}
                for s in schemes}
    save(plots.band_figure(rows, logy=False, title="multipoles about the line of sight (Fig. 14)"), "multipoles.png")

    if rsd is not None:
        xi = rsd["xi"]
        panels = {f"{s}, {mode}": {name: (xi["r_perp"], xi["r_par"], xi["curves"][name])
                                   for name in ("real space", "redshift space", f"true v, {mode}",
                                                f"{s} U-net v, {mode}")}
                  for s in schemes for mode in (FROM_S, SMOOTHED, AT_R)}
        save(plots.xi_contour_figure(panels, XI_LEVELS, title="halo xi(r_perp, r_par), mean over test boxes"), "xi.png")
    xi = metrics["density_xi"]
    panels = {f"{s} ({SCHEMES.get(s, s)})": {name: (xi["r_perp"], xi["r_par"], xi["curves"][name])
                                             for name in ("truth", f"{s} {UNET}", f"{s} halos_s")
                                             if name in xi["curves"]}
              for s in schemes}
    save(plots.xi_contour_figure(panels, xi["levels"], title="dark matter, real space (Fig. 13)"), "xi_density.png")
    if histories:
        save(plots.loss_figure(histories, NETWORKS, title="loss per epoch (Fig. 3)"), "loss_curves.png")

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
    """k P_ell(k) of a multipole curve, with its eq. 11 error times k."""
    k = np.asarray(curve["k"], dtype=float)
    error = curve.get("error")
    return {"k": k, "mean": k * np.asarray(curve["mean"], dtype=float),
            "error": None if error is None else k * np.asarray(error, dtype=float)}

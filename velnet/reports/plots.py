"""Figures of the evaluation reports (Wu et al. 2021, Figs. 3-6; the 2024 halo paper, Figs. 3-14), with matplotlib.

Every function takes arrays or `velnet.statistics.statistic.Statistic` results and returns a
`matplotlib.figure.Figure` built without pyplot, so nothing depends on a display; save it
with `fig.savefig(path)` (Agg).
"""
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

TRUTH_COLOR = "0.35"
R_MAX = 2.0
"""Top of the R(k) axes of `band_figure`."""


def _quiver(ax, vec, extent, plane, stride):
    if not np.any(vec[..., list(plane)]):
        return
    a, b = vec.shape[:2]
    x = extent[0] + (np.arange(a) + 0.5) * (extent[1] - extent[0]) / a
    y = extent[2] + (np.arange(b) + 0.5) * (extent[3] - extent[2]) / b
    X, Y = np.meshgrid(x[::stride], y[::stride], indexing="ij")
    ax.quiver(X, Y, vec[::stride, ::stride, plane[0]], vec[::stride, ::stride, plane[1]],
              color="white", pivot="mid", width=0.005)


def _show(ax, image, extent, title, cmap, norm):
    im = ax.imshow(image.T, origin="lower", extent=extent, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    return im


def slice_figure(density, truth, predictions, extent, plane=(0, 1), symbol="v", units="km/s", stride=1,
                 title=""):
    """A slice as in the paper's Figs. 3-4: truth and predictions on top, density and residuals below.

    Colour is the magnitude of the vector field, arrows its in-plane components.

    Args:
        density: `(a, b)` rho/rho_mean in the slice plane.
        truth: `(a, b, 3)` true vector field (e.g. velocity, km/s).
        predictions: dict method name -> `(a, b, 3)` prediction.
        extent: (x0, x1, y0, y1) of the slice in Mpc/h.
        plane: the two vector components lying in the plane.
        symbol: the field's symbol for labels ("v", "p").
        units: its units.
        stride: draw every `stride`-th arrow.
        title: figure title.

    Returns:
        Figure with 2 rows and 1 + len(predictions) columns.
    """
    ncol = 1 + len(predictions)
    fig = Figure(figsize=(3.1 * ncol + 0.8, 6.3))
    grid = fig.add_gridspec(2, ncol + 1, width_ratios=[1] * ncol + [0.06], left=0.06, right=0.92, bottom=0.07,
                            top=0.9, wspace=0.12, hspace=0.22)
    axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(ncol)] for r in range(2)])
    magnitude = Normalize(0, max(np.percentile(np.linalg.norm(f, axis=-1), 99)
                                 for f in [truth, *predictions.values()]) or 1.0)
    residual = Normalize(0, max(np.percentile(np.linalg.norm(f - truth, axis=-1), 99)
                                for f in predictions.values()) or 1.0)
    im = _show(axes[0, 0], np.linalg.norm(truth, axis=-1), extent, "truth", "viridis", magnitude)
    _quiver(axes[0, 0], truth, extent, plane, stride)
    positive = density[density > 0]
    dens_norm = LogNorm(max(positive.min(initial=1e-2), 1e-2), max(density.max(), 1.1))
    dens = _show(axes[1, 0], np.maximum(density, dens_norm.vmin), extent, "density", "magma", dens_norm)
    fig.colorbar(dens, cax=axes[1, 0].inset_axes([0.05, 0.9, 0.5, 0.04]), orientation="horizontal")
    for col, (name, pred) in enumerate(predictions.items(), start=1):
        _show(axes[0, col], np.linalg.norm(pred, axis=-1), extent, name, "viridis", magnitude)
        _quiver(axes[0, col], pred, extent, plane, stride)
        res = _show(axes[1, col], np.linalg.norm(pred - truth, axis=-1), extent, f"{name} - truth", "viridis",
                    residual)
        _quiver(axes[1, col], pred - truth, extent, plane, stride)
    fig.colorbar(im, cax=fig.add_subplot(grid[0, ncol]), label=f"|{symbol}| ({units})")
    fig.colorbar(res, cax=fig.add_subplot(grid[1, ncol]), label=f"|{symbol} residual| ({units})")
    for ax in axes[1]:
        ax.set_xlabel("Mpc/h")
    for ax in axes[:, 0]:
        ax.set_ylabel("Mpc/h")
    fig.suptitle(title)
    return fig


def _plain_log_ticks(axis):
    """Ticks at 1, 2, 5 x 10^n labelled as plain numbers on a log axis."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def spectra_figure(rows, title=""):
    """P(k), T(k) = P_pred / P_true and r(k) panels, one row per field (the paper's Fig. 6 plus r).

    Args:
        rows: dict row label (the field, with its units) -> dict method name ->
            `Statistic` from `spectra.compare_spectra` (all of a row on the same truth).
        title: figure title.

    Returns:
        Figure with len(rows) x 3 panels.
    """
    fig = Figure(figsize=(13, 3.2 * len(rows) + 0.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.06, top=0.94, wspace=0.25, hspace=0.35)
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for (label, comparisons), (ax_p, ax_t, ax_r) in zip(rows.items(), axes):
        first = next(iter(comparisons.values()))
        ok = first["modes"] > 0
        ax_p.loglog(first["k"][ok], first["power_true"][ok], color=TRUTH_COLOR, lw=2, label="truth")
        for name, stat in comparisons.items():
            ax_p.loglog(stat["k"][ok], np.abs(stat["power_pred"][ok]), label=name)
            ax_t.semilogx(stat["k"][ok], stat["T"][ok], label=name)
            ax_r.semilogx(stat["k"][ok], stat["r"][ok], label=name)
        ax_t.axhline(1, color=TRUTH_COLOR, lw=0.8)
        ax_t.set_yscale("log")
        ax_r.axhline(1, color=TRUTH_COLOR, lw=0.8)
        ax_r.set_ylim(min(-0.1, np.nanmin([np.nanmin(s["r"][ok]) for s in comparisons.values()])), 1.05)
        for axis in (ax_p.xaxis, ax_t.xaxis, ax_r.xaxis, ax_t.yaxis):
            _plain_log_ticks(axis)
        ax_p.set_ylabel(f"P(k): {label}", fontsize=8)
        ax_t.set_ylabel("T(k) = P_pred / P_true")
        ax_r.set_ylabel("r(k)")
    for ax in axes[-1]:
        ax.set_xlabel("k (h/Mpc)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def error_spectrum_figure(spectra, units="km/s", title=""):
    """Bars of the rms error per k band for each method, next to the truth's own rms.

    Args:
        spectra: dict method name -> `Statistic` from `spectra.error_spectrum` (same bands).
        units: units of the rms.
        title: figure title.

    Returns:
        Figure with one grouped bar chart, the rms on a logarithmic axis.
    """
    rows = -(-(1 + len(spectra)) // 4)  # legend rows below the axes, four entries each
    fig = Figure(figsize=(6 + 0.6 * len(spectra), 4 + 0.25 * rows))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.12 + 0.06 * rows, top=0.92)
    ax = fig.subplots()
    first = next(iter(spectra.values()))
    labels = [f"{lo:g}-{hi:g}" for lo, hi in zip(first["k_lo"], first["k_hi"])]
    x = np.arange(len(labels))
    width = 0.8 / (1 + len(spectra))
    pairs = colormaps["tab20"].colors  # the ten tab10 colours, then their light shades
    colors = pairs[::2] + pairs[1::2]
    ax.bar(x, first["rms_truth"], width, color=TRUTH_COLOR, label="truth")
    for i, (name, stat) in enumerate(spectra.items(), start=1):
        ax.bar(x + i * width, stat["rms_error"], width, color=colors[(i - 1) % len(colors)],
               label=f"{name} error")
    ax.set_xticks(x + 0.4 - width / 2, labels)
    ax.set_xlabel("k band (h/Mpc)")
    ax.set_ylabel(f"rms of one component ({units})")
    ax.set_yscale("log")  # errors span two decades across the bands
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax.set_title(title)
    return fig


def histogram_figure(panels, bins=50, title=""):
    """Histograms of per-cell values, one panel per quantity (the paper's Fig. 3, right).

    Args:
        panels: dict panel label -> dict series name -> 1D array.
        bins: bins per panel (shared by all series of a panel).
        title: figure title.

    Returns:
        Figure with one panel per entry of `panels`.
    """
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.25)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (label, series) in zip(axes, panels.items()):
        finite = [np.asarray(v)[np.isfinite(v)] for v in series.values()]
        both = np.concatenate(finite)
        lo, hi = np.percentile(both, [0.0, 99.9])
        if hi - lo <= 1e-6 * max(1.0, abs(hi)):  # (nearly) one value: a unit-wide range around it
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
        for name, values in zip(series, finite):
            color = TRUTH_COLOR if name == "truth" else None
            ax.hist(values, bins=edges, histtype="step", density=True, label=name, color=color)
        ax.set_xlabel(label)
    axes[0].set_ylabel("probability density")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def joint_figure(density, rows, bins=80, title=""):
    """Cell-by-cell joint distributions of density and other fields (the paper's Fig. 5).

    Args:
        density: rho/rho_mean per cell (any shape); plotted as log10(rho/rho_mean).
        rows: dict y-axis label -> dict name -> array of the density's shape (e.g. truth
            and predicted theta_v); the first entry of a row sets the row's y range.
        bins: bins per axis.
        title: figure title.

    Returns:
        Figure with one row of 2D histograms per entry of `rows`, sharing axes in a row.
    """
    n = max(len(fields) for fields in rows.values())
    fig = Figure(figsize=(3.6 * n + 0.8, 3.4 * len(rows) + 0.5))
    grid = fig.add_gridspec(len(rows), n + 1, width_ratios=[1] * n + [0.06], left=0.08, right=0.93,
                            bottom=0.08, top=0.9, wspace=0.1, hspace=0.35)
    x = np.log10(np.maximum(np.ravel(density), 1e-3))
    for r, (ylabel, fields) in enumerate(rows.items()):
        first = np.ravel(next(iter(fields.values())))
        lo, hi = np.percentile(first, [0.1, 99.9])
        span = max(abs(lo), abs(hi), 1e-12)
        y_range = [-span, span] if lo < 0 else [lo, max(hi, lo + 1e-12)]
        counts = [np.histogram2d(x, np.ravel(v), bins=bins, range=[[x.min(), x.max() + 1e-6], y_range])
                  for v in fields.values()]
        norm = LogNorm(1, max(2, max(c[0].max() for c in counts)))
        axes = []
        for i, (name, (count, xe, ye)) in enumerate(zip(fields, counts)):
            ax = fig.add_subplot(grid[r, i], sharex=axes[0] if axes else None, sharey=axes[0] if axes else None)
            im = ax.pcolormesh(xe, ye, np.ma.masked_equal(count, 0).T, norm=norm, cmap="viridis")
            ax.set_title(name, fontsize=9)
            if i:
                ax.tick_params(labelleft=False)
            axes.append(ax)
        axes[0].set_ylabel(ylabel, fontsize=8)
        fig.colorbar(im, cax=fig.add_subplot(grid[r, n]), label="cells")
    for ax in fig.axes:
        if ax.get_subplotspec().rowspan.stop == len(rows) and ax.get_subplotspec().colspan.start < n:
            ax.set_xlabel("log10(rho / rho_mean)")
    fig.suptitle(title)
    return fig


def band_figure(rows, logy=True, title=""):
    """Curves with 2-sigma bands over boxes, and their relative deviation R below (the 2024 paper's Figs. 10-12, 14).

    Args:
        rows: dict row label (quantity and units) -> dict column title (e.g. a weighting
            scheme) -> dict curve name -> dict with "k" (h/Mpc), "mean", "error" (the sigma of
            the band: eq. 11's Delta P over boxes; None or NaN draws no band) and optionally
            "R_mean", "R_std" (R = P / P_true - 1);
            a curve named "truth" is drawn in grey. A row gets an R panel below when any of
            its curves has "R_mean".
        logy: logarithmic y axis for the values (else linear, e.g. for k P_2(k)).
        title: figure title.

    Returns:
        Figure with one column per column title; each row a value panel (and an R panel).
    """
    columns = list(next(iter(rows.values())))
    heights, kinds = [], []
    for label, panels in rows.items():
        has_r = any("R_mean" in c for curves in panels.values() for c in curves.values())
        heights += [3, 1.6] if has_r else [3]
        kinds += [(label, "value"), (label, "R")] if has_r else [(label, "value")]
    height = 0.95 * sum(heights) + 1.0
    fig = Figure(figsize=(5.2 * len(columns) + 0.6, height))
    grid = fig.add_gridspec(len(heights), len(columns), height_ratios=heights, left=0.09, right=0.98,
                            bottom=0.45 / height, top=1 - 0.6 / height, wspace=0.22, hspace=0.3)
    for c, column in enumerate(columns):
        value_ax = None
        for r, (label, kind) in enumerate(kinds):
            ax = fig.add_subplot(grid[r, c], sharex=value_ax)
            for name, curve in rows[label][column].items():
                if kind == "R" and "R_mean" not in curve:
                    continue
                k = np.asarray(curve["k"], dtype=float)
                mean = np.asarray(curve["R_mean" if kind == "R" else "mean"], dtype=float)
                std = curve.get("R_std" if kind == "R" else "error")
                color = TRUTH_COLOR if name == "truth" else None
                line, = ax.plot(k, mean, label=name, color=color, lw=2 if name == "truth" else 1.2)
                if std is not None and np.any(np.isfinite(np.asarray(std, dtype=float))):
                    low, high = mean - 2 * np.asarray(std, dtype=float), mean + 2 * np.asarray(std, dtype=float)
                    if kind == "value" and logy:  # a log axis cannot show the band below zero
                        low = np.maximum(low, 0.05 * mean)
                    ax.fill_between(k, low, high, color=line.get_color(), alpha=0.2, lw=0)
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
            if kind == "value":
                value_ax = ax
                if logy:
                    ax.set_yscale("log")
                ax.set_ylabel(label, fontsize=8)
                ax.set_title(column, fontsize=9)
                if c == 0:
                    ax.legend(fontsize=7)
            else:
                ax.axhline(0, color=TRUTH_COLOR, lw=0.8)
                low, high = ax.get_ylim()
                ax.set_ylim(max(low, -1.05), min(high, R_MAX))  # R >= -1; far above, it says little
                ax.set_ylabel(f"R(k) (axis cut at {R_MAX:g})" if high > R_MAX else "R(k)", fontsize=8)
        ax.set_xlabel("k (h/Mpc)")
    fig.suptitle(title)
    return fig


def pair_histogram_figure(rows, xlabel, ylabel, bins=60, diagonal=False, title=""):
    """2D histograms of cell pairs (x, y), one row per quantity, one column per case (the 2024 paper's Figs. 6-9).

    Args:
        rows: dict row label -> dict column title -> (x, y) arrays of equal size; the
            axis ranges of a row come from the 0.5 and 99.5 percentiles of all its values.
        xlabel: x-axis label; "{}" in it is replaced by the row label.
        ylabel: y-axis label; "{}" in it is replaced by the row label.
        bins: bins per axis.
        diagonal: draw y = x (prediction against truth).
        title: figure title.

    Returns:
        Figure with len(rows) x (number of columns) panels, colour = log of the cell count.
    """
    ncol = max(len(cols) for cols in rows.values())
    width, height = 4.0 * ncol + 1.0, 3.4 * len(rows) + 0.8
    fig = Figure(figsize=(width, height))
    grid = fig.add_gridspec(len(rows), ncol + 1, width_ratios=[1] * ncol + [0.05], left=0.9 / width,
                            right=1 - 0.8 / width, bottom=0.5 / height, top=1 - 0.7 / height, wspace=0.45,
                            hspace=0.45)
    for r, (label, cols) in enumerate(rows.items()):
        xs = np.concatenate([np.ravel(x) for x, _ in cols.values()])
        ys = np.concatenate([np.ravel(y) for _, y in cols.values()])
        x_range = list(np.percentile(xs[np.isfinite(xs)], [0.5, 99.5]))
        y_range = list(np.percentile(ys[np.isfinite(ys)], [0.5, 99.5]))
        if diagonal:
            x_range = y_range = [min(x_range[0], y_range[0]), max(x_range[1], y_range[1])]
        x_range[1] = max(x_range[1], x_range[0] + 1e-9)
        y_range[1] = max(y_range[1], y_range[0] + 1e-9)
        counts = {name: np.histogram2d(np.ravel(x), np.ravel(y), bins=bins, range=[x_range, y_range])
                  for name, (x, y) in cols.items()}
        norm = LogNorm(1, max(2, max(c[0].max() for c in counts.values())))
        for i, (name, (count, xe, ye)) in enumerate(counts.items()):
            ax = fig.add_subplot(grid[r, i])
            im = ax.pcolormesh(xe, ye, np.ma.masked_equal(count, 0).T, norm=norm, cmap="viridis")
            if diagonal:
                ax.plot(x_range, x_range, color="red", lw=0.8)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(xlabel.replace("{}", label), fontsize=8)
            ax.set_ylabel(ylabel.replace("{}", label), fontsize=8)
        fig.colorbar(im, cax=fig.add_subplot(grid[r, ncol]), label="cells")
    fig.suptitle(title)
    return fig


def xi_contour_figure(panels, levels, title=""):
    """Contours of the anisotropic correlation function xi(r_perp, r_par) (the 2024 paper's Fig. 13).

    Args:
        panels: dict panel title -> dict curve name -> (r_perp, r_par, xi): bin centres
            (Mpc/h, 1D) and xi `(len(r_perp), len(r_par))`. The first curve of a panel is
            filled in grey, the others drawn as coloured contour lines.
        levels: increasing xi values of the contours.
        title: figure title.

    Returns:
        Figure with one square panel per entry.
    """
    fig = Figure(figsize=(4.4 * len(panels), 4.6))
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.12, top=0.86, wspace=0.25)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    styles = ["--", ":", "-.", "-"]
    for ax, (panel, curves) in zip(axes, panels.items()):
        handles = []
        for i, (name, (r_perp, r_par, xi)) in enumerate(curves.items()):
            xi = np.asarray(xi, dtype=float).T
            if i == 0:
                top = max(np.nanmax(xi), levels[-1]) * 1.01 + 1e-12
                ax.contourf(r_perp, r_par, xi, levels=[*levels, top], cmap="Greys", alpha=0.5)
                ax.contour(r_perp, r_par, xi, levels=levels, colors=TRUTH_COLOR, linewidths=1)
                handles.append(ax.plot([], [], color=TRUTH_COLOR, lw=6, alpha=0.5, label=name)[0])
            else:
                color = f"C{i - 1}"
                ax.contour(r_perp, r_par, xi, levels=levels, colors=color, linestyles=styles[(i - 1) % 4],
                           linewidths=1.3)
                handles.append(ax.plot([], [], color=color, ls=styles[(i - 1) % 4], label=name)[0])
        ax.set_aspect("equal")
        ax.set_xlabel("r_perp (Mpc/h)")
        ax.set_ylabel("r_par (Mpc/h)")
        ax.set_title(panel, fontsize=9)
        ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.suptitle(f"{title} (contours at xi = {', '.join(f'{v:g}' for v in levels)})")
    return fig


def compute_curve_figure(panels, xlabel="training samples seen", ylabel="mean abs(v_res) (km/s)", title=""):
    """Error against training compute, one panel per test box, with horizontal reference lines.

    Args:
        panels: dict panel title -> {"curves": {name: (x, y)}, "lines": {name: y}}; x on a log axis.
        xlabel, ylabel: axis labels.
        title: figure title.

    Returns:
        Figure with the panels side by side, sharing the y axis.
    """
    fig = Figure(figsize=(5.2 * len(panels) + 0.6, 4.4))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.3, top=0.88, wspace=0.08)
    for ax, (panel, content) in zip(axes, panels.items()):
        for name, (x, y) in content["curves"].items():
            ax.plot(x, y, marker="o", label=name)
        for i, (name, y) in enumerate(content["lines"].items()):
            ax.axhline(y, color=TRUTH_COLOR if i == 0 else f"C{len(content['curves']) + i}", ls="--", lw=1.2,
                       label=name)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_title(panel, fontsize=10)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5 * len(panels) + 0.04, -0.18))
    fig.suptitle(title)
    return fig


def loss_figure(histories, columns, title=""):
    """Training (black) and validation (red) loss per epoch, one row per case and one column per
    network (the 2024 paper's Fig. 3).

    Args:
        histories: dict row title (e.g. a weighting scheme) -> dict network -> rows
            {"epoch", "loss", "val_loss"} (as `velnet.training.train.read_history` gives them).
        columns: the networks, in column order; a missing one leaves its panel empty.
        title: figure title.

    Returns:
        Figure with len(histories) x len(columns) panels, log loss against epoch.
    """
    fig = Figure(figsize=(4.2 * len(columns), 3.2 * len(histories) + 0.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.88, wspace=0.28, hspace=0.4)
    axes = np.atleast_2d(fig.subplots(len(histories), len(columns), squeeze=False))
    for row, (case, networks) in zip(axes, histories.items()):
        for ax, name in zip(row, columns):
            ax.set_title(f"{case}: {name}", fontsize=9)
            rows = networks.get(name)
            if not rows:
                ax.set_axis_off()
                continue
            epochs = [r["epoch"] + 1 for r in rows]
            ax.plot(epochs, [r["loss"] for r in rows], color="black", label="training")
            ax.plot(epochs, [r["val_loss"] for r in rows], color="red", label="validation")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig

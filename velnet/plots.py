"""Figures of the evaluation report (Wu et al. 2021, Figs. 3-6), drawn with matplotlib.

Every function takes arrays or `velnet.stats.Statistic` results and returns a
`matplotlib.figure.Figure` built without pyplot, so nothing depends on a display; save it
with `fig.savefig(path)` (Agg).
"""
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

TRUTH_COLOR = "0.35"


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
            `Statistic` from `stats.compare_spectra` (all of a row on the same truth).
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
        spectra: dict method name -> `Statistic` from `stats.error_spectrum` (same bands).
        units: units of the rms.
        title: figure title.

    Returns:
        Figure with one grouped bar chart.
    """
    fig = Figure(figsize=(8, 4))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.14, top=0.9)
    ax = fig.subplots()
    first = next(iter(spectra.values()))
    labels = [f"{lo:g}-{hi:g}" for lo, hi in zip(first["k_lo"], first["k_hi"])]
    x = np.arange(len(labels))
    width = 0.8 / (1 + len(spectra))
    ax.bar(x, first["rms_truth"], width, color=TRUTH_COLOR, label="truth")
    for i, (name, stat) in enumerate(spectra.items(), start=1):
        ax.bar(x + i * width, stat["rms_error"], width, label=f"{name} error")
    ax.set_xticks(x + 0.4 - width / 2, labels)
    ax.set_xlabel("k band (h/Mpc)")
    ax.set_ylabel(f"rms of one component ({units})")
    ax.legend(fontsize=8)
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

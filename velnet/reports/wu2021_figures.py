"""The figures of Wu et al. 2021's report: what they show, gathered as the report's entries pass
(`FigureData`), and the PNG files drawn from it (`figures`).
"""
import numpy as np

from velnet.reports import plots
from velnet.statistics import pixels

SAMPLE_SIDE = 128
"""Per-cell figures (histograms, joint distributions) use every cell of boxes up to this many per
side, and every s-th cell on each axis of larger ones (s = N // SAMPLE_SIDE)."""


class FigureData:
    """What the figures show, gathered on rank 0 as the entries pass: each slice's plane means (thin
    axis averaged) and a regular sample of cells (`SAMPLE_SIDE`)."""

    def __init__(self, density, slabs):
        self.density, self.slabs = density, slabs
        self.stride = max(1, density.nmesh // SAMPLE_SIDE)
        self.planes = {"density": [_slab_plane(density, slab) for slab in slabs]}
        self.samples = {("density", ""): self._sample(density)}

    def _sample(self, field):
        """Every `stride`-th cell on each axis of the field, on rank 0 (None on the others)."""
        offset = (-field.start) % self.stride
        part = field.value[offset::self.stride, ::self.stride, ::self.stride]
        if field.comm is None:
            return part
        parts = field.comm.gather(part)
        return None if parts is None else np.concatenate(parts)

    def add(self, name, fields, truth_velocity=None):
        """An entry's velocity (and momentum, in the first slice) slices and sampled velocities."""
        self.planes[name] = [{key: _slab_plane(fields[key], slab) for key in (("velocity", "momentum") if i == 0
                                                                               else ("velocity",))}
                             for i, slab in enumerate(self.slabs)]
        self.samples[(name, "velocity")] = self._sample(fields["velocity"])

    def add_quantity(self, name, q, field):
        """The sampled theta_v and (curl p)_x of an entry (the joint figure's)."""
        if q in ("theta_v", "curl_p"):
            self.samples[(name, q)] = self._sample(field)


def _slab_plane(field, slab):
    """A slice's cells of a field averaged over its thin (last) axis, `(nx, ny[, 3])`, on every rank."""
    index = slab.index(field.nmesh)
    x = np.ravel(index[0]) - field.start
    held = np.flatnonzero((x >= 0) & (x < field.value.shape[0]))
    rows = dict(zip(held, np.asarray(field.value[np.ix_(x[held], *map(np.ravel, index[1:]))]).mean(axis=2)))
    if field.comm is not None:
        rows = {i: row for part in field.comm.allgather(rows) for i, row in part.items()}
    return np.stack([rows[i] for i in range(len(x))])


def figures(folder, figure, methods, results):
    written = []

    def save(fig, name):
        fig.savefig(folder / name, dpi=110)
        written.append(name)

    for i, slab in enumerate(figure.slabs, start=1):
        extent = (slab.start[0] * slab.cell_size, (slab.start[0] + slab.shape[0]) * slab.cell_size,
                  slab.start[1] * slab.cell_size, (slab.start[1] + slab.shape[1]) * slab.cell_size)
        stride = max(1, slab.shape[0] // 20)
        for key, symbol in (("velocity", "v"), ("momentum", "p"))[:2 if i == 1 else 1]:
            save(plots.slice_figure(figure.planes["density"][i - 1], figure.planes["truth"][i - 1][key],
                                    {n: figure.planes[n][i - 1][key] for n in methods},
                                    extent, symbol=symbol, stride=stride,
                                    title=f"slice {i}: {key}, mean rho/rho_mean {slab.mean_density:.2f}"),
                 f"slice{i}_{key}.png")
    save(plots.spectra_figure({pixels.QUANTITIES[q]: c for q, c in results["comparisons"].items()},
                              title="power spectra, whole box"), "spectra.png")
    save(plots.error_spectrum_figure(results["errors"], title="velocity error per k band"), "error_spectrum.png")

    cells = "per cell" if figure.stride == 1 else f"every {figure.stride}th cell on each axis"
    t = figure.samples[("truth", "velocity")].reshape(-1, 3)
    v_true = np.linalg.norm(t, axis=-1)
    panels = {"abs(v) (km/s)": {"truth": v_true}, "abs(v_residual) / abs(v_true)": {}, "abs(cos theta)": {}}
    for name in methods:
        v = figure.samples[(name, "velocity")].reshape(-1, 3)
        v_abs = np.linalg.norm(v, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            panels["abs(v) (km/s)"][name] = v_abs
            panels["abs(v_residual) / abs(v_true)"][name] = np.linalg.norm(v - t, axis=-1) / v_true
            panels["abs(cos theta)"][name] = np.abs(np.sum(v * t, axis=-1)) / (v_abs * v_true)
    save(plots.histogram_figure(panels, title=f"whole box, {cells}"), "histograms.png")
    names = ["truth", *methods]
    save(plots.joint_figure(figure.samples[("density", "")], {
        "theta_v (km/s per Mpc/h)": {n: figure.samples[(n, "theta_v")] for n in names},
        "(curl p)_x (km/s per Mpc/h)": {n: figure.samples[(n, "curl_p")][..., 0] for n in names}},
        title=f"density against velocity divergence and momentum curl, {cells}"), "joint_density.png")
    return written

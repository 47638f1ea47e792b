"""The report of Wu et al. 2021 (section 4): any number of reconstructions measured against the truth.

`evaluate` computes the statistics of Wu et al. 2021, section 4 (pixel statistics, T(k)
and r(k) of |v|, theta_v, p and curl p, as in their Tables 1-4), the error spectrum, the
same spectra in sub-boxes, and pixel statistics in the densest slices; it writes them to a
report folder (report.md, metrics.json, PNG figures, and every spectrum as a `Statistic`
JSON under spectra/) that appears only when complete.

The box is held about once at a time: each method's fields are read from its file (or, when
computed, such as linear theory, made once and kept in a scratch file) as each statistic
needs them, one derived quantity at a time; the per-cell figures show every cell of boxes
up to `SAMPLE_SIDE`^3 and a regular sample of that many cells of larger ones. Under MPI
(fields cut into x-slabs over the ranks) every statistic is measured across the ranks and
rank 0 writes the report.
"""
import contextlib
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_density
from velnet.fields.field import field_names, load_fields, save_fields
from velnet.physics.linear import linear_momentum
from velnet.reports import plots
from velnet.reports.common import number, plus_minus, report_folder, write_report
from velnet.statistics import pixels, spectra
from velnet.statistics.subboxes import SUBBOX_NOTE, subbox_powers, subbox_transfer

TABLE_K = (0.2, 0.6, 1.0)
"""k (h/Mpc) at which the paper's Tables 1-4 quote T(k)."""
WORST_RANGE = (0.2, 1.4)
"""k range (h/Mpc) over which the worst T(k) is sought, as in the paper's text."""
T_NEAR = 0.2
"""|T - 1| at most this counts as 'the power is right'."""
R_LOW = 0.7
"""r below this counts as 'the phases are wrong' (half the power or more is uncorrelated)."""
PHASE_FRACTION = 0.1
"""'Power right, phases wrong' is reported when at least this fraction of the bins in
WORST_RANGE qualify (a T(k) merely crossing 1 touches one or two)."""

SAMPLE_SIDE = 128
"""Per-cell figures (histograms, joint distributions) use every cell of boxes up to this many per
side, and every s-th cell on each axis of larger ones (s = N // SAMPLE_SIDE)."""

_PIXEL_ROWS = {"abs_v": "abs(v) (km/s)", "abs_v_residual": "abs(v_residual) (km/s)",
               "abs_cos_theta": "abs(cos theta)", "cos_theta": "cos theta (signed)", "abs_p": "abs(p) (km/s)",
               "abs_p_residual": "abs(p_residual) (km/s)"}
_TITLES = {"abs_v": "P_abs(v)", "theta_v": "P_theta_v", "p": "P_p", "curl_p": "P_curl_p"}


def _check_inputs(truth_fields, predictions, density):
    """Validate the inputs; returns the density and the entries: name -> a dict of `Field`s (completed
    with a momentum), a fields file's path, or a callable that makes such a dict."""
    density = density if density is not None else (truth_fields.get("density") if isinstance(truth_fields, dict)
                                                   else None)
    if density is None:
        raise VelnetInputError(None, "evaluate needs the true density: pass density= or truth_fields['density']")
    if density.comm is None:
        check_density(density)
    elif density.is_vector or not all(np.isfinite(plane).all() for plane in density.value):  # this rank's slab
        raise VelnetInputError(density.attrs.get("path"), "the density must be a finite scalar field")
    if not predictions:
        raise VelnetInputError(None, "evaluate needs at least one prediction")
    if "truth" in predictions:
        raise VelnetInputError(None, "'truth' is reserved; give the prediction another name")
    stems = [_file_stem(name) for name in predictions]
    if len(set(stems)) < len(stems):
        raise VelnetInputError(None, f"method names {list(predictions)} collide as file names {stems}")
    entries = {"truth": truth_fields, **predictions}
    for name, fields in entries.items():
        if isinstance(fields, dict):
            velocity = _checked(name, fields.get("velocity"), density, "velocity")
            momentum = fields.get("momentum")
            entries[name] = {"velocity": velocity, "momentum": linear_momentum(density, velocity) if momentum is None
                             else _checked(name, momentum, density, "momentum")}
    return density, entries


def _checked(name, field, density, what):
    """`field`, if it is a finite vector field on the density's mesh and box."""
    if field is None:
        raise VelnetInputError(None, f"{name!r} has no {what!r} field")
    source = field.attrs.get("path")
    if not field.is_vector or field.nmesh != density.nmesh or not np.isclose(field.box_size, density.box_size):
        raise VelnetInputError(source, f"{name!r} {field.name} is {field.value.shape} in a {field.box_size} "
                                       f"Mpc/h box; the density is {density.value.shape} in "
                                       f"{density.box_size} Mpc/h and velocity/momentum must be vectors")
    if not all(np.isfinite(plane).all() for plane in field.value):
        raise VelnetInputError(source, f"{name!r} {field.name} holds NaN or infinite values")
    return field


def _fields(name, entry, wanted, density):
    """The fields `wanted` ("velocity", "momentum") of an entry: from its dict, or read from its file
    (this rank's planes under MPI); a momentum the file lacks is (rho/rho_mean) v."""
    if isinstance(entry, dict):
        return {what: entry[what] for what in wanted}
    held = field_names(entry)
    if "velocity" not in held:
        raise VelnetInputError(entry, f"{name!r} has no 'velocity' field (it holds {held})")
    read = {what if what in held else "velocity" for what in wanted}
    fields = load_fields(entry, sorted(read), comm=density.comm)
    if "momentum" in wanted and "momentum" not in held:
        fields["momentum"] = linear_momentum(density, _checked(name, fields["velocity"], density, "velocity"))
    return {what: _checked(name, fields[what], density, what) for what in wanted}


def _at(stat, column, k):
    ok = (stat["modes"] > 0) & np.isfinite(stat[column])
    ks = stat["k"][ok]
    if not ok.any() or k < ks[0] or k > ks[-1]:
        return float("nan")
    return float(np.interp(k, ks, stat[column][ok]))


def _worst(stat):
    """The bin in WORST_RANGE whose T(k) is furthest from 1 in log."""
    ok = (stat["modes"] > 0) & (stat["k"] > WORST_RANGE[0]) & (stat["k"] < WORST_RANGE[1]) & (stat["T"] > 0)
    if not ok.any():
        return {"k": None, "T": None}
    i = np.flatnonzero(ok)[np.argmax(np.abs(np.log(stat["T"][ok])))]
    return {"k": float(stat["k"][i]), "T": float(stat["T"][i])}


def _phases_wrong(stat):
    """The bins in WORST_RANGE where T(k) is near 1 but r(k) is low, if they are not just a
    crossing of T through 1 (at least PHASE_FRACTION of the bins)."""
    inside = (stat["modes"] > 0) & (stat["k"] > WORST_RANGE[0]) & (stat["k"] < WORST_RANGE[1])
    flagged = inside & (np.abs(stat["T"] - 1) <= T_NEAR) & (stat["r"] < R_LOW)
    if flagged.sum() < max(1, PHASE_FRACTION * inside.sum()):
        return None
    k = stat["k"][flagged]
    return {"k_min": float(k.min()), "k_max": float(k.max()), "bins": int(flagged.sum()),
            "bins_in_range": int(inside.sum()), "r_min": float(np.min(stat["r"][flagged])),
            "r_max": float(np.max(stat["r"][flagged]))}


def _spectrum_rows(comparisons):
    """T and r at TABLE_K and the worst T, per method."""
    return {name: {"T": {str(k): _at(stat, "T", k) for k in TABLE_K},
                   "r": {str(k): _at(stat, "r", k) for k in TABLE_K},
                   "worst_T": _worst(stat), "phases_wrong": _phases_wrong(stat)}
            for name, stat in comparisons.items()}


def _subbox_rows(subboxes):
    return {name: {"T_mean": {str(k): _at(stat, "T_mean", k) for k in TABLE_K},
                   "T_std": {str(k): _at(stat, "T_std", k) for k in TABLE_K}}
            for name, stat in subboxes.items()}


def _file_stem(name):
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_") or "method"


STEPS = 2 + len(pixels.QUANTITIES)
"""Steps of the report on its progress bar: the slices, the pixel statistics and error spectra, the
spectra of each quantity, the figures."""


def _measure(density, entries, subbox_size, n_slices, progress):
    """All statistics (collective under MPI); returns (metrics dict, Statistic objects, figure data).

    Each entry is read once for the pixel statistics and error spectra and once more per derived
    quantity, so that at most one method's fields and one quantity's are held at a time.
    """
    methods = [name for name in entries if name != "truth"]
    progress("slices")
    slabs = pixels.densest_slabs(density, count=n_slices)
    figure = _Figure(density, slabs)

    progress("pixel statistics, error spectra")
    truth = _fields("truth", entries["truth"], ("velocity", "momentum"), density)
    figure.add("truth", truth)
    pixel = {"truth": pixels.pixel_statistics(truth["velocity"], truth["momentum"])}
    slices = [{"slab": slab.to_dict(), "pixel": {"truth": pixels.pixel_statistics(
        truth["velocity"], truth["momentum"], region=slab.index(density.nmesh))}} for slab in slabs]
    truth_variance = spectra.band_variance(truth["velocity"])
    errors = {}
    for name in methods:
        fields = _fields(name, entries[name], ("velocity", "momentum"), density)
        figure.add(name, fields, truth["velocity"])
        pixel[name] = pixels.pixel_statistics(fields["velocity"], fields["momentum"], truth["velocity"],
                                              truth_momentum=truth["momentum"])
        for slab, row in zip(slabs, slices):
            row["pixel"][name] = pixels.pixel_statistics(fields["velocity"], fields["momentum"], truth["velocity"],
                                                         slab.index(density.nmesh), truth["momentum"])
        del fields["momentum"]
        errors[name] = spectra.error_spectrum(fields["velocity"], truth["velocity"], truth_variance=truth_variance)
        del fields
    del truth

    comparisons, subboxes, tables, subbox_tables = {}, {}, {}, {}
    for q in pixels.QUANTITIES:
        progress(f"spectra of {q}")
        source = "velocity" if q in ("abs_v", "theta_v") else "momentum"
        truth_q = pixels.derived_field(q, **_fields("truth", entries["truth"], (source,), density))
        figure.add_quantity("truth", q, truth_q)
        truth_modes = spectra.fourier(truth_q)
        truth_power = spectra.power(truth_modes)
        truth_subboxes = subbox_powers(truth_q, subbox_size)
        comparisons[q], subboxes[q] = {}, {}
        for name in methods:
            field_q = pixels.derived_field(q, **_fields(name, entries[name], (source,), density))
            figure.add_quantity(name, q, field_q)
            subboxes[q][name] = subbox_transfer({name: field_q}, truth_q, subbox_size,
                                                truth_powers=truth_subboxes)[name]
            comparisons[q][name] = spectra.compare_spectra(field_q, truth_modes, truth_power=truth_power)
            del field_q
        del truth_q, truth_modes
        tables[q], subbox_tables[q] = _spectrum_rows(comparisons[q]), _subbox_rows(subboxes[q])

    metrics = {
        "methods": methods,
        "pixel": pixel,
        "spectra": {q: {"table": tables[q], "results": {n: s.to_dict() for n, s in comparisons[q].items()}}
                    for q in pixels.QUANTITIES},
        "subboxes": {q: {"table": subbox_tables[q], "results": {n: s.to_dict() for n, s in subboxes[q].items()}}
                     for q in pixels.QUANTITIES},
        "error_spectrum": {name: s.to_dict() for name, s in errors.items()},
        "slices": slices,
    }
    return metrics, {"comparisons": comparisons, "subboxes": subboxes, "errors": errors}, figure


class _Figure:
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


def _report(metrics, density, figures):
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


def _figures(folder, figure, methods, results):
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


def _save_spectra(folder, results):
    for q in pixels.QUANTITIES:
        for name, stat in results["comparisons"][q].items():
            stat.save(folder / "spectra" / f"{q}_{_file_stem(name)}.json")
            results["subboxes"][q][name].save(folder / "spectra" / f"{q}_{_file_stem(name)}_subboxes.json")
    for name, stat in results["errors"].items():
        stat.save(folder / "spectra" / f"error_velocity_{_file_stem(name)}.json")


@contextlib.contextmanager
def _computed(outdir, entries, density):
    """The entries with every callable one replaced by a scratch fields file of what it makes (made once,
    read as needed); the scratch folder, beside `outdir`, is removed at the end."""
    comm = density.comm
    root = comm is None or comm.rank == 0
    scratch = None
    if root and any(callable(entry) for entry in entries.values()):
        Path(outdir).parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=f".{Path(outdir).name}.scratch.", dir=Path(outdir).parent)
    scratch = scratch if comm is None else comm.bcast(scratch)
    try:
        out = {}
        for i, (name, entry) in enumerate(entries.items()):
            if callable(entry):
                fields = entry()
                entry = save_fields(Path(scratch) / f"{i}.h5", [fields[key] for key in ("velocity", "momentum")
                                                                 if key in fields])
                del fields
            out[name] = entry
        yield out
    finally:
        if root and scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def evaluate(truth_fields, predictions, outdir, density=None, subbox_size=120.0, n_slices=3, reference=None,
             overwrite=False):
    """Compare reconstructions with the truth and write a report folder.

    Args:
        truth_fields: dict with the true "velocity" (km/s) `Field`, optionally "momentum"
            (default density * velocity) and "density"; or the path of the true fields file.
        predictions: dict method name (e.g. "U-net", "linear", "linear (smoothed R=2)") ->
            {"velocity": Field, "momentum": Field}, a fields file with them (read when
            needed), or a callable that makes that dict (run once, its fields kept in a
            scratch file); momentum may be left out (then density * velocity with the true
            density).
        outdir: report folder; written atomically (replaced only when complete).
        density: the true density `Field` (rho/rho_mean); default truth_fields["density"].
            Under MPI this rank's x-slab of it: the files are then read by slabs, every
            statistic measured across the ranks (collective) and the report written by rank 0.
        subbox_size: side of the sub-boxes for the sub-box spectra, Mpc/h.
        n_slices: number of densest slices for the slice statistics and figures.
        reference: name of the method every other is measured against (the fitted classical
            estimator); adds a table of ratios to the report.
        overwrite: write into an `outdir` that is not a report folder (`report_folder`).

    Returns:
        the metrics dict written to metrics.json (numbers that do not exist, such as T(k)
        beyond the Nyquist k, are None).

    Raises:
        VelnetInputError: a field is missing, of the wrong kind, not finite, or on another
            mesh or box than the density; or the box cannot hold `n_slices` slices (found
            once the spectra are measured; nothing is left behind).
    """
    start = time.time()
    density, entries = _check_inputs(truth_fields, predictions, density)
    if reference is not None and reference not in predictions:
        raise VelnetInputError(None, f"the reference {reference!r} is not among the methods {list(predictions)}")
    config = {"reference": reference, "subbox_size": subbox_size, "n_slices": n_slices, "table_k": list(TABLE_K),
              "worst_range": list(WORST_RANGE), "t_near": T_NEAR, "r_low": R_LOW, "phase_fraction": PHASE_FRACTION,
              "box_size": density.box_size, "nmesh": density.nmesh, "redshift": density.redshift,
              "cosmology": density.cosmology.to_dict()}
    root = density.comm is None or density.comm.rank == 0
    folder_and_steps = report_folder(outdir, "evaluate (Wu et al. 2021)", STEPS, overwrite) if root else \
        contextlib.nullcontext((None, lambda name: None))
    with folder_and_steps as (folder, progress), _computed(outdir, entries, density) as entries:
        metrics, results, figure = _measure(density, entries, subbox_size, n_slices, progress)
        metrics["config"] = config
        if root:
            progress("figures")
            _save_spectra(folder, results)
            metrics["figures"] = _figures(folder, figure, metrics["methods"], results)
            metrics = write_report(folder, metrics, lambda m: _report(m, density, m["figures"]), time.time() - start)
    return metrics if density.comm is None else density.comm.bcast(metrics)

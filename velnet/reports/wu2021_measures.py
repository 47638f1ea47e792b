"""The measurements of Wu et al. 2021's report: the thresholds its tables use, each method's fields
read as a statistic needs them, and every statistic of the report (`measure`).
"""
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import field_names, load_fields
from velnet.physics.linear import linear_momentum
from velnet.reports.wu2021_figures import FigureData
from velnet.statistics import pixels, spectra
from velnet.statistics.subboxes import subbox_powers, subbox_transfer

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


def checked_field(name, field, density, what):
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
        fields["momentum"] = linear_momentum(density, checked_field(name, fields["velocity"], density, "velocity"))
    return {what: checked_field(name, fields[what], density, what) for what in wanted}


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


def measure(density, entries, subbox_size, n_slices, progress):
    """All statistics (collective under MPI); returns (metrics dict, Statistic objects, figure data).

    Each entry is read once for the pixel statistics and error spectra and once more per derived
    quantity, so that at most one method's fields and one quantity's are held at a time.
    """
    methods = [name for name in entries if name != "truth"]
    progress("slices")
    slabs = pixels.densest_slabs(density, count=n_slices)
    figure = FigureData(density, slabs)

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

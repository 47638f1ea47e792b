"""The report of Wu et al. 2021 (section 4): any number of reconstructions measured against the truth.

`evaluate` computes the statistics of Wu et al. 2021, section 4 (pixel statistics, T(k)
and r(k) of |v|, theta_v, p and curl p, as in their Tables 1-4), the error spectrum, the
same spectra in sub-boxes, and pixel statistics in the densest slices; it writes them to a
report folder (report.md, metrics.json, PNG figures, and every spectrum as a `Statistic`
JSON under spectra/) that appears only when complete.

The box is held about once at a time: each method's fields are read from its file (or, when
computed, such as linear theory, made once and kept in a scratch file) as each statistic
needs them, one derived quantity at a time; the per-cell figures show every cell of boxes
up to `wu2021_figures.SAMPLE_SIDE`^3 and a regular sample of that many cells of larger ones. Under MPI
(fields cut into x-slabs over the ranks) every statistic is measured across the ranks and
rank 0 writes the report. The statistics are measured in `wu2021_measures`, the figures drawn
in `wu2021_figures` and the text written in `wu2021_text`.
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
from velnet.fields.field import save_fields
from velnet.physics.linear import linear_momentum
from velnet.reports.common import report_folder, write_report
from velnet.reports.wu2021_figures import figures
from velnet.reports.wu2021_measures import (
    PHASE_FRACTION,
    R_LOW,
    T_NEAR,
    TABLE_K,
    WORST_RANGE,
    checked_field,
    measure,
)
from velnet.reports.wu2021_text import report_text
from velnet.statistics import pixels

STEPS = 2 + len(pixels.QUANTITIES)
"""Steps of the report on its progress bar: the slices, the pixel statistics and error spectra, the
spectra of each quantity, the figures."""


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
            velocity = checked_field(name, fields.get("velocity"), density, "velocity")
            momentum = fields.get("momentum")
            entries[name] = {"velocity": velocity, "momentum": linear_momentum(density, velocity) if momentum is None
                             else checked_field(name, momentum, density, "momentum")}
    return density, entries


def _file_stem(name):
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_") or "method"


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
        metrics, results, figure = measure(density, entries, subbox_size, n_slices, progress)
        metrics["config"] = config
        if root:
            progress("figures")
            _save_spectra(folder, results)
            metrics["figures"] = figures(folder, figure, metrics["methods"], results)
            metrics = write_report(folder, metrics, lambda m: report_text(m, density, m["figures"]),
                                   time.time() - start)
    return metrics if density.comm is None else density.comm.bcast(metrics)

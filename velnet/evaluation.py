"""Evaluate predictions against the truth with either paper's statistics: the one table of reports.

`evaluate` writes a report folder (report.md, metrics.json, figures) and returns it as an
`Evaluation`: the numbers, the markdown and the figures. `REPORTS` holds each report's
runner and the options it takes:

    wu2021      Wu et al. 2021 on one box: T(k), r(k), error per k band, pixel statistics,
                slices, against linear theory and the classical reference
    halo2024    the 2024 halo paper over test boxes and weighting schemes: C_r, spectra,
                multipoles, xi, the RSD correction, training curves
"""
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields
from velnet.tasks import DENSITY, VELOCITY

log = logging.getLogger(__name__)
SHIPPED_BASELINE = "shipped"
"""`baseline` value meaning the shipped classical estimator (`velnet.shipped.DEFAULT_MODEL`)."""


@dataclass(frozen=True)
class Evaluation:
    """A report folder: what `evaluate` measured.

    Attributes:
        folder: the report folder.
        metrics: the numbers (metrics.json; numbers that do not exist are None).
    """

    folder: Path
    metrics: dict

    @property
    def markdown(self):
        """The report (report.md): tables and text, markdown."""
        return (self.folder / "report.md").read_text()

    @property
    def figures(self):
        """The figures: file name -> path (PNG)."""
        return {name: self.folder / name for name in self.metrics.get("figures", [])}

    def _repr_markdown_(self):
        return self.markdown

    @classmethod
    def load(cls, folder):
        """The `Evaluation` of a report folder written before."""
        folder = Path(folder)
        return cls(folder, json.loads((folder / "metrics.json").read_text()))


def _box(box, names=None):
    """A box's fields: a dict name -> `Field` as it is, or a fields file's (those of `names`)."""
    return box if isinstance(box, dict) else load_fields(box, names)


def _wu2021(truth, predictions, out, baseline=SHIPPED_BASELINE, smoothing=None, overwrite=False):
    """Wu et al.'s report of one box: the methods, the classical reference, linear theory (raw and
    smoothed at `smoothing` Mpc/h, or at the reference's fitted radius). Fields files are read as
    each statistic needs them (under mpirun, each rank its x-slab), the references made once."""
    import functools

    from velnet.fields.field import field_names
    from velnet.fields.mesh import current_comm
    from velnet.physics.classical import ClassicalEstimator
    from velnet.physics.linear import linear_prediction
    from velnet.reports.wu2021 import evaluate as report
    from velnet.shipped import DEFAULT_MODEL, model_path

    if len(truth) != 1:
        raise VelnetInputError(None, f"the wu2021 report takes one box. Received: {len(truth)}")
    truth, methods = truth[0], {name: boxes[0] for name, boxes in predictions.items()}
    held = sorted(truth) if isinstance(truth, dict) else field_names(truth)
    if DENSITY not in held or VELOCITY not in held:
        raise VelnetInputError(None if isinstance(truth, dict) else truth,
                               f"the true box needs {DENSITY!r} and {VELOCITY!r} fields; it holds {held}")
    density = truth[DENSITY] if isinstance(truth, dict) else load_fields(truth, [DENSITY], comm=current_comm())[DENSITY]
    reference = None
    if baseline not in (None, "none"):
        classical = ClassicalEstimator.load(model_path(DEFAULT_MODEL if baseline == SHIPPED_BASELINE else baseline))
        if baseline == SHIPPED_BASELINE and not np.isclose(classical.cell_size, density.cell_size, rtol=1e-3):
            log.warning("the shipped classical estimator is fitted for %g Mpc/h cells, not %g: no classical reference "
                        "(fit one with `velnet baseline` and pass it with --baseline)", classical.cell_size,
                        density.cell_size)
        else:
            reference = f"classical ({classical.label})"
            methods[reference] = functools.partial(classical.prediction, density)
            if smoothing is None:
                smoothing = classical.attrs.get("linear_smoothing", {}).get("radius")
    methods["linear"] = functools.partial(linear_prediction, density)
    if smoothing:
        methods[f"linear R={smoothing:g}"] = functools.partial(linear_prediction, density, smoothing)
    # The paper's three 40x40 (Mpc/h)^2 slices; a small box holds fewer distinct ones.
    across = round(40.0 / density.cell_size)
    slices = max(1, min(3, (density.nmesh // (2 * across - 1)) ** 2))
    return report(truth, methods, out, density=density, n_slices=slices, reference=reference, overwrite=overwrite)


def _halo2024(truth, predictions, out, halo_fields=None, catalogs=None, los="z", independent_volume=None,
              classical=None, overwrite=False):
    """The 2024 halo paper's report: per weighting scheme (the methods), over the test boxes; with
    the halo fields the predictions were made from, linear theory and the halos' xi; with the
    boxes' halo catalogues, the RSD correction; with classical halo references ("SCHEME=FILE"),
    their predictions from the scheme's halo fields beside the U-net; the training curves beside
    the models."""
    from data_prep.catalogs import load_halos
    from velnet.reports.halo2024 import evaluate_halo
    from velnet.training.train import HISTORY_FILE, read_history

    truth = [_box(b, (DENSITY, VELOCITY, "momentum")) for b in truth]
    predictions = {name: [_box(b) for b in boxes] for name, boxes in predictions.items()}
    boxes = len(truth)
    if halo_fields is not None and set(halo_fields) != set(predictions):
        raise VelnetInputError(None, f"halo_fields needs the boxes of each scheme {sorted(predictions)}. "
                                     f"Received: {sorted(halo_fields)}")
    if catalogs is not None and len(catalogs) != boxes:
        raise VelnetInputError(None, f"catalogs takes one halo catalogue per test box ({boxes}). "
                                     f"Received: {len(catalogs)}")
    histories = {}
    for name, boxes_of in predictions.items():  # Fig. 3: the history.csv beside each model that predicted box 0
        for target, field in boxes_of[0].items():
            history = Path(str(field.attrs.get("model", ""))).parent / HISTORY_FILE
            if field.attrs.get("model") and history.is_file():
                histories.setdefault(name, {})[target] = read_history(history)
    inputs = {name: [_box(b) for b in boxes_of] for name, boxes_of in halo_fields.items()} if halo_fields else None
    catalogs = [load_halos(c) if isinstance(c, (str, Path)) else c for c in catalogs] if catalogs else None
    return evaluate_halo(truth, predictions, out, inputs_by_scheme=inputs, catalogs=catalogs, los=los,
                         histories=histories, independent_volume=independent_volume,
                         baselines_by_scheme=_halo_baselines(classical, inputs), overwrite=overwrite)


def _halo_baselines(pairs, inputs):
    """{scheme: {method: boxes}} of "SCHEME=FILE" pairs, each reference run on the scheme's halo fields."""
    from velnet.physics.references import HALO_KINDS, load_reference

    out = {}
    for pair in pairs or []:
        scheme, _, path = pair.partition("=")
        if not path or not inputs or scheme not in inputs:
            raise VelnetInputError(None, "--classical takes SCHEME=FILE, SCHEME one of the --names whose halo fields "
                                         f"are given with --halo-fields. Received: {pair!r}")
        reference = load_reference(path)
        if not isinstance(reference, HALO_KINDS):
            raise VelnetInputError(path, "is not a classical halo reference (velnet baseline --task halo-velocity)")
        out.setdefault(scheme, {})[reference.METHOD] = [reference.predict(box) for box in inputs[scheme]]
    return out


@dataclass(frozen=True)
class Report:
    """One paper's report: `run(truth, predictions, out, **options) -> metrics` (truth a list of
    boxes, predictions method -> list of boxes, each box a fields file or a dict name -> `Field`,
    read as the report needs them) and the options it takes."""

    run: object
    options: tuple


REPORTS = {
    "wu2021": Report(_wu2021, ("baseline", "smoothing", "overwrite")),
    "halo2024": Report(_halo2024, ("halo_fields", "catalogs", "los", "independent_volume", "classical", "overwrite")),
}
"""Every report, by name."""
DEFAULT_REPORT = "wu2021"


def evaluate(truth, predictions, out, report=DEFAULT_REPORT, **options):
    """Measure predictions against the truth and write a report folder.

    Args:
        truth: the true fields of the test box, or a list with one per test box: a fields
            file or a dict name -> `Field` (density rho/rho_mean, velocity and momentum km/s).
        predictions: method name -> its predicted box (file or dict of `Field`s, as
            `reconstruct` returns), or a list with one per test box.
        out: the report folder, written atomically.
        report: a `REPORTS` name.
        **options: the report's: wu2021: baseline (a classical estimator file, "shipped"
            (default) or "none"), smoothing (Mpc/h); halo2024: halo_fields (method -> its
            boxes' halo fields), catalogs (one halo catalogue per box), los, independent_volume
            ((Mpc/h)^3), classical ("SCHEME=FILE" classical halo references run on the scheme's
            halo fields); both: overwrite (write into an existing folder that is not a report,
            replacing only the report's files).

    Returns:
        The `Evaluation`.

    Raises:
        VelnetInputError: an unknown report or option, missing or mismatched fields.
    """
    if report not in REPORTS:
        raise VelnetInputError(None, f"report must be one of {sorted(REPORTS)}. Received: report={report!r}")
    chosen = REPORTS[report]
    refused = sorted(k for k, v in options.items() if v is not None and k not in chosen.options)
    if refused:
        raise VelnetInputError(None, f"the {report} report takes no {refused}; its options: {list(chosen.options)}")
    truth = truth if isinstance(truth, list) else [truth]
    predictions = {name: boxes if isinstance(boxes, list) else [boxes] for name, boxes in predictions.items()}
    for name, boxes in predictions.items():
        if len(boxes) != len(truth):
            raise VelnetInputError(None, f"{len(truth)} test box(es), and {len(boxes)} predictions of {name!r}")
    metrics = chosen.run(truth, predictions, out, **{k: v for k, v in options.items() if v is not None})
    return Evaluation(Path(out), metrics)


def evaluate_files(files, out, names=None, boxes=1, report=DEFAULT_REPORT, halo_fields=None, **options):
    """`evaluate` of files as `velnet evaluate` lists them.

    Args:
        files: the true fields files (one per test box), then for each method its
            predictions, one file per test box.
        out: the report folder.
        names: the methods' names (default the prediction files' stems).
        boxes: the number of test boxes.
        report: a `REPORTS` name.
        halo_fields: halo2024: the halo fields files of each method's predictions, in their order.
        **options: the report's other options.

    Returns:
        The `Evaluation`.
    """
    truth, files = list(files[:boxes]), list(files[boxes:])
    names = names or [Path(p).stem for p in files]
    if boxes < 1 or len(truth) != boxes or len(files) != boxes * len(names):
        raise VelnetInputError(None, f"{boxes} test box(es) and {len(names)} method(s) need {boxes} true box(es) "
                                     f"and {boxes * len(names)} predictions. Received: {len(truth) + len(files)} files")
    if halo_fields and len(halo_fields) != len(files):
        raise VelnetInputError(None, f"--halo-fields takes one file per test box and method ({len(files)}), in the "
                                     f"order of the predictions. Received: {len(halo_fields)}")
    def per_method(items):
        return {name: items[i * boxes:(i + 1) * boxes] for i, name in enumerate(names)}

    return evaluate(truth, per_method(files), out, report,
                    halo_fields=per_method(halo_fields) if halo_fields else None, **options)

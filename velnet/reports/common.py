"""What the two papers' reports share: the report folder, progress over its steps, number formatting.

A report folder (report.md, metrics.json, PNG figures) is written into a temporary folder
and appears only when complete (`report_folder`); its steps show on a tqdm bar (`Steps`).
"""
import contextlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from velnet.files import OWNED, atomic_dir, check_output
from velnet.provenance import versions
from velnet.statistics.statistic import to_json


def number(x, fmt="{:.3g}"):
    """`x` formatted, or "n/a" for None, NaN and infinities."""
    return "n/a" if x is None or not np.isfinite(x) else fmt.format(x)


def plus_minus(d, fmt="{:.3g}"):
    """'mean ± std' of a {"mean", "std"} dict; the std left out when it is None (one box), and
    shown as 0 when it is below 1e-9 of the mean (round-off of a constant)."""
    mean, std = d["mean"], d["std"]
    if std is None:
        return number(mean, fmt)
    if mean is not None and abs(std) < 1e-9 * max(1.0, abs(mean)):
        std = 0.0
    return f"{number(mean, fmt)} ± {number(std, fmt)}"


class Steps:
    """A tqdm bar over the named steps of a report: call it with each step's name as the step begins.

    Args:
        total: number of steps.
        desc: the bar's label.
    """

    def __init__(self, total, desc):
        self.bar = tqdm(total=total, desc=desc, unit="step")
        self.begun = False

    def __call__(self, name):
        if self.begun:
            self.bar.update()
        self.begun = True
        self.bar.set_postfix_str(name)

    def close(self):
        """Count the last step and close the bar."""
        if self.begun:
            self.bar.update()
        self.bar.close()


def is_report(path):
    """Whether the folder `path` holds a report (report.md and metrics.json) that `velnet evaluate` wrote."""
    return (Path(path) / "report.md").is_file() and (Path(path) / "metrics.json").is_file()


@contextlib.contextmanager
def report_folder(outdir, title, total_steps, overwrite=False):
    """A temporary report folder that replaces `outdir` only when the block completes, and its `Steps`.

    An existing `outdir` is replaced only if it is an earlier report (or empty); with
    `overwrite`, the report's files are written into another folder, whose other files stay.

    Yields:
        `(folder, steps)`: the folder to write into, and the progress callable.

    Raises:
        VelnetInputError: `outdir` is a file, or a folder of something else and not `overwrite`.
    """
    merge = check_output(outdir, "a report folder", is_report, overwrite=overwrite, folder=True) \
        or (Path(outdir) / OWNED).exists()
    steps = Steps(total_steps, title)
    try:
        with atomic_dir(outdir, merge=merge) as folder:
            yield folder, steps
    finally:
        steps.close()


def write_report(folder, metrics, text_of, seconds):
    """Add provenance to `metrics`, write metrics.json (strict JSON) and report.md (`text_of(metrics)`).

    Returns:
        The metrics as written (numpy values as numbers, NaN as None).
    """
    metrics["provenance"] = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             "seconds": seconds, "versions": versions(("velnet", "numpy", "matplotlib", "nbodykit"))}
    metrics = to_json(metrics)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1, allow_nan=False))
    (folder / "report.md").write_text(text_of(metrics))
    return metrics

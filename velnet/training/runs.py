"""A training run folder: which dataset it trains on, whether it finished, and what `train` may do with it.

`train` writes its record (`RECORD_FILE`) when a run starts, with the dataset's path and the
sha256 of its manifest (which holds every shard's sha256), and again when it finishes. So a
run, killed or finished, is never resumed, continued or replaced by a run on another dataset,
and a finished run is not silently trained again.
"""
import json
import logging
from pathlib import Path

from velnet.data.manifest import MANIFEST
from velnet.data.writer import sha256
from velnet.errors import VelnetInputError
from velnet.files import check_output, remove_path

log = logging.getLogger(__name__)

MODEL_FILE, BEST_FILE, HISTORY_FILE, RECORD_FILE = (
    "model.keras", "best.keras", "history.csv", "train_config.json")
BACKUP_DIR, LOG_DIR = "backup", "logs"
OWN_FILES = (MODEL_FILE, BEST_FILE, HISTORY_FILE, RECORD_FILE, BACKUP_DIR, LOG_DIR)
"""What `train` writes in a run folder (and all that `overwrite` removes)."""
NEW, RESUME, EXTEND = "new", "resume", "extend"
"""What `prepare_run` lets `train` do: start afresh, resume an unfinished run, train a finished one further."""


def dataset_identity(dataset_dir):
    """The dataset a run trains on: its folder and the sha256 of its manifest."""
    dataset_dir = Path(dataset_dir).resolve()
    return {"dataset": str(dataset_dir), "manifest_sha256": sha256(dataset_dir / MANIFEST)}


def prepare_run(outdir, dataset, overwrite=False, extend=False):
    """Decide what `train` does with the run folder `outdir`, and clear it when asked to.

    Args:
        outdir: the run folder (`--out`).
        dataset: `dataset_identity` of the dataset to train on.
        overwrite: train anew: remove the files an earlier run wrote (`OWN_FILES`), of any
            dataset; a folder of something else is written into, its other files kept.
        extend: train a finished run of the same dataset further.

    Returns:
        `NEW`, `RESUME` (an unfinished run of this dataset) or `EXTEND`.

    Raises:
        VelnetInputError: `outdir` is the dataset or a file, holds something other than a run
            (without `overwrite`), a run of another dataset, or a finished run (without
            `extend` or `overwrite`); or its record is unreadable.
    """
    outdir = Path(outdir)
    if outdir.resolve() == Path(dataset["dataset"]):
        raise VelnetInputError(outdir, "is the dataset itself: give the run its own folder with --out")
    is_run = any((outdir / name).exists() for name in OWN_FILES)
    check_output(outdir, "a training run folder", lambda path: is_run, overwrite=overwrite, folder=True)
    if not is_run:
        return NEW
    if overwrite:
        log.info("--overwrite: removing the earlier run's files in %s", outdir)
        for name in OWN_FILES:
            remove_path(outdir / name)
        return NEW
    record = read_run_record(outdir)
    if record is None:  # a run killed before velnet recorded its dataset at the start
        log.warning("%s: an unfinished run without a record of its dataset; resuming it on %s", outdir,
                    dataset["dataset"])
        return RESUME
    other = _other_dataset(record, dataset)
    if other:
        raise VelnetInputError(outdir, f"is a run on {other}: choose another --out, or pass --overwrite to "
                                       "train anew on this dataset")
    finished = (record.get("status") == "finished" or "final" in record) and (outdir / MODEL_FILE).exists() \
        and not (outdir / BACKUP_DIR).exists()
    if finished and extend:
        return EXTEND
    if finished:
        best, epochs = record.get("best", {}), record.get("final", {}).get("epoch", -1) + 1
        raise VelnetInputError(outdir, f"is a finished run of this dataset ({epochs} epoch(s), best val_loss "
                                       f"{best.get('val_loss')} at epoch {best.get('epoch')}; "
                                       f"its model is {outdir / MODEL_FILE}): pass --continue to train it --epochs "
                                       "more, or --overwrite to train anew")
    if extend:
        log.info("%s is unfinished: resuming it (--continue applies to finished runs)", outdir)
    return RESUME


def read_run_record(outdir):
    """The run record of `outdir` as a dict, or None where there is none."""
    path = Path(outdir) / RECORD_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise VelnetInputError(path, f"is not a readable run record ({err}): pass --overwrite to train anew, "
                                     "or choose another --out") from None
    if not isinstance(record, dict):
        raise VelnetInputError(path, "is not a run record (not a JSON object): pass --overwrite to train anew")
    return record


def _other_dataset(record, dataset):
    """How the dataset of `record` differs from `dataset` (by manifest sha256, else by folder); None if the same."""
    recorded = record.get("dataset") or {"dataset": record.get("config", {}).get("dataset")}
    folder, digest = recorded.get("dataset"), recorded.get("manifest_sha256")
    if digest == dataset["manifest_sha256"] or (digest is None and folder == dataset["dataset"]):
        return None
    if folder == dataset["dataset"]:
        return f"the dataset {folder} as it was before it was made again (manifest sha256 {digest})"
    return f"the dataset {folder}, not on {dataset['dataset']}"

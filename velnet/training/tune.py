"""Hyperparameter search for the network of any task with keras-tuner.

`VelnetHyperModel` holds the fixed arguments (the dataset, the base model config) and
declares the search space with its defaults in one place, `declare_hyperparameters`; the
network's own hyperparameters come from its builder's row
(`velnet.networks.builders.Builder.search`):

    learning_rate      Adam learning rate, 1e-5 to 1e-2, log sampling      (default 1e-4)
    (the builder's)    the Wu et al. U-net: width_multiplier, a factor on  (the preset's)
                       every width, 1/8, 1/4, 1/2, 1; the 2024 halo paper's
                       U-nets: their widths n1, n2, n3 and dropout rate
    batch_size         tiles per batch, 2 to 32                            (6, Wu et al.'s)
    residual           add the whole-box estimate of the target (input     (the preset's;
                       channels) to the output                             on datasets with it)
    train_boxes        train on the tiles of the first n training boxes    (all; only with
                       `tune_boxes` and several training boxes: a learning curve)

That is the 2024 halo paper's Optuna space (learning rate, dropout, number of training
sets, intermediate channels, batch size); its "minimum of five experiments ... for each
set of hyperparameter values" is `executions_per_trial`: keras-tuner trains each trial that
many times and scores the mean of their best val_loss, the i-th run of a setting seeded
with seed + i.

`tune` runs a search and writes, in its output folder:

    trials.csv, trials.md   one row per trial (status, val_loss, loss, best epoch, values),
                            best first
    best_config.json        {"model": {...}, "learning_rate": ..., "batch_size": ...}: what
                            `velnet train --config` (and `velnet.training.train.train`) takes
    best_hyperparameters.json   every value of the best trial
    tune_config.json        config, versions, timings
    tuner/<project>/        keras-tuner's state and checkpoints
    logs/                   TensorBoard logs per trial (when tensorflow and tensorboard are installed)

keras-tuner reloads an existing project of the same name and silently ignores a changed
search space (keras-tuner issues #149, #234), so the project name is a hash of the whole
config, search space included, and `overwrite` must be asked for. keras-tuner also turns
an exception in a trial into a failed trial and carries on; `tune` raises after writing
the table if any trial failed.

Distributed search (keras-tuner's chief and workers over gRPC): run the same `tune` call
in several processes, each with `KERASTUNER_TUNER_ID` ("chief" for one, "tuner0",
"tuner1", ... for the workers), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT`
set, and the same `outdir` (on a shared file system across machines). The chief serves
the oracle and writes the results; workers run trials and return None.
"""
import collections
import csv
import hashlib
import importlib.util
import io
import json
import logging
import math
import os
import time
from pathlib import Path

import keras
import keras_tuner

from velnet.data.datasets import ShardDataset, load_split
from velnet.data.manifest import read_manifest
from velnet.data.records import decode_tile, read_record
from velnet.data.writer import sha256
from velnet.files import atomic_file
from velnet.networks.builders import BUILDERS, build_network, network_config, task_loss
from velnet.provenance import write_record
from velnet.tasks import get_task
from velnet.training.train import TRAIN_SPLIT, VAL_SPLIT, jit_compile_setting

log = logging.getLogger(__name__)

ALGORITHMS = ("bayesian", "random", "hyperband")
OBJECTIVE = "val_loss"
BATCH_SIZES = (2, 4, 6, 8, 16, 32)
TUNED_TRAIN_KWARGS = ("learning_rate", "batch_size")
"""Hyperparameters that are `velnet.training.train.train` keyword arguments of the same name."""
TRIALS_CSV, TRIALS_MD, BEST_CONFIG, BEST_HP, RECORD_FILE = (
    "trials.csv", "trials.md", "best_config.json", "best_hyperparameters.json", "tune_config.json")
TUNER_DIR, LOG_DIR = "tuner", "logs"


class VelnetHyperModel(keras_tuner.HyperModel):
    """A task's network on a shard dataset, with its training loop, as a search space.

    Args:
        dataset_dir: shard folder with `manifest.json` (from `data_prep.make_shards`);
            task, tile shapes, input channels and training boxes come from its manifest.
        model_config: a preset name of the task's builder, or a dict of its arguments with
            an optional "preset" key, as in `velnet.training.train.train`; the defaults of
            `width_multiplier` and `residual` come from it.
        seed: seed set before each trial builds its network (equal initial weights for
            equal hyperparameters) and of the data shuffling and augmentation.
        augment: augment the training tiles with the cube's 48 symmetries.
        steps_per_epoch: training batches per epoch (default: the whole training tiles).
        validation_steps: validation batches per epoch (default: the whole "val" split).
        tune_boxes: also search the number of training boxes (`train_boxes`), when the
            dataset has several: how the loss falls with more simulations. Off by default,
            as fewer boxes rarely win and `velnet train` always uses all.
        learning_rate, batch_size: the defaults of those hyperparameters.

    Attributes:
        runs: builds so far per setting (JSON of its values): the i-th build of a setting
            seeds weights, shuffling and augmentation with seed + i.

    Raises:
        VelnetInputError: a bad dataset, or a residual model on a dataset without the
            whole-box input channels.
        VelnetInputError: an unknown preset or model argument.
    """

    def __init__(self, dataset_dir, model_config=None, seed=0, augment=True,
                 steps_per_epoch=None, validation_steps=None, tune_boxes=False, learning_rate=1e-4,
                 batch_size=6):
        super().__init__(name="velnet_unet")
        self.dataset_dir = Path(dataset_dir)
        self.manifest = read_manifest(self.dataset_dir)
        self.task = get_task(self.manifest.task)
        requested = {"preset": model_config} if isinstance(model_config, str) else dict(model_config or {})
        self.preset = requested.pop("preset", self.task.preset)
        self.overrides = requested
        self.base = network_config({"preset": self.preset, **self.overrides}, self.manifest)
        self.builder = BUILDERS[self.task.network]
        self.network_keys = tuple(self.builder.search(keras_tuner.HyperParameters(), self.base))
        self.residual_base = self.manifest.input_spec.base_channels
        per_box = self.manifest.split.get("per_box", [])
        self.train_box_ids = [i for i, counts in enumerate(per_box) if counts.get(TRAIN_SPLIT)]
        self.seed, self.augment, self.tune_boxes = seed, augment, tune_boxes
        self.steps_per_epoch, self.validation_steps = steps_per_epoch, validation_steps
        self.learning_rate, self.batch_size = learning_rate, batch_size
        self.runs = collections.Counter()
        self._record_boxes = None
        self._run_seed = seed

    def declare_hyperparameters(self, hp):
        """Declare the search space in `hp` (values already there win) and return the values.

        Returns:
            dict name -> value of every hyperparameter of this dataset's space.
        """
        values = {"learning_rate": hp.Float("learning_rate", 1e-5, 1e-2, sampling="log",
                                            default=self.learning_rate)}
        values.update(self.builder.search(hp, self.base))
        values["batch_size"] = hp.Choice("batch_size", sorted({*BATCH_SIZES, self.batch_size}),
                                         default=self.batch_size)
        if self.residual_base and "residual_channels" in self.base:
            values["residual"] = hp.Boolean("residual", default=self.base["residual_channels"] is not None)
        if self.tune_boxes and len(self.train_box_ids) > 1:
            n = len(self.train_box_ids)
            values["train_boxes"] = hp.Int("train_boxes", 1, n, default=n)
        return values

    def model_config(self, hp):
        """The `velnet.training.train.train` model config of the values in `hp` (preset plus overrides)."""
        values = self.declare_hyperparameters(hp)
        config = {"preset": self.preset, **self.overrides}
        config.update({name: values[name] for name in self.network_keys})
        if "residual" in values:
            config["residual_channels"] = self.residual_base if values["residual"] else None
        return config

    def build(self, hp):
        """Build and compile the network of `hp` (Adam, the task's loss of normalised targets),
        seeded with seed + the number of earlier builds of the same values (`runs`).

        Raises:
            VelnetInputError: a model config that does not fit the dataset's tiles.
        """
        setting = json.dumps(self.declare_hyperparameters(hp), sort_keys=True)
        self._run_seed = self.seed + self.runs[setting]
        self.runs[setting] += 1
        keras.utils.set_random_seed(self._run_seed)
        _, network = build_network(self.model_config(hp), self.manifest)
        lr = self.declare_hyperparameters(hp)["learning_rate"]
        network.compile(optimizer=keras.optimizers.Adam(lr), loss=task_loss(self.task),
                        jit_compile=jit_compile_setting())
        return network

    def fit(self, hp, model, **kwargs):
        """Train `model` on the dataset with the batch size (and boxes) of `hp`, shuffled and
        augmented with the seed of the last `build`.

        Args:
            hp: the trial's `HyperParameters`.
            model: the network from `build`.
            **kwargs: `keras.Model.fit` arguments from the tuner (epochs, callbacks, ...).

        Returns:
            The `History`; the tuner scores the epoch with the lowest val_loss.
        """
        values = self.declare_hyperparameters(hp)
        batch_size = values["batch_size"]
        val_data = load_split(self.manifest, VAL_SPLIT, batch_size, shuffle=False)
        return model.fit(self._train_data(values), validation_data=val_data, shuffle=False,
                         steps_per_epoch=self.steps_per_epoch,
                         validation_steps=self.validation_steps, **kwargs)

    def _train_data(self, values):
        """The training batches: every training tile, or those of the first n training boxes."""
        kwargs = dict(shuffle=True, seed=self._run_seed, augment=self.augment)
        n = values.get("train_boxes", len(self.train_box_ids))
        if n == len(self.train_box_ids):
            return load_split(self.manifest, TRAIN_SPLIT, values["batch_size"], **kwargs)
        data = ShardDataset(self.manifest, TRAIN_SPLIT, values["batch_size"], **kwargs)
        keep = set(self.train_box_ids[:n])
        data.records = [r for r, box in zip(data.records, self._boxes_of(data.records)) if box in keep]
        data.reorder()
        return data

    def _boxes_of(self, records):
        """Source box index of each training record (read once, then cached)."""
        if self._record_boxes is None:
            self._record_boxes = []
            for path, offset, length in records:
                with open(path, "rb") as f:
                    data = read_record(f, path, offset, length)
                self._record_boxes.append(decode_tile(data, self.manifest, path)[3])
        return self._record_boxes


def tune(dataset_dir, outdir, model_config=None, algorithm="bayesian", max_trials=10,
         epochs=10, overwrite=False, seed=0, fixed=None, augment=True, steps_per_epoch=None,
         validation_steps=None, tune_boxes=False, executions_per_trial=1, learning_rate=1e-4,
         batch_size=6, verbose=1):
    """Search the network's hyperparameters on a shard dataset, minimising val_loss.

    Args:
        dataset_dir: shard folder with `manifest.json`.
        outdir: output folder (see the module docstring for its contents).
        model_config: base model, as `VelnetHyperModel`'s `model_config`.
        algorithm: "bayesian" (Gaussian-process Bayesian optimisation), "random", or
            "hyperband" (successive halving; its number of trials follows from `epochs`).
        max_trials: number of trials (bayesian and random).
        epochs: epochs per trial (hyperband: the most any trial gets).
        overwrite: delete the keras-tuner project of this exact config and start again;
            otherwise an interrupted search of the same config resumes (a finished one
            only rewrites the tables).
        seed: seed of the search and of each trial's weights, shuffling and augmentation.
        fixed: dict name -> value of hyperparameters held fixed (`hp.Fixed`), e.g.
            `{"batch_size": 6}`.
        augment: augment the training tiles with the cube's 48 symmetries.
        steps_per_epoch: training batches per epoch (default: all training tiles).
        validation_steps: validation batches per epoch (default: the whole "val" split).
        tune_boxes: also search the number of training boxes (see `VelnetHyperModel`).
        executions_per_trial: trainings per trial (from seeds seed, seed + 1, ...), scored
            by the mean of their best val_loss.
        learning_rate, batch_size: the defaults of those hyperparameters.
        verbose: Keras fit verbosity (0, 1 or 2).

    Returns:
        Path of `best_config.json`, or None in a distributed worker process.

    Raises:
        ValueError: an unknown algorithm or hyperparameter name in `fixed`.
        VelnetInputError: a bad dataset or a model that does not fit its tiles.
        RuntimeError: a trial failed (the tables are written first, with the errors).
    """
    start = time.time()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}. Received: algorithm={algorithm!r}")
    outdir = Path(outdir)
    if not (isinstance(executions_per_trial, int) and executions_per_trial >= 1):
        raise ValueError(f"executions_per_trial must be an integer >= 1. "
                         f"Received: executions_per_trial={executions_per_trial!r}")
    hypermodel = VelnetHyperModel(dataset_dir, model_config, seed=seed, augment=augment,
                                  steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                                  tune_boxes=tune_boxes, learning_rate=learning_rate, batch_size=batch_size)
    space = _space(hypermodel, fixed or {})
    config = {"dataset": str(Path(dataset_dir).resolve()), "model": model_config,
              "algorithm": algorithm, "max_trials": max_trials, "epochs": epochs, "seed": seed,
              "fixed": fixed or {}, "augment": augment, "steps_per_epoch": steps_per_epoch,
              "validation_steps": validation_steps, "tune_boxes": tune_boxes}
    if executions_per_trial > 1:  # only when asked, so searches made before it existed resume
        config["executions_per_trial"] = executions_per_trial
    digest = hashlib.sha256(json.dumps(
        {**config, "manifest": sha256(hypermodel.manifest.path),
         "space": space.get_config()}, sort_keys=True, default=str).encode()).hexdigest()
    project = f"{algorithm}-{digest[:12]}"
    role = _role()
    tuner = _tuner(algorithm, hypermodel, space, outdir, project, max_trials, epochs, seed,
                   overwrite=overwrite and role != "worker", executions_per_trial=executions_per_trial)
    hypermodel.runs.clear()  # the tuner built the default setting to read the space
    log.info("keras-tuner project %s (%s)", tuner.project_dir, role)
    tuner.search(epochs=epochs, callbacks=_callbacks(outdir), verbose=verbose)
    if role == "worker":
        return None

    trials = sorted(tuner.oracle.trials.values(), key=_rank)
    rows = [_row(t) for t in trials]
    _write_tables(outdir, rows)
    failed = [t for t in trials if t.status != keras_tuner.engine.trial.TrialStatus.COMPLETED]
    if failed or not trials:
        detail = (failed[0].message or "no message").strip() if failed else "no trial ran"
        raise RuntimeError(f"{len(failed)} of {len(trials)} trials failed (see {outdir / TRIALS_CSV}); "
                           f"first error:\n{detail}")
    best = trials[0].hyperparameters
    best_config = {"model": hypermodel.model_config(best.copy()),
                   **{k: best.get(k) for k in TUNED_TRAIN_KWARGS}}
    if best.values.get("train_boxes", len(hypermodel.train_box_ids)) < len(hypermodel.train_box_ids):
        log.warning("the best trial trained on %d of %d training boxes; velnet train uses all",
                    best.get("train_boxes"), len(hypermodel.train_box_ids))
    for name, content in ((BEST_CONFIG, best_config), (BEST_HP, best.values)):
        with atomic_file(outdir / name) as tmp:
            tmp.write_text(json.dumps(content, indent=1) + "\n")
    write_record(outdir / RECORD_FILE, "tune", config=config,
                 timings={"wall": round(time.time() - start, 3)}, project=project,
                 backend=keras.backend.backend(), trials=len(trials),
                 best={"trial": trials[0].trial_id, OBJECTIVE: trials[0].score, **best.values},
                 outputs={"table": [TRIALS_CSV, TRIALS_MD], "best_config": BEST_CONFIG,
                          "best_hyperparameters": BEST_HP, "tuner": f"{TUNER_DIR}/{project}"})
    log.info("best %s %.4g (trial %s) -> %s", OBJECTIVE, trials[0].score, trials[0].trial_id,
             outdir / BEST_CONFIG)
    return outdir / BEST_CONFIG


def _space(hypermodel, fixed):
    """The search space: `fixed` values as `hp.Fixed`, then the hypermodel's declarations."""
    names = sorted(hypermodel.declare_hyperparameters(keras_tuner.HyperParameters()))
    unknown = sorted(set(fixed) - set(names))
    if unknown:
        raise ValueError(f"Unknown hyperparameters in `fixed`; this dataset's space has {names}. "
                         f"Received: {unknown}")
    space = keras_tuner.HyperParameters()
    for name, value in fixed.items():
        space.Fixed(name, value)
    hypermodel.declare_hyperparameters(space)
    return space


def _role():
    """"chief", "worker" or "alone", from keras-tuner's KERASTUNER_* environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "alone"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _tuner(algorithm, hypermodel, space, outdir, project, max_trials, epochs, seed, overwrite,
           executions_per_trial):
    """The keras-tuner tuner of `algorithm`; keras-tuner takes seed 0 for "no seed", so seed + 1."""
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, "min"), seed=seed + 1,
                  hyperparameters=space, directory=str(outdir / TUNER_DIR), project_name=project,
                  overwrite=overwrite, executions_per_trial=executions_per_trial)
    if algorithm == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    if algorithm == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
    return keras_tuner.Hyperband(hypermodel, max_epochs=epochs, factor=3, hyperband_iterations=1,
                                 **common)


def _callbacks(outdir):
    """NaN stop, and TensorBoard (per-trial folders, hyperparameters) when it is installed."""
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(outdir / LOG_DIR)))
    return callbacks


def _rank(trial):
    """Sort key: completed trials by score, best first, then the others by id."""
    done = trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED and trial.score is not None
    return (0, trial.score, trial.trial_id) if done else (1, math.inf, trial.trial_id)


def _row(trial):
    """A table row of a trial: id, status, metrics at its best epoch, values, error."""
    metrics = {name: trial.metrics.get_last_value(name)
               for name in (OBJECTIVE, "loss") if trial.metrics.exists(name)}
    error = (trial.message or "").strip().splitlines()
    return {"trial": trial.trial_id, "status": trial.status, **metrics,
            "best_epoch": trial.best_step if metrics else None, **trial.hyperparameters.values,
            "error": error[-1] if error else ""}


def _write_tables(outdir, rows):
    """Write the trial rows as CSV and as a markdown table."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "error")) + ["error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    fmt = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)).replace("|", "/") for c in columns) + " |"
              for row in rows]
    outdir.mkdir(parents=True, exist_ok=True)
    for name, text in ((TRIALS_CSV, buf.getvalue()), (TRIALS_MD, "\n".join(lines) + "\n")):
        with atomic_file(outdir / name) as tmp:
            tmp.write_text(text)

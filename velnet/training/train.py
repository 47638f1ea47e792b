"""Train the network of any task on a shard dataset, resumably, and load what training saved.

One loop for both papers: the dataset's manifest names the task (`velnet.tasks`), which
gives the network builder and loss (`velnet.networks.builders`); the tiles come from the shards.

A run folder holds:
    model.keras         the physical-unit model (weights of the best val_loss epoch), any tile size
    best.keras          the normalised-output training model at its best val_loss (checkpoint)
    history.csv         loss and val_loss per epoch (normalised units, the task's loss)
    logs/               TensorBoard logs (when tensorflow and tensorboard are installed)
    backup/             BackupAndRestore state while a run is unfinished
    train_config.json   config, versions, seed, wall time and final losses
    workers/<i>/        what worker i of a multi-worker run writes besides (its checkpoints,
                        logs and backup; worker 0 writes the run folder itself)

Several machines train one model with `devices="workers"` (`velnet train --devices workers`):
the same command on every worker, the cluster named by TF_CONFIG (TensorFlow) or by
KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID (JAX); see
`velnet.training.distribute.data_parallel`.
"""
import csv
import dataclasses
import importlib.util
import inspect
import json
import logging
import math
import os
import time
import zipfile
from pathlib import Path

import keras

from velnet.data.datasets import load_split
from velnet.data.manifest import read_manifest
from velnet.errors import VelnetInputError
from velnet.files import atomic_file, remove_path, require_file
from velnet.networks.builders import ModelMetadata, build_network, physical_network, task_loss
from velnet.networks.unet3d import OUTPUT_LAYER
from velnet.provenance import write_record
from velnet.tasks import get_task
from velnet.training.distribute import (
    WORKERS_DIR,
    data_parallel,
    synchronize_batch_norm,
    worker_index,
    worker_share,
)
from velnet.training.runs import (  # noqa: F401 (the file names are this module's API too)
    BACKUP_DIR,
    BEST_FILE,
    EXTEND,
    HISTORY_FILE,
    LOG_DIR,
    MODEL_FILE,
    NEW,
    RECORD_FILE,
    dataset_identity,
    prepare_run,
)

log = logging.getLogger(__name__)

TRAIN_SPLIT, VAL_SPLIT = "train", "val"
OPTIONAL_STEPS = ("steps_per_epoch", "validation_steps")
"""Settings that may be None (the whole split)."""


def train(dataset_dir, outdir, model_config, epochs, batch_size=6, learning_rate=1e-4, seed=0,
          augment=True, steps_per_epoch=None, validation_steps=None, callbacks=(), devices=None,
          overwrite=False, extend=False):
    """Train the task's network on the "train" split, monitoring "val"; resume an interrupted run.

    Adam on the task's loss of the normalised targets (MSE; eq. 6 for the halo paper's
    magnitude and direction); the training tiles are reshuffled (and, with `augment`,
    transformed by a random element of Oh) every epoch. If `outdir` holds the backup of an
    unfinished run of the same dataset, training continues from its last completed epoch up
    to `epochs` (`velnet.training.runs.prepare_run` says what else an existing `outdir` allows).
    Every shard's checksum is verified before the first epoch; a non-finite loss stops the run
    with nothing saved as final.

    Args:
        dataset_dir: shard folder with `manifest.json` (from `data_prep.make_shards`).
        outdir: run folder (created; see the module docstring for its contents).
        model_config: a preset name of the task's builder, or a dict of its arguments,
            optionally with a "preset" key (default: the task's full-size preset) that the
            other keys override (`velnet.networks.builders.network_config`). The shapes and channels
            come from the dataset.
        epochs: total number of epochs (with `extend`, the number of epochs more).
        batch_size: tiles per batch (the paper: 6).
        learning_rate: Adam learning rate.
        seed: seed of weights, shuffling and augmentation (`keras.utils.set_random_seed`).
        augment: augment the training tiles with the cube's 48 symmetries.
        steps_per_epoch: batches per epoch (default: the whole training split).
        validation_steps: validation batches per epoch (default: the whole "val" split).
        callbacks: extra `keras.callbacks.Callback`s.
        devices: None (one device), "auto" (every GPU), a number of devices to train on
            data-parallel, or "workers" (every device of every worker process of a cluster,
            each running this same call); `batch_size` is then split across them (see
            `data_parallel`). Worker 0 writes the run folder; the others return once trained.
        overwrite: train anew in an `outdir` that holds a finished run, a run of another
            dataset, or something else (only the run's own files there are replaced).
        extend: train a finished run of this dataset `epochs` more epochs, from its best
            checkpoint (weights and optimizer state).

    Returns:
        Path of `model.keras`: physical outputs, weights of the epoch with the best val_loss.

    Raises:
        VelnetInputError: bad settings, a bad or damaged dataset, a model config that does not
            fit its tiles, an `outdir` that `prepare_run` refuses, or a non-finite loss.
        ValueError: a `devices` value this machine or backend cannot take.
    """
    start = time.time()
    check_settings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                   steps_per_epoch=steps_per_epoch, validation_steps=validation_steps)
    dataset_dir, outdir = Path(dataset_dir), Path(outdir)
    manifest = read_manifest(dataset_dir, verify=True)
    task = get_task(manifest.task)
    dataset = dataset_identity(dataset_dir)
    worker = worker_index(devices)
    rundir = outdir if worker == 0 else outdir / WORKERS_DIR / str(worker)  # (one writer of the run folder)
    mode = prepare_run(rundir, dataset, overwrite, extend)
    keras.utils.set_random_seed(seed)
    log.info("random seed %d (keras.utils.set_random_seed)", seed)
    scope, device_names = data_parallel(devices)
    if device_names and batch_size % len(device_names):
        raise ValueError(f"batch_size must divide among the {len(device_names)} devices {device_names}. "
                         f"Received: batch_size={batch_size}")
    with scope:
        config, network = build_network(model_config, manifest)
        if device_names:
            synchronize_batch_norm(network)
        log.info("%s network %s with %d parameters, %s -> %s", task.name, task.network, network.count_params(),
                 manifest.input_shape, manifest.target_shape)
        jit_compile = jit_compile_setting()
        loss = task_loss(task)
        network.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, jit_compile=jit_compile)
        first_epoch = 0
        if mode == EXTEND:
            network.optimizer.build(network.trainable_variables)  # so that its state is restored too
            network.load_weights(rundir / BEST_FILE)
            first_epoch = read_history(rundir / HISTORY_FILE)[-1]["epoch"] + 1
            epochs += first_epoch
            log.info("training the finished run %s from its best weights, epochs %d to %d", outdir, first_epoch,
                     epochs - 1)

        whole = bool(device_names)  # on several devices every batch must divide among them
        train_data = load_split(manifest, TRAIN_SPLIT, batch_size, shuffle=True, seed=seed,
                                augment=augment, drop_remainder=whole)
        val_data = load_split(manifest, VAL_SPLIT, batch_size, shuffle=False, drop_remainder=whole)
        if devices == "workers":
            train_data, val_data = worker_share(train_data), worker_share(val_data)
        run_config = {"dataset": str(dataset_dir.resolve()), "task": task.name, "model": config, "epochs": epochs,
                      "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                      "augment": augment, "steps_per_epoch": steps_per_epoch,
                      "validation_steps": validation_steps, "optimizer": "Adam",
                      "loss": {"of": "targets / target_scale", **loss.get_config()}, "jit_compile": jit_compile,
                      "devices": device_names or 1}
        created = not rundir.exists()
        rundir.mkdir(parents=True, exist_ok=True)
        write_record(rundir / RECORD_FILE, "train", config=run_config, status="running", dataset=dataset)
        guard = StopOnNonFinite()
        try:
            history = network.fit(
                train_data, validation_data=val_data, epochs=epochs, initial_epoch=first_epoch,
                shuffle=False,  # the shards shuffle
                steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                callbacks=[guard, *training_callbacks(rundir, mode), *callbacks])
        except BaseException:
            if created and not (rundir / HISTORY_FILE).exists():  # not one epoch to resume from
                remove_path(rundir)
            raise
    if worker:
        return outdir / MODEL_FILE

    if guard.problem or not (outdir / BEST_FILE).exists():
        _discard_diverged(outdir, created)
        raise VelnetInputError(outdir, f"training stopped: {guard.problem or 'no epoch ended with a finite val_loss'}; "
                                       "nothing was saved as final. Lower --learning-rate, or check the dataset "
                                       f"with `velnet check-shards {dataset_dir}`")
    network.load_weights(outdir / BEST_FILE)
    scale = manifest.target_scale
    model_path = outdir / MODEL_FILE
    save_keras(physical_network(task, config, network, scale, ModelMetadata.of(manifest, config)), model_path)

    rows = read_history(outdir / HISTORY_FILE)
    best = min(rows, key=lambda r: r["val_loss"])
    write_record(
        outdir / RECORD_FILE, "train", config=run_config,
        timings={"wall": round(time.time() - start, 3)}, status="finished", dataset=dataset,
        seed=seed, backend=keras.backend.backend(), parameters=network.count_params(),
        target_scale=scale,
        epochs_this_run=[history.epoch[0], history.epoch[-1]] if history.epoch else [],
        final={"epoch": rows[-1]["epoch"], "loss": rows[-1]["loss"], "val_loss": rows[-1]["val_loss"]},
        best={"epoch": best["epoch"], "val_loss": best["val_loss"]},
        outputs={"model": MODEL_FILE, "checkpoint": BEST_FILE, "history": HISTORY_FILE})
    log.info("saved %s (best val_loss %.4g at epoch %d)", model_path, best["val_loss"], best["epoch"])
    return model_path


def _discard_diverged(outdir, created):
    """After a non-finite loss: drop the diverged backup (a rerun starts afresh) and a checkpoint of
    no finite epoch; a run folder this call made, without a finite epoch, goes entirely."""
    remove_path(outdir / BACKUP_DIR)
    rows = read_history(outdir / HISTORY_FILE) if (outdir / HISTORY_FILE).exists() else []
    if not any(math.isfinite(row["val_loss"]) for row in rows):
        remove_path(outdir if created else outdir / BEST_FILE)


def check_settings(**settings):
    """Raise VelnetInputError unless every training setting is usable: a finite positive
    learning_rate; epochs, batch_size, steps_per_epoch and validation_steps whole numbers >= 1
    (the steps may be None: the whole split)."""
    for name, value in settings.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "learning_rate":
            usable, wanted = number and math.isfinite(value) and value > 0, "a positive number"
        else:
            wanted = "a whole number of at least 1"
            usable = (name in OPTIONAL_STEPS) if value is None else number and isinstance(value, int) and value >= 1
        if not usable:
            raise VelnetInputError(None, f"--{name.replace('_', '-')} must be {wanted}. Received: {name}={value!r}")


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training at the first non-finite loss, of a batch or of an epoch (val_loss too).

    Attributes:
        problem: where the loss stopped being finite (None while it is).
    """

    def on_train_begin(self, logs=None):
        self.problem, self.epoch = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, ("loss",), f"batch {batch} of epoch {self.epoch}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, ("loss", "val_loss"), f"the end of epoch {epoch}")

    def _check(self, logs, keys, where):
        bad = {k: float(logs[k]) for k in keys if k in (logs or {}) and not math.isfinite(float(logs[k]))}
        if bad and self.problem is None:
            self.problem = f"{', '.join(f'{k} = {v}' for k, v in bad.items())} at {where}"
            self.model.stop_training = True


def load_model(path):
    """Load a model saved by `train`.

    Args:
        path: a `model.keras` written by `train`.

    Returns:
        `(model, metadata)`: the model maps `(B, nx, ny, nz, C)` inputs (the channels of
        its input spec, `velnet.data.inputs`) to `(B, nx - 2 margin, ..., C_out)` outputs in the
        target's units (km/s; rho/rho_mean for a density), for any sizes divisible by
        `metadata.stride` (4 for the presets) and larger than 2 margin (0 for the periodic
        halo networks); `metadata` is its `velnet.networks.builders.ModelMetadata` (task,
        target_name, shapes, tile, normalisation with target_scale, cosmology, box_size in
        Mpc/h, nmesh, redshift, input_spec and model_config, the builder arguments).

    Raises:
        VelnetInputError: a missing or unreadable file, or a Keras model not saved by `train`
            (or its metadata incomplete).
    """
    path = require_file(path, "trained model")
    if not zipfile.is_zipfile(path):
        raise VelnetInputError(path, "is not a whole .keras file (a .keras model is a zip archive): it is truncated "
                                     "or not a model; copy it again or retrain")
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as err:
        raise VelnetInputError(path, f"cannot be loaded as a Keras model ({err})") from None
    try:
        layer = model.get_layer(OUTPUT_LAYER)
    except ValueError:
        raise VelnetInputError(
            path, f"is not a model saved by `velnet train` (no {OUTPUT_LAYER!r} layer)") from None
    return model, _stage_one_beside(ModelMetadata.from_dict(layer.metadata, path), path)


def _stage_one_beside(metadata, path):
    """A stage-two model's metadata with its stage-one model resolved beside the model file when its
    relative path names a file there (shipped pairs name theirs "density.keras"); otherwise as recorded
    (a path relative to the working directory of training)."""
    spec = metadata.input_spec
    if spec is None or not spec.density_model or Path(spec.density_model).is_absolute():
        return metadata
    beside = Path(path).parent / spec.density_model
    if not beside.is_file():
        return metadata
    return dataclasses.replace(metadata, input_spec=dataclasses.replace(spec, density_model=str(beside)))


MODEL_KEY = "model"
"""The key of a training config that holds the model config."""


def training_options(config, path=None):
    """Check a training config (`velnet train --config`): the model config and `train`'s options.

    Args:
        config: a dict, or the path of a JSON file holding one: optionally "model" (a model
            config, as `train`'s `model_config`) and any keyword argument of `train` but
            callbacks (epochs, batch_size, learning_rate, seed, augment, steps_per_epoch,
            validation_steps, devices).
        path: the file it came from, for errors (default `config` when it is a path).

    Returns:
        `(model_config or None, options)`.

    Raises:
        VelnetInputError: naming the file: not a JSON object, or a key that is not a
            training option.
    """
    if not isinstance(config, dict):
        path = require_file(config, "training config")
        try:
            config = json.loads(Path(path).read_text())
        except ValueError as err:
            raise VelnetInputError(path, f"not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise VelnetInputError(path, "a training config must hold a JSON object")
    known = [name for name, p in inspect.signature(train).parameters.items()
             if p.default is not inspect.Parameter.empty and name != "callbacks"]
    unknown = sorted(set(config) - {MODEL_KEY, *known, "epochs"})
    if unknown:
        raise VelnetInputError(path, f"unknown training option(s) {unknown}; a training config holds "
                                     f"{MODEL_KEY!r} and some of {['epochs', *known]}")
    options = dict(config)
    return options.pop(MODEL_KEY, None), options


def jit_compile_setting():
    """Keras's "auto" (XLA where it can), except on TensorFlow without a GPU or TPU.

    There XLA makes the 3D convolutions train about 6 times slower (tiny U-net, 2-core CPU).
    """
    if keras.backend.backend() != "tensorflow":
        return "auto"
    on_cpu = all(d.lower().startswith("cpu") for d in keras.distribution.list_devices())
    return False if on_cpu else "auto"


def training_callbacks(outdir, mode=NEW):
    """Checkpoint, CSV log, TensorBoard (if installed) and backup callbacks of a run (`mode` from `prepare_run`)."""
    resuming = (outdir / BACKUP_DIR).exists() or mode == EXTEND
    previous = read_history(outdir / HISTORY_FILE) if resuming and (outdir / HISTORY_FILE).exists() else []
    if resuming:
        log.info("%s the run in %s", "continuing" if mode == EXTEND else "resuming the unfinished", outdir)
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            outdir / BEST_FILE, monitor="val_loss", save_best_only=True,
            initial_value_threshold=min((r["val_loss"] for r in previous), default=None)),
        keras.callbacks.CSVLogger(outdir / HISTORY_FILE, append=resuming),
    ]
    if all(importlib.util.find_spec(m) for m in ("tensorflow", "tensorboard")):
        callbacks.append(keras.callbacks.TensorBoard(log_dir=outdir / LOG_DIR))
    else:
        log.info("TensorBoard logging skipped: it needs tensorflow and tensorboard installed")
    callbacks.append(keras.callbacks.BackupAndRestore(backup_dir=outdir / BACKUP_DIR))
    return callbacks


def read_history(path):
    """Rows of a CSVLogger file as dicts with int epoch and float losses."""
    with open(path, newline="") as f:
        return [{"epoch": int(r["epoch"]), "loss": float(r["loss"]), "val_loss": float(r["val_loss"])}
                for r in csv.DictReader(f)]


def save_keras(model, path):
    """Save `model` as a `.keras` file atomically (Keras insists on the extension)."""
    with atomic_file(path) as tmp:
        staged = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)

"""Train the two stages of the 2024 halo paper on whole boxes held in memory, resumably.

Stage "density": halo channels -> real-space dark-matter density, mean squared error (eq. 5).
Stage "velocity": 8 channels -> velocity or momentum as direction and magnitude, eq. 6
(`velnet.losses.MagnitudeDirectionLoss`).

Training draws random periodic sub-boxes (128^3 in the paper) from the training boxes,
each transformed by a random element of the cube's symmetry group Oh; validation runs on
whole periodic boxes (256^3 in the paper) in one pass, one box per batch. The run folder
is that of `velnet.train` (model.keras, best.keras, history.csv, logs/, backup/,
train_config.json), with the same callbacks, checkpoint and resume. Inputs must already be
normalised to order one (e.g. the linear-velocity channels divided by `target_scale`); the
targets are divided by `target_scale` here and the saved model multiplies by it again.
"""
import logging
import time
from pathlib import Path

import keras
import numpy as np

from .halo_models import TOTAL_STRIDE, Recombine, halo_unet, halo_velocity_unet
from .losses import MagnitudeDirectionLoss
from .models import OUTPUT_LAYER, ToPhysical
from .provenance import write_record
from .tiling import extract, oh_transform
from .train import BEST_FILE, HISTORY_FILE, MODEL_FILE, RECORD_FILE, training_callbacks, read_history, \
    jit_compile_setting, save_keras, load_model

log = logging.getLogger(__name__)

STAGES = ("density", "velocity")
"""Stage one: halo channels -> density; stage two: 8 channels -> direction and magnitude."""
VECTOR_TARGET = ((0, 3),)
"""Vector channels of a stage-two target (the 3-vector)."""


class SubBoxes(keras.utils.PyDataset):
    """Batches of random periodic sub-boxes cut from whole boxes, with random Oh transforms.

    Batch `index` of epoch `epoch` depends only on `(seed, epoch, index)`; `epoch` counts
    up at each epoch's end (`train_halo` also sets it at each epoch's start, so a resumed
    run draws what an uninterrupted one would).

    Args:
        inputs: sequence of `(N, N, N, C_in)` float arrays, one per box (N may differ
            between boxes).
        targets: sequence of `(N, N, N, C_out)` float arrays matching `inputs`.
        size: cells per side of a sub-box (<= every N).
        batch_size: sub-boxes per batch.
        steps: batches per epoch.
        seed: seed of the draws.
        augment: apply a random element of Oh to each (input, target) pair.
        input_vector_slices: `[(start, stop), ...]` input channels holding 3-vectors.
        target_vector_slices: the same for the targets.
        target_scale: the targets are divided by this.
        margin: cells at each face of a sub-box left out of the loss (weight 0), since a
            sub-box of a larger box is not periodic; 0 to weigh every cell (as the paper).
        **kwargs: `keras.utils.PyDataset` arguments (workers, use_multiprocessing).

    Returns (per item):
        `(x, y)`, or `(x, y, weights)` when `margin > 0`: x `(batch_size, size, size,
        size, C_in)`, y `(..., C_out)` float32, weights `(batch_size, size, size, size)`.

    Raises:
        ValueError: for mismatched or non-cubic boxes, or sizes that do not fit.
    """

    def __init__(self, inputs, targets, size, batch_size, steps, seed=0, augment=True,
                 input_vector_slices=(), target_vector_slices=(), target_scale=1.0, margin=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.inputs, self.targets = _check_boxes(inputs, targets, "inputs", "targets")
        smallest = min(x.shape[0] for x in self.inputs)
        if not (isinstance(size, int) and 0 < size <= smallest
                and isinstance(margin, int) and 0 <= 2 * margin < size):
            raise ValueError(
                f"`size` must be an int in [1, {smallest}] (the smallest box) and `margin` in "
                f"[0, size / 2). Received: size={size}, margin={margin}")
        self.size, self.batch_size, self.steps = size, int(batch_size), int(steps)
        self.seed, self.augment, self.margin = int(seed), bool(augment), int(margin)
        self.input_vector_slices = [tuple(s) for s in input_vector_slices]
        self.target_vector_slices = [tuple(s) for s in target_vector_slices]
        self.target_scale = float(target_scale)
        self.epoch = 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        xs, ys = [], []
        for _ in range(self.batch_size):
            box = rng.integers(len(self.inputs))
            origin = rng.integers(0, self.inputs[box].shape[0], size=(1, 3))
            element = int(rng.integers(48)) if self.augment else 0
            xs.append(oh_transform(extract(self.inputs[box], origin, self.size)[0], element,
                                   self.input_vector_slices))
            ys.append(oh_transform(extract(self.targets[box], origin, self.size)[0], element,
                                   self.target_vector_slices))
        x = np.stack(xs).astype(np.float32)
        y = (np.stack(ys) / self.target_scale).astype(np.float32)
        if not self.margin:
            return x, y
        weights = np.zeros((self.batch_size,) + (self.size,) * 3, dtype=np.float32)
        inner = slice(self.margin, self.size - self.margin)
        weights[:, inner, inner, inner] = 1
        return x, y, weights

    def on_epoch_end(self):
        self.epoch += 1


def halo_network(stage, input_channels, output_channels, **config):
    """Build the training network of a stage.

    Args:
        stage: "density" (`halo_unet`) or "velocity" (`halo_velocity_unet`, 3-vector targets).
        input_channels: input channels (Table 1: 4, or 8 for "velocity").
        output_channels: target channels (1 for "density"; must be 3 for "velocity").
        **config: `n1`, `n2`, `n3`, `dropout`, `init_kernel`, `name` of the builder.

    Returns:
        The functional `keras.Model` (outputs in normalised units; 4 channels,
        direction then magnitude, for "velocity").

    Raises:
        ValueError: unknown stage or arguments the builders cannot take.
    """
    if stage == "density":
        return halo_unet(input_channels, output_channels, **config)
    if stage == "velocity":
        if output_channels != 3:
            raise ValueError("The velocity stage predicts 3-vectors. "
                             f"Received: output_channels={output_channels}")
        return halo_velocity_unet(input_channels, **config)
    raise ValueError(f"`stage` must be one of {STAGES}. Received: stage={stage!r}")


def stage_loss(stage, reduction="mean_with_sample_weight"):
    """The loss of a stage: MSE (eq. 5) for "density", eq. 6 (`MagnitudeDirectionLoss`) otherwise.

    The default reduction averages over the cells of non-zero weight (all, without weights).
    """
    if stage == "density":
        return keras.losses.MeanSquaredError(reduction=reduction)
    return MagnitudeDirectionLoss(reduction=reduction)


def physical_halo_model(network, stage, scale, metadata):
    """The network with outputs in physical units, ending in a `ToPhysical` layer "to_physical".

    Args:
        network: a trained `halo_network`.
        stage: its stage; "velocity" outputs are turned into 3-vectors (`Recombine`).
        scale: physical units per normalised unit (the training `target_scale`).
        metadata: JSON-serialisable dict stored in the "to_physical" layer.

    Returns:
        A functional `keras.Model` sharing the network's layers: `(B, n, n, n, C_in)` to
        `(B, n, n, n, 1)` density or `(B, n, n, n, 3)` vectors, for any n divisible by 4.
    """
    x = network.outputs[0]
    if stage == "velocity":
        x = Recombine(dtype="float32", name="recombine")(x)
    outputs = ToPhysical(scale, metadata, dtype="float32", name=OUTPUT_LAYER)(x)
    return keras.Model(network.inputs, outputs, name=network.name)


def train_halo(stage, inputs, targets, val_inputs, val_targets, outdir, epochs, model_config=None,
               size=128, batch_size=4, steps_per_epoch=32, learning_rate=1e-4, seed=0,
               augment=True, margin=0, input_vector_slices=(), target_scale=1.0, metadata=None,
               callbacks=()):
    """Train one stage of the halo paper on sub-boxes of whole boxes; resume an unfinished run.

    Adam on the stage's loss (`stage_loss`) of normalised targets (targets / target_scale).
    If `outdir` holds the backup of an unfinished run, training continues from its last
    completed epoch up to `epochs`.

    Args:
        stage: "density" or "velocity".
        inputs: sequence of `(N, N, N, C_in)` training boxes (normalised inputs).
        targets: sequence of `(N, N, N, C_out)` matching targets in physical units (1
            channel: density; 3: velocity or momentum in km/s).
        val_inputs: sequence of whole periodic validation boxes of one size, its side
            divisible by 4.
        val_targets: their targets.
        outdir: run folder (see the module docstring).
        epochs: total number of epochs.
        model_config: dict of builder arguments `n1`, `n2`, `n3`, `dropout`, `init_kernel`,
            `name` (defaults of `halo_unet`).
        size: cells per side of a training sub-box, divisible by 4 (the paper: 128).
        batch_size: sub-boxes per batch.
        steps_per_epoch: batches per epoch.
        learning_rate: Adam learning rate.
        seed: seed of weights, draws and augmentation (`keras.utils.set_random_seed`).
        augment: augment sub-boxes with the cube's 48 symmetries.
        margin: cells at each sub-box face left out of the training loss (see `SubBoxes`).
        input_vector_slices: input channels holding 3-vectors (e.g. `[(5, 8)]` for the
            linear velocity), permuted and negated by the augmentation.
        target_scale: physical units per normalised target unit (e.g. the rms speed).
        metadata: extra JSON-serialisable entries stored with the model (e.g. the input
            normalisation, cosmology, box size).
        callbacks: extra `keras.callbacks.Callback`s.

    Returns:
        Path of `model.keras`: physical outputs, weights of the epoch with the best val_loss;
        load it with `load_halo_model`.

    Raises:
        ValueError: bad stage, boxes, sizes or model config.
        RuntimeError: no epoch ended with a finite val_loss (nothing to save).
    """
    start = time.time()
    outdir = Path(outdir)
    model_config = dict(model_config or {})
    target_slices = VECTOR_TARGET if stage == "velocity" else ()
    if size % TOTAL_STRIDE:
        raise ValueError(f"`size` must be divisible by {TOTAL_STRIDE}. Received: size={size}")
    val_inputs, val_targets = _check_boxes(val_inputs, val_targets, "val_inputs", "val_targets")
    val_sides = {x.shape[0] for x in val_inputs}
    if len(val_sides) != 1 or val_sides.pop() % TOTAL_STRIDE:
        raise ValueError(f"Validation boxes must share one side, divisible by {TOTAL_STRIDE}. "
                         f"Received: sides {[x.shape[0] for x in val_inputs]}")
    train_data = SubBoxes(inputs, targets, size, batch_size, steps_per_epoch, seed=seed,
                          augment=augment, input_vector_slices=input_vector_slices,
                          target_vector_slices=target_slices, target_scale=target_scale,
                          margin=margin)
    in_channels, out_channels = train_data.inputs[0].shape[-1], train_data.targets[0].shape[-1]
    if (val_inputs[0].shape[-1], val_targets[0].shape[-1]) != (in_channels, out_channels):
        raise ValueError(
            f"Validation boxes must have the training boxes' {in_channels} input and "
            f"{out_channels} target channels. Received: {val_inputs[0].shape[-1]} and "
            f"{val_targets[0].shape[-1]}")

    keras.utils.set_random_seed(seed)
    log.info("random seed %d (keras.utils.set_random_seed)", seed)
    network = halo_network(stage, in_channels, out_channels, **model_config)
    log.info("%s network with %d parameters, %d -> %d channels", stage, network.count_params(),
             in_channels, network.output_shape[-1])
    jit_compile = jit_compile_setting()
    network.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=stage_loss(stage),
                    jit_compile=jit_compile)
    outdir.mkdir(parents=True, exist_ok=True)
    sync = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: setattr(train_data, "epoch", epoch))
    history = network.fit(
        train_data, epochs=epochs, shuffle=False,
        validation_data=(np.stack(val_inputs).astype(np.float32),
                         (np.stack(val_targets) / target_scale).astype(np.float32)),
        validation_batch_size=1, callbacks=[sync, *training_callbacks(outdir), *callbacks])

    if not (outdir / BEST_FILE).exists():
        raise RuntimeError(f"no epoch ended with a finite val_loss; see {outdir / HISTORY_FILE}")
    network.load_weights(outdir / BEST_FILE)
    config = {"stage": stage, "input_channels": int(in_channels),
              "output_channels": int(out_channels), "model_config": model_config,
              "input_vector_slices": [list(s) for s in input_vector_slices],
              "target_scale": float(target_scale)}
    model_path = outdir / MODEL_FILE
    save_keras(physical_halo_model(network, stage, target_scale, {**(metadata or {}), **config}),
                model_path)

    rows = read_history(outdir / HISTORY_FILE)
    best = min(rows, key=lambda r: r["val_loss"])
    write_record(
        outdir / RECORD_FILE, "train_halo",
        config={**config, "epochs": epochs, "size": size, "batch_size": batch_size,
                "steps_per_epoch": steps_per_epoch, "learning_rate": learning_rate, "seed": seed,
                "augment": augment, "margin": margin, "optimizer": "Adam",
                "loss": network.loss.get_config(), "jit_compile": jit_compile,
                "boxes": {"train": [list(x.shape) for x in train_data.inputs],
                          "val": [list(x.shape) for x in val_inputs]}},
        timings={"wall": round(time.time() - start, 3)},
        seed=seed, backend=keras.backend.backend(), parameters=network.count_params(),
        epochs_this_run=[history.epoch[0], history.epoch[-1]] if history.epoch else [],
        final={k: rows[-1][k] for k in ("epoch", "loss", "val_loss")},
        best={"epoch": best["epoch"], "val_loss": best["val_loss"]},
        outputs={"model": MODEL_FILE, "checkpoint": BEST_FILE, "history": HISTORY_FILE})
    log.info("saved %s (best val_loss %.4g at epoch %d)", model_path, best["val_loss"],
             best["epoch"])
    return model_path


def load_halo_model(path):
    """Load a model saved by `train_halo`.

    Args:
        path: a `model.keras` written by `train_halo`.

    Returns:
        `(model, metadata)`: the model maps `(B, n, n, n, C_in)` normalised inputs to the
        density `(..., 1)` or vectors `(..., 3)` in physical units, for any n divisible by
        4; metadata holds "stage", "input_channels", "output_channels", "model_config",
        "input_vector_slices", "target_scale" and the caller's entries.

    Raises:
        VelnetInputError: a missing or unreadable file, or a model not saved by training.
    """
    return load_model(path)


def predict_box(model, box):
    """Predict a whole periodic box in one pass.

    Args:
        model: a model of `load_halo_model` (or a `halo_network`).
        box: `(N, N, N, C_in)` normalised inputs, N divisible by 4.

    Returns:
        float32 array `(N, N, N, C_out)`.

    Raises:
        ValueError: a box of the wrong rank, channels or size.
    """
    box = np.asarray(box, dtype=np.float32)
    channels = model.input_shape[-1]
    if box.ndim != 4 or box.shape[-1] != channels or any(n % TOTAL_STRIDE for n in box.shape[:3]):
        raise ValueError(f"`box` must be (N, N, N, {channels}) with sides divisible by "
                         f"{TOTAL_STRIDE}. Received: box.shape={box.shape}")
    return np.asarray(model.predict(box[None], batch_size=1, verbose=0)[0])


def _check_boxes(inputs, targets, input_name, target_name):
    """Lists of float32 input and target boxes, checked to be cubic, 4D and paired."""
    inputs = [np.asarray(x, dtype=np.float32) for x in inputs]
    targets = [np.asarray(y, dtype=np.float32) for y in targets]
    if not inputs or len(inputs) != len(targets):
        raise ValueError(f"`{input_name}` and `{target_name}` must hold the same number (> 0) of "
                         f"boxes. Received: {len(inputs)} and {len(targets)}")
    for x, y in zip(inputs, targets):
        if (x.ndim != 4 or y.ndim != 4 or len({*x.shape[:3]}) != 1 or x.shape[:3] != y.shape[:3]
                or x.shape[-1] != inputs[0].shape[-1] or y.shape[-1] != targets[0].shape[-1]):
            raise ValueError(
                f"`{input_name}` and `{target_name}` must be cubic channels-last boxes "
                f"(N, N, N, C) of equal sides and channel counts. Received: {x.shape} and "
                f"{y.shape}")
    return inputs, targets

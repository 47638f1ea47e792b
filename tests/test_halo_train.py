"""Training the halo-paper stages on boxes in memory: sub-boxes, falling loss, reload, resume."""
import json

import keras
import numpy as np
import pytest

from velnet.halo_models import recombine
from velnet.halo_train import SubBoxes, load_halo_model, predict_box, train_halo

MODEL = dict(n1=4, n2=6, n3=8, init_kernel=3, dropout=0.1)
SCALE = 300.0
"""km/s per normalised velocity unit."""


def gradient(field):
    """Central-difference gradient of a periodic scalar box, channels last."""
    return np.stack([np.roll(field, -1, a) - np.roll(field, 1, a) for a in range(3)], -1)


def smooth_box(n, seed):
    """A smooth periodic random scalar box with unit variance."""
    white = np.random.default_rng(seed).standard_normal((n,) * 3)
    k = np.fft.fftfreq(n)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    field = np.fft.ifftn(np.fft.fftn(white) * np.exp(-k2 * 80)).real
    return (field / field.std()).astype(np.float32)


def boxes(n, seed):
    """Stage inputs and targets of one box whose targets are local functions of the inputs.

    Returns:
        `(halos (n,n,n,4), density (n,n,n,1), velocity_inputs (n,n,n,8), velocity (n,n,n,3) km/s)`.
    """
    s = smooth_box(n, seed)
    halos = np.stack([s, s ** 2, np.roll(s, 1, 0), np.ones_like(s)], -1)
    density = (1 + 0.5 * s)[..., None]
    velocity = SCALE * gradient(s)
    linear = 0.8 * velocity / SCALE
    velocity_inputs = np.concatenate([halos, density, linear], -1)
    return halos, density, velocity_inputs, velocity.astype(np.float32)


def history(outdir):
    lines = (outdir / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")))) for line in lines[1:]]


def test_sub_boxes_pair_inputs_and_targets_under_the_same_symmetry():
    _, _, x, v = boxes(12, 0)
    scalar = x[..., :1]
    data = SubBoxes([np.concatenate([scalar, v], -1)], [np.concatenate([v, scalar], -1)], size=8,
                    batch_size=6, steps=3, seed=5, input_vector_slices=[(1, 4)],
                    target_vector_slices=[(0, 3)], target_scale=SCALE)
    xb, yb = data[1]
    assert xb.shape == (6, 8, 8, 8, 4) and yb.shape == (6, 8, 8, 8, 4) and xb.dtype == np.float32
    np.testing.assert_allclose(yb[..., :3] * SCALE, xb[..., 1:], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(yb[..., 3] * SCALE, xb[..., 0], rtol=1e-5, atol=1e-5)
    # Vectors turned with the axes: the sub-box vector is still the gradient of its scalar.
    inner = (slice(None),) + (slice(1, -1),) * 3
    np.testing.assert_allclose(xb[..., 1:][inner], SCALE * batch_gradient(xb[..., 0])[inner],
                               rtol=1e-4, atol=1e-2)
    np.testing.assert_array_equal(data[1][0], xb)  # draws depend on (seed, epoch, index) only
    data.on_epoch_end()
    assert not np.array_equal(data[1][0], xb)


def batch_gradient(fields):
    """Central differences along the spatial axes of a batch of scalar boxes, channels last."""
    return np.stack([np.roll(fields, -1, a) - np.roll(fields, 1, a) for a in (1, 2, 3)], -1)


def test_sub_boxes_margin_weights_and_bad_sizes():
    halos, density, _, _ = boxes(8, 1)
    x, y, w = SubBoxes([halos], [density], size=8, batch_size=2, steps=1, margin=2)[0]
    assert w.shape == (2, 8, 8, 8) and w.sum() == 2 * 4 ** 3 and w[:, 2:6, 2:6, 2:6].min() == 1
    with pytest.raises(ValueError, match="Received: size=12"):
        SubBoxes([halos], [density], size=12, batch_size=2, steps=1)
    with pytest.raises(ValueError, match="Received: "):
        SubBoxes([halos], [density[:4]], size=4, batch_size=2, steps=1)


@pytest.fixture(scope="module")
def data():
    return [boxes(16, seed) for seed in range(2)] + [boxes(8, 9)]


def test_density_stage_loss_falls(data, tmp_path):
    train, val = data[:2], data[2]
    path = train_halo("density", [b[0] for b in train], [b[1] for b in train], [val[0]], [val[1]],
                      tmp_path / "density", epochs=3, model_config=MODEL, size=8, batch_size=2,
                      steps_per_epoch=6, learning_rate=1e-2, seed=0)
    rows = history(tmp_path / "density")
    assert len(rows) == 3 and rows[-1]["loss"] < 0.6 * rows[0]["loss"]
    model, meta = load_halo_model(path)
    assert meta["stage"] == "density" and meta["model_config"] == MODEL
    assert predict_box(model, data[0][0]).shape == (16, 16, 16, 1)
    record = json.loads((tmp_path / "density" / "train_config.json").read_text())
    assert record["config"]["loss"]["name"] == "mean_squared_error"


@pytest.mark.slow
def test_velocity_stage_loss_falls_and_the_reloaded_model_predicts_a_larger_box(data, tmp_path):
    train, val = data[:2], data[2]
    out = tmp_path / "velocity"
    path = train_halo("velocity", [b[2] for b in train], [b[3] for b in train], [val[2]], [val[3]],
                      out, epochs=3, model_config=MODEL, size=8, batch_size=2, steps_per_epoch=6,
                      learning_rate=1e-2, seed=0, input_vector_slices=[(5, 8)], target_scale=SCALE,
                      metadata={"target_name": "velocity"})
    rows = history(out)
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    model, meta = load_halo_model(path)
    assert meta["target_name"] == "velocity" and meta["target_scale"] == SCALE
    assert meta["input_vector_slices"] == [[5, 8]] and meta["input_channels"] == 8

    small = data[0][2]
    big = np.tile(small, (2, 2, 2, 1))  # a 32^3 periodic box, predicted in one pass
    prediction = predict_box(model, big)
    assert prediction.shape == (32, 32, 32, 3)
    expected = np.tile(predict_box(model, small), (2, 2, 2, 1))
    np.testing.assert_allclose(prediction, expected, atol=1e-3)
    # The km/s model is the best checkpoint's direction times magnitude times the target scale.
    network = keras.saving.load_model(out / "best.keras", compile=False)
    raw = network.predict(small[None], verbose=0)[0]
    expected = SCALE * keras.ops.convert_to_numpy(recombine(raw[..., 3:], raw[..., :3]))
    np.testing.assert_allclose(predict_box(model, small), expected, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="Received: box.shape="):
        predict_box(model, small[:10])


class Interrupt(keras.callbacks.Callback):
    """Raises at the start of epoch `stop_at`, like a killed run."""

    def __init__(self, stop_at):
        super().__init__()
        self.stop_at = stop_at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_at:
            raise KeyboardInterrupt(f"killed at epoch {epoch}")


def test_an_interrupted_run_resumes_where_it_stopped(data, tmp_path):
    train, val = data[:2], data[2]
    args = ("density", [b[0] for b in train], [b[1] for b in train], [val[0]], [val[1]],
            tmp_path / "run")
    kwargs = dict(model_config=MODEL, size=8, batch_size=2, steps_per_epoch=2, seed=1)
    with pytest.raises(KeyboardInterrupt):
        train_halo(*args, epochs=3, callbacks=[Interrupt(2)], **kwargs)
    assert len(history(tmp_path / "run")) == 2 and not (tmp_path / "run" / "model.keras").exists()
    train_halo(*args, epochs=3, **kwargs)
    assert [r["epoch"] for r in history(tmp_path / "run")] == [0, 1, 2]
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert record["epochs_this_run"] == [2, 2]
    assert not (tmp_path / "run" / "backup").exists()


def test_unknown_stage_and_bad_sizes_raise(data, tmp_path):
    b = data[0]
    with pytest.raises(ValueError, match="Received: stage='speed'"):
        train_halo("speed", [b[0]], [b[1]], [b[0]], [b[1]], tmp_path, epochs=1, size=8)
    with pytest.raises(ValueError, match="Received: size=6"):
        train_halo("density", [b[0]], [b[1]], [b[0]], [b[1]], tmp_path, epochs=1, size=6)
    with pytest.raises(ValueError, match="output_channels=1"):
        train_halo("velocity", [b[2]], [b[1]], [b[2]], [b[1]], tmp_path, epochs=1, size=8)

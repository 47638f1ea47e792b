"""Training the Wu et al. task on real shards: the loss falls, the km/s model reloads, an interrupted run resumes."""
import importlib.util
import json

import keras
import numpy as np
import pytest
from boxes import gradient_boxes

from data_prep.make_shards import make_shards
from velnet.data.datasets import read_split_arrays
from velnet.data.manifest import read_manifest
from velnet.errors import VelnetInputError
from velnet.training.train import load_model, train, training_options

MODEL = {"preset": "tiny", "n_valid": 2}
"""The tiny U-net trimmed to the 2-cell margin of the test tiles: 8^3 inputs, 4^3 targets."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 24^3 boxes with velocity = 300 km/s x grad ln(1 + density): 144/72/72 tiles.

    The gradient is a vector field, so the mapping stays learnable under the Oh augmentation.
    """
    root = tmp_path_factory.mktemp("train")
    files = gradient_boxes(root)
    make_shards(files, root / "ds", tile=4, margin=2, fractions=(0.5, 0.25, 0.25), tiles_per_shard=50)
    return root / "ds"


def history(outdir):
    lines = (outdir / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")))) for line in lines[1:]]


class Recorder(keras.callbacks.Callback):
    """Records the epochs a fit runs; raises at `stop_at` to simulate a killed run."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.stop_at, self.epochs = stop_at, []

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_at:
            raise KeyboardInterrupt(f"killed at epoch {epoch}")
        self.epochs.append(epoch)


@pytest.mark.graph
def test_training_reduces_the_loss_and_saves_a_km_s_model(dataset, tmp_path):
    out = tmp_path / "run"
    path = train(dataset, out, MODEL, epochs=4, batch_size=8, learning_rate=1e-3, seed=3)
    rows = history(out)
    print("loss per epoch:", [round(r["loss"], 4) for r in rows], "val_loss:", [round(r["val_loss"], 4) for r in rows])
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["loss"] < 0.7 * rows[0]["loss"]
    assert min(r["val_loss"] for r in rows) < rows[0]["val_loss"]
    assert not (out / "backup").exists()
    assert (out / "logs").exists() == bool(importlib.util.find_spec("tensorboard"))

    model, meta = load_model(path)
    assert meta.target_name == "velocity"
    assert meta.tile == {"input": 8, "target": 4, "margin": 2}
    assert meta.model_config["n_valid"] == 2
    scale = meta.target_scale
    x, y, _, _ = read_split_arrays(read_manifest(dataset), "val")
    best = keras.saving.load_model(out / "best.keras")
    np.testing.assert_allclose(model.predict(x, verbose=0), scale * best.predict(x, verbose=0), rtol=1e-4, atol=1e-2)
    km_s_error = np.sqrt(np.mean((model.predict(x, verbose=0) - scale * y) ** 2))
    assert km_s_error < scale  # better than predicting zero (rms of the targets is ~ scale)

    record = json.loads((out / "train_config.json").read_text())
    assert record["seed"] == 3 and record["config"]["model"]["n_valid"] == 2
    assert record["versions"]["keras"] == keras.__version__
    assert record["final"]["loss"] == pytest.approx(rows[-1]["loss"])
    assert record["best"]["val_loss"] == pytest.approx(min(r["val_loss"] for r in rows))
    assert record["timings_s"]["wall"] > 0


@pytest.mark.graph
def test_an_interrupted_run_resumes_at_its_epoch(dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(dataset, out, MODEL, epochs=3, batch_size=8, seed=0, callbacks=[Recorder(stop_at=2)])
    assert (out / "backup").exists() and not (out / "model.keras").exists()
    assert [r["epoch"] for r in history(out)] == [0, 1]

    again = Recorder()
    train(dataset, out, MODEL, epochs=3, batch_size=8, seed=0, callbacks=[again])
    assert again.epochs == [2]
    assert [r["epoch"] for r in history(out)] == [0, 1, 2]
    assert not (out / "backup").exists() and (out / "model.keras").exists()
    assert json.loads((out / "train_config.json").read_text())["epochs_this_run"] == [2, 2]


@pytest.mark.parametrize("model_config, problem", [
    ({"preset": "tiny"}, "larger than 2 \\* n_valid"),     # 8^3 inputs cannot take 6 valid convs
    ({"preset": "tiny", "n_valid": 1}, "n_valid must equal the tile margin 2"),
    ({"preset": "tiny", "n_valid": 2, "input_shape": [16, 16, 16, 1]}, "differs from the dataset"),
    ({"preset": "wu2022"}, "Unknown preset"),
])
def test_a_model_that_does_not_fit_the_tiles_is_refused(dataset, tmp_path, model_config, problem):
    with pytest.raises(VelnetInputError, match=problem):
        train(dataset, tmp_path / "run", model_config, epochs=1)
    assert not (tmp_path / "run").exists()


def test_load_model_refuses_files_train_did_not_write(tmp_path):
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(VelnetInputError, match="no 'to_physical' layer"):
        load_model(tmp_path / "plain.keras")
    (tmp_path / "junk.keras").write_text("not a zip")
    with pytest.raises(VelnetInputError, match="not a whole .keras file"):
        load_model(tmp_path / "junk.keras")
    with pytest.raises(VelnetInputError, match="not found"):
        load_model(tmp_path / "missing.keras")


def test_a_training_config_is_checked_against_the_training_options(tmp_path, capsys):
    from velnet.cli import main

    assert training_options({"model": {"preset": "tiny"}, "epochs": 3, "batch_size": 4}) == (
        {"preset": "tiny"}, {"epochs": 3, "batch_size": 4})
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": "tiny", "epochs": 2, "learning_rte": 1e-3}))
    with pytest.raises(VelnetInputError, match=r"config.json: unknown training option\(s\) \['learning_rte'\]"):
        training_options(config)
    assert main(["train", str(tmp_path / "data"), "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "learning_rte" in capsys.readouterr().err and not (tmp_path / "run").exists()
    config.write_text("[1, 2]")
    with pytest.raises(VelnetInputError, match="config.json: a training config must hold a JSON object"):
        training_options(config)

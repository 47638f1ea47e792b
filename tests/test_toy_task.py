"""A third task is rows in the tables and a builder, and nothing else: a toy task defined here runs
prep, train, tune's search space, predict and evaluate through the command line."""
import json

import h5py
import keras
import numpy as np
import pytest
from boxes import gradient_boxes

from velnet.cli import main
from velnet.networks.builders import BUILDERS, Builder
from velnet.networks.unet3d import OUTPUT_LAYER, ToPhysical
from velnet.tasks import TASKS, Recipe, Task


def toy_net(input_shape=(8, 8, 8, 1), out_channels=3, width=4, n_valid=2, name="toy_net"):
    """n_valid 'valid' 3^3 convolutions (each trims a cell per side), then a linear 1^3 one."""
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = inputs
    for i in range(n_valid):
        x = keras.layers.Conv3D(width, 3, activation="relu", name=f"conv{i}")(x)
    return keras.Model(inputs, keras.layers.Conv3D(out_channels, 1, name="out")(x), name=name)


def toy_physical(config, network, scale, metadata):
    """The trained toy net for any input size, in km/s."""
    model = toy_net(**{**config, "input_shape": [None, None, None, config["input_shape"][-1]]})
    model.set_weights(network.get_weights())
    return keras.Model(model.inputs, ToPhysical(scale, metadata, name=OUTPUT_LAYER)(model.outputs[0]))


TOY_BUILDER = Builder(toy_net, {"toy": {"width": 4, "n_valid": 2}},
                      lambda m: {"input_shape": m.input_shape, "out_channels": m.target_shape[-1]},
                      toy_physical,
                      lambda hp, config: {"width": hp.Choice("width", [2, 4, 8], default=config["width"])},
                      lambda config: 1)
TOY_TASK = Task("toy", ("velocity",), "toy_net", "mse", periodic=False, tile=4, margin=2, preset="toy",
                laptop_preset="toy", recipe=Recipe(options=("linear",)))


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(TASKS, "toy", TOY_TASK)
    monkeypatch.setitem(BUILDERS, "toy_net", TOY_BUILDER)


def test_a_toy_task_runs_prep_train_predict_and_evaluate(toy, tmp_path, capsys):
    train_box, val_box, test_box = gradient_boxes(tmp_path, seeds=(0, 1, 2), nmesh=32, box_size=64.0)
    assert run("prep", train_box, val_box, "--task", "toy", "--split", "train", "val", "--out", tmp_path / "data") == 0
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["task"] == "toy" and manifest["input_shape"] == [8, 8, 8, 1]
    assert manifest["target_shape"] == [4, 4, 4, 3] and manifest["normalisation"]["target_units"] == "km/s"

    assert run("train", tmp_path / "data", "--epochs", 2, "--steps-per-epoch", 8, "--learning-rate", 1e-2,
               "--out", tmp_path / "run") == 0
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert record["config"]["task"] == "toy" and record["config"]["model"]["width"] == 4

    import keras_tuner

    from velnet.training.tune import VelnetHyperModel
    hp = keras_tuner.HyperParameters()
    assert VelnetHyperModel(tmp_path / "data", "toy").build(hp).name == "toy_net"
    assert set(hp.values) == {"learning_rate", "width", "batch_size"}

    assert run("predict", test_box, tmp_path / "run" / "model.keras", "--out", tmp_path / "pred.h5") == 0
    with h5py.File(tmp_path / "pred.h5") as h5:
        assert h5["velocity"].shape == (32, 32, 32, 3) and np.all(np.isfinite(h5["velocity"][...]))
        assert h5["momentum"].shape == (32, 32, 32, 3)  # formed from the velocity, as for every task

    assert run("evaluate", test_box, tmp_path / "pred.h5", "--names", "toy", "--baseline", "none",
               "--out", tmp_path / "report") == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert "toy" in (tmp_path / "report" / "report.md").read_text() and metrics["figures"]
    assert str(tmp_path / "report" / "report.md") in capsys.readouterr().out


def test_a_toy_task_refuses_what_its_recipe_does_not_take(toy, tmp_path, capsys):
    box, = gradient_boxes(tmp_path, seeds=(0,), nmesh=16, box_size=32.0)
    assert run("prep", box, "--task", "toy", "--split", "train", "--context", 4, "--out", tmp_path / "d") == 2
    assert "the toy task takes no ['context'] input option(s)" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()

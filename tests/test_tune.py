"""Hyperparameter search: the space's defaults and overrides, a search end to end, failures,
and keras-tuner's chief/worker distribution on one machine."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from boxes import gradient_boxes  # noqa: E402

from data_prep.make_shards import make_shards  # noqa: E402
from velnet.data.inputs import InputSpec  # noqa: E402
from velnet.data.manifest import read_manifest  # noqa: E402
from velnet.networks.builders import build_network  # noqa: E402
from velnet.training.train import load_model, train  # noqa: E402
from velnet.training.tune import VelnetHyperModel, tune  # noqa: E402

SMALL = {"preset": "tiny", "n_valid": 2, "widths": [16, 32, 64]}
"""The tiny layout for the 2-cell margin of the test tiles, at widths (2, 4, 8) by default."""
QUICK = dict(steps_per_epoch=3, validation_steps=2, verbose=0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Plain and linear-input shard datasets of two boxes: 8^3 inputs, 4^3 targets."""
    root = tmp_path_factory.mktemp("tune")
    files = gradient_boxes(root)
    kwargs = dict(tile=4, margin=2, fractions=(0.5, 0.25, 0.25), tiles_per_shard=50)
    make_shards(files, root / "ds", **kwargs)
    make_shards(files, root / "ds-linear", inputs=InputSpec(linear=True), **kwargs)
    return root / "ds", root / "ds-linear"


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_default_hyperparameters_give_the_default_model(datasets):
    ds, _ = datasets
    hypermodel = VelnetHyperModel(ds, SMALL)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.values == {"learning_rate": 1e-4, "width_multiplier": 0.125, "batch_size": 6}
    _, default = build_network(SMALL, read_manifest(ds))
    assert model.count_params() == default.count_params()
    assert [layer.get_config() for layer in model.layers] == [layer.get_config() for layer in default.layers]
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-4)


def test_fixed_values_override_the_defaults(datasets):
    ds, linear = datasets
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width_multiplier", 0.5)
    hp.Fixed("learning_rate", 3e-3)
    model = VelnetHyperModel(ds, SMALL).build(hp)
    assert model.get_layer("enc1_conv1_conv").filters == 8
    assert model.get_layer("bottom_conv1_conv").filters == 32
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-3)

    # A linear-input dataset adds "residual", defaulting to the preset's choice.
    plain = keras_tuner.HyperParameters()
    assert "residual_add" not in [layer.name for layer in VelnetHyperModel(linear, SMALL).build(plain).layers]
    assert plain.values["residual"] is False
    residual = keras_tuner.HyperParameters()
    VelnetHyperModel(linear, {**SMALL, "preset": "tiny-residual"}).declare_hyperparameters(residual)
    assert residual.values["residual"] is True
    hp = keras_tuner.HyperParameters()
    hp.Fixed("residual", True)
    assert "residual_add" in [layer.name for layer in VelnetHyperModel(linear, SMALL).build(hp).layers]


def test_train_boxes_keeps_the_tiles_of_the_first_boxes(datasets):
    ds, _ = datasets
    hypermodel = VelnetHyperModel(ds, SMALL, tune_boxes=True)
    hp = keras_tuner.HyperParameters()
    assert hypermodel.declare_hyperparameters(hp)["train_boxes"] == 2
    assert (hp.space[-1].min_value, hp.space[-1].max_value) == (1, 2)
    per_box = read_manifest(ds).split["per_box"]
    one = hypermodel._train_data({"batch_size": 6, "train_boxes": 1})
    assert len(one.records) == per_box[0]["train"] < sum(b["train"] for b in per_box)
    assert set(hypermodel._record_boxes) == {0, 1}


@pytest.mark.slow
def test_search_writes_the_table_and_a_best_config_that_trains(datasets, tmp_path):
    ds, _ = datasets
    out = tmp_path / "tune"
    best_path = tune(ds, out, SMALL, algorithm="random", max_trials=2, epochs=1, seed=1, **QUICK)
    rows = _rows(out / "trials.csv")
    print((out / "trials.md").read_text())
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    losses = [float(r["val_loss"]) for r in rows]
    assert losses == sorted(losses) and all(np.isfinite(losses))
    assert (out / "trials.md").read_text().count("| COMPLETED |") == 2

    best = json.loads(best_path.read_text())
    assert set(best) == {"model", "learning_rate", "batch_size"}
    assert best["learning_rate"] == pytest.approx(float(rows[0]["learning_rate"]))
    model_config = best.pop("model")
    assert model_config["width_multiplier"] == float(rows[0]["width_multiplier"])
    path = train(ds, tmp_path / "run", model_config, epochs=1, steps_per_epoch=2, validation_steps=1,
                 **best)
    _, meta = load_model(path)
    assert meta.model_config["width_multiplier"] == model_config["width_multiplier"]

    # The same config resumes its finished project (no new trials); another config gets its own.
    tune(ds, out, SMALL, algorithm="random", max_trials=2, epochs=1, seed=1, **QUICK)
    assert len(_rows(out / "trials.csv")) == 2
    assert len(list((out / "tuner").iterdir())) == 1
    tune(ds, out, SMALL, algorithm="random", max_trials=1, epochs=1, seed=1, fixed={"batch_size": 4},
         **QUICK)
    assert [r["batch_size"] for r in _rows(out / "trials.csv")] == ["4"]
    assert len(list((out / "tuner").iterdir())) == 2


def test_failed_trials_raise_after_the_table_is_written(datasets, tmp_path):
    ds, _ = datasets
    with pytest.raises(RuntimeError, match="2 of 2 trials failed"):
        tune(ds, tmp_path, SMALL, algorithm="random", max_trials=2, epochs=1, fixed={"batch_size": 0},
             **QUICK)
    rows = _rows(tmp_path / "trials.csv")
    assert [r["status"] for r in rows] == ["FAILED", "FAILED"] and all(r["error"] for r in rows)
    assert not (tmp_path / "best_config.json").exists()
    with pytest.raises(ValueError, match="Unknown hyperparameters"):
        tune(ds, tmp_path, SMALL, fixed={"dropout": 0.1})


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches_complete(datasets, tmp_path, algorithm):
    if algorithm == "bayesian":
        pytest.importorskip("sklearn", reason="BayesianOptimization needs scikit-learn (keras-tuner[bayesian])")
    ds, _ = datasets
    tune(ds, tmp_path, SMALL, algorithm=algorithm, max_trials=2, epochs=2, seed=1, **QUICK)
    rows = _rows(tmp_path / "trials.csv")
    assert rows and all(r["status"] == "COMPLETED" for r in rows)
    assert json.loads((tmp_path / "best_config.json").read_text())["model"]["preset"] == "tiny"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_chief_and_two_workers_share_one_search(datasets, tmp_path):
    ds, _ = datasets
    out = tmp_path / "tune"
    script = ("import tensorflow as tf; tf.config.run_functions_eagerly(True)\n"  # (as conftest: no traces)
              f"from velnet.training.tune import tune; print('returned', tune({str(ds)!r}, {str(out)!r}, "
              f"{SMALL!r}, algorithm='random', max_trials=3, epochs=1, seed=2, "
              f"steps_per_epoch=2, validation_steps=1, verbose=0))")
    port = str(_free_port())
    procs = []
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": port, "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, text in zip(procs, logs):
        assert p.returncode == 0, text[-3000:]
    assert f"returned {out / 'best_config.json'}" in logs[0]
    assert "returned None" in logs[1] and "returned None" in logs[2]
    rows = _rows(out / "trials.csv")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    project = next((out / "tuner").iterdir())
    assert (project / "tuner0.json").exists() and (project / "tuner1.json").exists()

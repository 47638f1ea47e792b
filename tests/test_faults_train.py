"""The fault suite, training: a run folder is never lost or mixed with another dataset, a damaged
dataset or a diverging loss stops the run with nothing saved as final, bad settings are named."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boxes import gradient_boxes

from data_prep.make_shards import make_shards
from velnet.cli import main
from velnet.errors import VelnetInputError
from velnet.training.train import train

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"preset": "tiny", "n_valid": 2}
"""The tiny U-net trimmed to the 2-cell margin of 4^3 targets: 8^3 inputs."""
QUICK = {"batch_size": 8, "steps_per_epoch": 2, "validation_steps": 1}


def run(*argv):
    return main([str(a) for a in argv])


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Two datasets of the same boxes, their tiles dealt in another order, and a finished one-epoch
    run on the first."""
    root = tmp_path_factory.mktemp("faults_train")
    files = gradient_boxes(root)
    for seed, name in enumerate(("velocity", "other")):
        make_shards(files, root / name, tile=4, margin=2, fractions=(0.5, 0.25, 0.25), tiles_per_shard=50,
                    seed=seed)
    train(root / "velocity", root / "run", MODEL, epochs=1, **QUICK)
    return root


def test_a_finished_run_is_not_trained_again_unless_asked(datasets, capsys):
    run_folder = datasets / "run"
    model = digest(run_folder / "model.keras")
    assert run("train", datasets / "velocity", "--out", run_folder, "--preset", "tiny", "--epochs", 1) == 2
    err = capsys.readouterr().err
    assert "finished run" in err and "--continue" in err and "--overwrite" in err and "Traceback" not in err
    assert digest(run_folder / "model.keras") == model
    with pytest.raises(VelnetInputError, match="finished run"):  # the library refuses too
        train(datasets / "velocity", run_folder, MODEL, epochs=3, **QUICK)
    # asked explicitly: one more epoch, after the first
    train(datasets / "velocity", run_folder, MODEL, epochs=1, extend=True, **QUICK)
    rows = (run_folder / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["0", "1"]
    record = json.loads((run_folder / "train_config.json").read_text())
    assert record["status"] == "finished" and record["epochs_this_run"] == [1, 1]


def test_a_run_of_another_dataset_is_refused_naming_both(datasets, capsys):
    run_folder = datasets / "run"
    model = digest(run_folder / "model.keras")
    assert run("train", datasets / "other", "--out", run_folder, "--epochs", 1) == 2
    err = capsys.readouterr().err
    assert str(datasets / "velocity") in err and str(datasets / "other") in err
    assert digest(run_folder / "model.keras") == model


def test_a_killed_run_does_not_resume_on_another_dataset(datasets, tmp_path):
    out, config = tmp_path / "run", tmp_path / "config.json"
    config.write_text(json.dumps({"model": MODEL, **QUICK}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "velnet.cli", "train", str(datasets / "velocity"), "--out",
                             str(out), "--config", str(config), "--epochs", "50"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not (out / "train_config.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()  # SIGKILL: no clean-up runs
    _, err = proc.communicate()
    assert (out / "train_config.json").exists(), err[-2000:]
    assert json.loads((out / "train_config.json").read_text())["status"] == "running"
    with pytest.raises(VelnetInputError, match="is a run on the dataset .*velocity, not on .*other"):
        train(datasets / "other", out, MODEL, epochs=2, **QUICK)
    assert (out / "train_config.json").exists()  # still there to resume on its own dataset


def test_a_diverging_loss_stops_the_run_with_nothing_saved(datasets, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(VelnetInputError, match="training stopped: loss = nan.*nothing was saved as final"):
        train(datasets / "velocity", out, MODEL, epochs=2, learning_rate=1e30, **{**QUICK, "steps_per_epoch": 4})
    assert not out.exists()


def test_a_damaged_shard_is_found_before_the_first_epoch(datasets, tmp_path, capsys):
    damaged = tmp_path / "data"
    damaged.mkdir()
    for path in (datasets / "velocity").iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    shard = sorted(damaged.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert run("train", damaged, "--out", tmp_path / "run", "--epochs", 1) == 2
    err = capsys.readouterr().err
    assert str(shard) in err and "sha256 differs" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, words", [
    (["--epochs", 0], "--epochs must be a whole number of at least 1"),
    (["--batch-size", 0], "--batch-size must be"),
    (["--steps-per-epoch", -1], "--steps-per-epoch must be"),
    (["--learning-rate", "nan"], "--learning-rate must be a positive number"),
])
def test_settings_that_cannot_train_are_named(datasets, tmp_path, capsys, flags, words):
    assert run("train", datasets / "velocity", "--out", tmp_path / "run", *flags) == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_dataset_and_other_outputs_are_never_a_run_folder(datasets, tmp_path, capsys):
    assert run("train", datasets / "velocity", "--out", datasets / "velocity", "--epochs", 1) == 2
    assert "is also an input" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert run("train", datasets / "velocity", "--out", tmp_path / "mine", "--epochs", 1) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]

"""Data-parallel training on two virtual CPU devices (keras.distribution.DataParallel on JAX, in a
subprocess that makes the devices; TensorFlow's MirroredStrategy is test_distribute_halo's), and on
two worker processes (MultiWorkerMirroredStrategy) against one process."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from boxes import gradient_boxes

from data_prep.make_shards import make_shards

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"preset": "tiny", "n_valid": 2, "widths": [16, 32, 64]}

SETUP = {
    "tensorflow": """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras

def replicas(model):
    return model.distribute_strategy.num_replicas_in_sync
""",
    "jax": """
import keras

def replicas(model):
    return len(model.trainable_variables[0].value.sharding.device_set)
""",
}
RUN = """
import json
from velnet.training.train import load_model, train

class Replicas(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.count = replicas(self.model)

seen = Replicas()
path = train({dataset!r}, {out!r}, {model!r}, epochs=1, batch_size={batch_size}, devices=2, callbacks=[seen])
model, _ = load_model(path)
print(json.dumps({{"replicas": seen.count, "devices": json.load(open({record!r}))["config"]["devices"],
                   "loss": json.load(open({record!r}))["final"]["loss"],
                   "device_count": len(keras.distribution.list_devices())}}))
"""
ENV = {
    "tensorflow": {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
    "jax": {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 24^3 boxes with velocity = 150 km/s x central difference of ln(1 + density), one
    for training and one for validation: 27 tiles each, so batches of 10 leave 7 over, which
    two devices cannot share."""
    root = tmp_path_factory.mktemp("distribute")
    files = gradient_boxes(root)
    make_shards(files, root / "ds", tile=8, margin=2, split=["train", "val"])
    return root / "ds"


@pytest.fixture(scope="module")
def whole_batches(tmp_path_factory):
    """Three 24^3 boxes as `dataset`'s: two for training, 54 tiles, which batches of 6 share out with
    none left over, and one for validation, 27 tiles."""
    root = tmp_path_factory.mktemp("whole_batches")
    files = gradient_boxes(root, seeds=(0, 1, 2))
    make_shards(files, root / "ds", tile=8, margin=2, split=["train", "train", "val"])
    return root / "ds"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax"])  # TensorFlow's MirroredStrategy: test_distribute_halo
def test_training_runs_data_parallel_on_two_virtual_cpus(dataset, tmp_path, backend):
    if not importlib.util.find_spec(backend):
        pytest.skip(f"{backend} is not installed (the {backend} backend case needs it)")
    out = tmp_path / "run"
    script = SETUP[backend] + RUN.format(dataset=str(dataset), out=str(out), model=MODEL, batch_size=10,
                                         record=str(out / "train_config.json"))
    env = {**os.environ, **ENV[backend], "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device_count"] == 2
    assert result["replicas"] == 2
    assert result["devices"] == ["cpu:0", "cpu:1"]
    assert np.isfinite(result["loss"])


def test_a_batch_that_does_not_divide_among_the_devices_is_refused(dataset, tmp_path, monkeypatch):
    import contextlib

    import velnet.training.train

    monkeypatch.setattr(velnet.training.train, "data_parallel", lambda devices: (contextlib.nullcontext(), ["a", "b"]))
    with pytest.raises(ValueError, match="divide among the 2 devices.*batch_size=7"):
        velnet.training.train.train(dataset, tmp_path / "run", MODEL, epochs=1, batch_size=7, devices=2)
    assert not (tmp_path / "run").exists()


def test_one_device_unless_asked_and_bad_counts_refused():
    import keras

    from velnet.training.distribute import data_parallel

    found = keras.distribution.list_devices()
    assert data_parallel(None)[1] == [] and data_parallel(1)[1] == []
    if sum(not d.startswith("cpu") for d in found) < 2:  # CPUs are never split by "auto"
        assert data_parallel("auto")[1] == []
    for devices in (0, len(found) + 1, "all", 2.0):
        with pytest.raises(ValueError, match="`devices` must be"):
            data_parallel(devices)


WORKER = """
import contextlib
import tensorflow as tf
from velnet.training.train import train
# A distributed fit starts from the dataset's second shuffle (Keras draws a batch to build the model),
# so the one-process run, on the same batches, has a strategy too: one replica.
scope = tf.distribute.MirroredStrategy(["/cpu:0"]).scope() if {one!r} else contextlib.nullcontext()
with scope:
    train({dataset!r}, {out!r}, {model!r}, epochs=2, batch_size=6, steps_per_epoch=2, validation_steps=2,
          augment=False, devices={devices!r})
"""


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def epochs(run):
    lines = (run / "history.csv").read_text().splitlines()
    return [dict(zip(lines[0].split(","), map(float, line.split(",")))) for line in lines[1:]]


@pytest.mark.slow
def test_two_workers_train_with_the_losses_of_one_process_on_the_same_batches(whole_batches, tmp_path):
    """`devices="workers"`: each of two worker processes (TF_CONFIG) takes half of every global batch of 6.

    The training split divides into whole batches: workers leave out a last, smaller batch and one
    process does not, and Keras carries a split's iterator over epochs when `steps_per_epoch` is less
    than its batches, so with `dataset`'s 27 tiles one process would train epoch 1 on the 7 left over."""
    env = {**os.environ, **ENV["tensorflow"], "PYTHONPATH": str(ROOT)}
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    workers = [subprocess.Popen(
        [sys.executable, "-c", WORKER.format(dataset=str(whole_batches), out=str(tmp_path / "workers"), model=MODEL,
                                             devices="workers", one=False)],
        env={**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})},
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    one = subprocess.run([sys.executable, "-c", WORKER.format(dataset=str(whole_batches), out=str(tmp_path / "one"),
                                                              model=MODEL, devices=None, one=True)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    run = tmp_path / "workers"
    assert len(epochs(run)) == len(epochs(tmp_path / "one")) == 2
    for mine, theirs in zip(epochs(run), epochs(tmp_path / "one")):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert mine["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-4)
    assert epochs(run)[1]["loss"] != pytest.approx(epochs(run)[0]["loss"], rel=1e-4)  # it trained
    record = json.loads((run / "train_config.json").read_text())
    assert record["config"]["devices"] == ["replica 0", "replica 1"]
    assert (run / "model.keras").is_file() and (run / "workers" / "1" / "history.csv").is_file()
    assert not (run / "workers" / "1" / "model.keras").exists()  # worker 0 alone writes the model


def test_workers_without_a_cluster_are_refused(monkeypatch):
    from velnet.training.distribute import data_parallel

    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("KERAS_DISTRIBUTION_PROCESS_ID", raising=False)
    with pytest.raises(ValueError, match="needs the cluster in"):
        data_parallel("workers")

"""A halo task trained data-parallel on two virtual CPU devices: the 2024 paper's stage two (two
U-nets, the magnitude-direction loss of eq. 6, periodic padding), as `test_distribute` does the
Wu et al. task, in a subprocess that makes the devices."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from boxes import halo_boxes
from test_distribute import ENV, ROOT, RUN, SETUP

from data_prep.make_shards import make_shards
from velnet.fields.field import load_fields
from velnet.prediction.predict import predict_file, predict_with
from velnet.training.train import train

DENSITY = {"preset": "halo-tiny", "n1": 4, "n2": 6, "n3": 8, "init_kernel": 3}
"""A halo U-net small enough for seconds per epoch."""


@pytest.fixture(scope="module")
def velocity_dataset(tmp_path_factory):
    """Stage two's shards of two 16^3 halo boxes (train, val) in 8^3 sub-boxes, with a stage-one
    density model trained for an epoch on one device; and a test box."""
    root = tmp_path_factory.mktemp("distribute_halo")
    files = halo_boxes(root, seeds=(0, 1, 2))
    make_shards(files[:2], root / "density", task="halo-density", tile=8, split=["train", "val"])
    density_model = train(root / "density", root / "m-density", DENSITY, epochs=1, batch_size=2)
    predicted = [root / f"stage-one{i}.h5" for i in range(2)]
    for box, out in zip(files[:2], predicted):
        predict_file([density_model], box, out)
    make_shards(files[:2], root / "velocity", task="halo-velocity", tile=8, split=["train", "val"],
                predictions=predicted)
    return root / "velocity", files[2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow"])  # JAX's DataParallel: test_distribute
def test_a_halo_task_trains_data_parallel_on_two_virtual_cpus(velocity_dataset, tmp_path, backend):
    if not importlib.util.find_spec(backend):
        pytest.skip(f"{backend} is not installed (the {backend} backend case needs it)")
    dataset, test_box = velocity_dataset
    out = tmp_path / "run"
    script = SETUP[backend] + RUN.format(dataset=str(dataset), out=str(out), model=DENSITY, batch_size=2,
                                         record=str(out / "train_config.json"))
    env = {**os.environ, **ENV[backend], "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2 and result["devices"] == ["cpu:0", "cpu:1"] and np.isfinite(result["loss"])
    record = json.loads((out / "train_config.json").read_text())
    assert record["config"]["task"] == "halo-velocity" and record["config"]["loss"]["name"] == "magnitude_direction"
    velocity = predict_with(out / "model.keras", load_fields(test_box))  # stage one runs too, on one device
    assert velocity.value.shape == (16, 16, 16, 3) and np.all(np.isfinite(velocity.value))

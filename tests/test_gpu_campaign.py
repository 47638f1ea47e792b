"""The GPU campaign's dry run: scripts/gpu_campaign.sh --tiny, every step on the CPU at toy sizes,
then its model brought back as velnet/pretrained holds one."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_campaign.sh"
CAMPAIGN = ROOT / "scripts" / "campaign.py"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("fastpm")
    pytest.importorskip("jax")
    root = tmp_path_factory.mktemp("campaign")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    result = subprocess.run(
        ["bash", str(SCRIPT), "--tiny", "--out", str(root / "out"), "--work", str(root / "work"),
         "--wheelhouse", "none"], env=env, capture_output=True, text=True, timeout=900)
    return root, result


@pytest.mark.slow
def test_every_step_runs_and_what_comes_back_fits(dry_run):
    root, result = dry_run
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = root / "out"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size <= 16 << 20 for f in files)
    assert {"report.md", "campaign.json", "campaign.log", "prediction-f16.h5"} <= set(files)
    state = json.loads((out / "campaign.json").read_text())
    assert all(step["status"] == "ok" for step in state["steps"].values()), state["steps"]
    assert list(state["steps"]) == ["install", "throughput", "data", "train", "export", "evaluate"]
    # throughput: the Keras row (no torch in this environment: no ratio)
    assert [r["framework"] for r in state["throughput"]["rows"]][:1] == ["keras"]
    assert state["train"]["backend"] == "jax" and state["train"]["dtype_policy"] == "mixed_bfloat16"
    assert len(state["train"]["epochs"]) == 2
    # the weights come back in several parts (256 KiB each in the dry run), their JSON beside them
    parts = state["weights"]["parts"]
    assert len(parts) >= 2 and [p["file"] for p in parts] == [f for f in files if f.startswith("weights-")]
    metrics = state["metrics"]
    assert 0 < metrics["unet"] < 2 * metrics["truth_rms"] and metrics["classical"] > 0
    assert "unet_over_classical" in metrics
    report = (out / "report.md").read_text()
    assert "U-net / classical" in report and "velnet evaluate" in report
    with h5py.File(out / "prediction-f16.h5") as h5:
        assert h5["velocity"].dtype == np.float16 and h5["velocity"].shape == (32, 32, 32, 3)


@pytest.mark.slow
def test_the_model_comes_back_into_velnet(dry_run, tmp_path):
    from velnet.fields.field import load_fields
    from velnet.prediction.predict import predict_box
    from velnet.training.train import load_model

    root, result = dry_run
    assert result.returncode == 0
    dest = tmp_path / "gpu-tiny"
    subprocess.run([sys.executable, str(CAMPAIGN), "import-model", str(root / "out"), str(dest)],
                   check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    model, metadata = load_model(dest / "velocity.keras")
    experiment = json.loads((dest / "experiment.json").read_text())
    (settings,) = experiment["variants"].values()
    assert settings["linear_input"] and metadata.input_spec.linear
    # the rebuilt model predicts the test box as the campaign's own rebuilt model did
    test = json.loads((root / "out" / "campaign.json").read_text())["data"]["test_box"]
    density = load_fields(test, ["density"])["density"]
    ours = predict_box(model, metadata, density).value
    with h5py.File(root / "out" / "prediction-f16.h5") as h5:
        theirs = h5["velocity"][...].astype(np.float32)
    assert np.sqrt(np.mean((ours - theirs) ** 2)) < 0.01 * np.std(theirs) + 0.5


@pytest.mark.slow
def test_a_corrupt_part_is_named(dry_run, tmp_path):
    root, result = dry_run
    if result.returncode != 0:
        pytest.skip("the dry run failed (see the other tests)")
    copy = tmp_path / "results"
    copy.mkdir()
    for f in (root / "out").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    part = sorted(copy.glob("weights-f16.npz.part*"))[0]
    part.write_bytes(part.read_bytes()[:-10])
    done = subprocess.run([sys.executable, str(CAMPAIGN), "import-model", str(copy), str(tmp_path / "m")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and str(copy) in done.stderr and "sha256" in done.stderr


def test_a_missing_data_pack_is_named(tmp_path):
    from_script = subprocess.run(
        [sys.executable, str(CAMPAIGN), "unpack-fields", str(tmp_path / "nope.h5"), str(tmp_path / "x.h5")],
        capture_output=True, text=True)
    assert from_script.returncode != 0 and str(tmp_path / "nope.h5") in from_script.stderr

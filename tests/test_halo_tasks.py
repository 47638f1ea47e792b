"""The 2024 halo paper's two stages through the one pipeline: `velnet prep`, `check-shards`, `train`,
`predict` and `evaluate` on halo fields files, shards verified bit for bit. Stage two's prep reads
stage one's density from the files `velnet predict` wrote; it runs no model."""
import json
import re

import keras
import numpy as np
import pytest
from boxes import halo_boxes

from data_prep.make_shards import nearest_power_of_two, verify_shards
from velnet.cli import main
from velnet.data.datasets import read_split_arrays
from velnet.data.manifest import read_manifest
from velnet.data.tiling import extract
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, load_fields, save_fields
from velnet.networks.halo_unets import recombine
from velnet.prediction.predict import predict_box, predict_with
from velnet.training.train import load_model, read_history

HALOS = [f"halos_s_{j}" for j in range(4)]
MODEL = {"model": {"preset": "halo-tiny", "n1": 4, "n2": 6, "n3": 8, "init_kernel": 3}}
"""A halo U-net small enough for seconds per epoch."""


def run(*argv):
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Synthetic halo boxes (16^3; seeds 0, 1 train, 2 validation, 3 test), both stages prepared and
    trained from the command line on 8^3 sub-boxes; stage one's density predicted on the training and
    validation boxes (stage-one{i}.h5) before stage two's prep."""
    root = tmp_path_factory.mktemp("halo_tasks")
    files = halo_boxes(root, seeds=(0, 1, 2, 3))
    (root / "model.json").write_text(json.dumps(MODEL))
    split = ["--split", "train", "train", "val", "--tile", 8]
    train = ["--config", root / "model.json", "--epochs", 3, "--batch-size", 4, "--learning-rate", 1e-2]
    assert run("prep", *files[:3], "--task", "halo-density", *split, "--out", root / "density") == 0
    assert run("train", root / "density", *train, "--out", root / "m-density") == 0
    density_model = root / "m-density" / "model.keras"
    predicted = [root / f"stage-one{i}.h5" for i in range(3)]
    for box, out in zip(files, predicted):
        assert run("predict", box, density_model, "--out", out) == 0
    assert run("prep", *files[:3], "--task", "halo-velocity", "--predicted", *predicted, *split,
               "--out", root / "velocity") == 0
    assert run("train", root / "velocity", *train, "--out", root / "m-velocity") == 0
    return root, files


def test_stage_one_shards_hold_the_halo_channels_and_the_density(stages):
    root, files = stages
    manifest = read_manifest(root / "density", verify=True)
    spec = manifest.input_spec
    assert manifest.task == "halo-density" and spec.fields == tuple(HALOS) and spec.density is None
    assert manifest.input_shape == [8, 8, 8, 4] and manifest.target_shape == [8, 8, 8, 1]
    assert manifest.input_vector_slices == [] and manifest.target_vector_slices == []
    assert manifest.tile == {"input": 8, "target": 8, "margin": 0}
    assert manifest.normalisation["target_units"] == "rho/rho_mean"
    train = [load_fields(f) for f in files[:2]]
    total = np.concatenate([sum(b[h].value for h in HALOS).ravel() for b in train]).astype(np.float64)
    assert spec.field_scale == nearest_power_of_two(total.std())
    x, y, origins, boxes = read_split_arrays(manifest, "train")
    for b, box in enumerate(train):
        sel = boxes == b
        halos = np.stack([box[h].value for h in HALOS], -1)
        np.testing.assert_array_equal(x[sel], extract(halos, origins[sel], 8) / np.float32(spec.field_scale))
        np.testing.assert_array_equal(y[sel][..., 0] * manifest.target_scale, extract(box["density"].value,
                                                                                      origins[sel], 8))
    assert verify_shards(root / "density") == {"train": 16, "val": 8}


def test_stage_two_shards_take_stage_ones_whole_box_density_and_verify_bit_for_bit(stages, tmp_path, capsys):
    root, files = stages
    manifest = read_manifest(root / "velocity")
    spec = manifest.input_spec
    assert manifest.task == "halo-velocity" and spec.density == "predicted" and spec.vector_field == "linear_velocity_s"
    assert spec.density_model == str((root / "m-density" / "model.keras").resolve())  # named by the predictions
    assert manifest.input_shape == [8, 8, 8, 8] and manifest.input_vector_slices == [[5, 8]]
    assert manifest.target_shape == [8, 8, 8, 3] and manifest.target_vector_slices == [[0, 3]]
    box = load_fields(files[2])
    x, y, origins, _ = read_split_arrays(manifest, "val")
    density = predict_with(spec.density_model, box).value  # the trained stage one, on the whole box
    np.testing.assert_array_equal(load_fields(root / "stage-one2.h5")["density"].value, density)
    np.testing.assert_array_equal(x[..., 4], extract(density, origins, 8))
    np.testing.assert_array_equal(x[..., 5:] * manifest.target_scale, extract(box["linear_velocity_s"].value,
                                                                              origins, 8))
    np.testing.assert_array_equal(y * manifest.target_scale, extract(box["velocity"].value, origins, 8))
    assert run("check-shards", root / "velocity") == 0
    assert "24 tiles" in capsys.readouterr().out

    # another stage one makes other inputs: the dataset no longer verifies
    copy = tmp_path / "velocity"
    copy.mkdir()
    for item in (root / "velocity").iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    stored = json.loads((copy / "manifest.json").read_text())
    other = load_fields(root / "stage-one2.h5")["density"]
    other = save_fields(tmp_path / "other.h5", [other.with_value(other.value * 1.01)])
    stored["provenance"]["sources"][2]["predictions"]["file"] = str(other)
    (copy / "manifest.json").write_text(json.dumps(stored))
    with pytest.raises(VelnetInputError, match="other.h5.*changed"):
        verify_shards(copy)


def test_both_stages_train_in_the_one_loop(stages):
    root, _ = stages
    for name, loss in (("density", "mean_squared_error"), ("velocity", "magnitude_direction")):
        rows = read_history(root / f"m-{name}" / "history.csv")
        assert len(rows) == 3 and min(r["loss"] for r in rows[1:]) < rows[0]["loss"]
        record = json.loads((root / f"m-{name}" / "train_config.json").read_text())
        assert record["config"]["task"] == f"halo-{name}" and record["config"]["loss"]["name"] == loss
        assert record["config"]["model"]["n1"] == 4 and record["parameters"] > 0
    _, metadata = load_model(root / "m-velocity" / "model.keras")
    assert metadata.task == "halo-velocity" and metadata.input_spec.vector_field == "linear_velocity_s"


def test_the_velocity_model_predicts_whole_periodic_boxes_in_physical_units(stages):
    root, files = stages
    model, metadata = load_model(root / "m-velocity" / "model.keras")
    box = load_fields(files[3])
    predicted = {}
    velocity = predict_box(model, metadata, box, predicted=predicted)
    assert velocity.name == "velocity" and velocity.value.shape == (16, 16, 16, 3)
    density = next(iter(predicted.values()))  # stage one ran once, on the whole box
    assert density.name == "density" and density.value.shape == (16, 16, 16)
    # the km/s model is the best checkpoint's direction times magnitude times the target scale
    network = keras.saving.load_model(root / "m-velocity" / "best.keras", compile=False)
    inputs = np.concatenate([np.stack([box[h].value / metadata.input_spec.field_scale for h in HALOS], -1),
                             density.value[..., None], box["linear_velocity_s"].value / metadata.target_scale], -1)
    raw = network.predict(inputs[None].astype(np.float32), verbose=0)[0]
    expected = metadata.target_scale * keras.ops.convert_to_numpy(recombine(raw[..., 3:],
                                                                                                raw[..., :3]))
    np.testing.assert_allclose(velocity.value, expected, rtol=1e-4, atol=1e-2)
    # periodic: a box made of 2^3 copies is predicted as 2^3 copies of the prediction
    big = {name: Field(np.tile(field.value, (2, 2, 2) + (1,) * (field.value.ndim - 3)), name, 64.0, field.redshift,
                       field.cosmology) for name, field in box.items()}
    np.testing.assert_allclose(predict_box(model, metadata, big).value, np.tile(velocity.value, (2, 2, 2, 1)),
                               rtol=1e-4, atol=1e-2)
    odd = {name: Field(field.value[:10, :10, :10], name, 20.0, field.redshift, field.cosmology)
           for name, field in box.items()}
    with pytest.raises(VelnetInputError, match="multiple of 4"):
        predict_box(model, metadata, odd)


def test_predict_and_evaluate_from_the_command_line(stages, capsys):
    root, files = stages
    assert run("predict", files[3], root / "m-velocity" / "model.keras", "--out", root / "pred.h5") == 0
    pred = load_fields(root / "pred.h5")
    assert set(pred) == {"density", "velocity", "momentum"}  # stage one's density runs and is written
    np.testing.assert_allclose(pred["momentum"].value, pred["density"].value[..., None] * pred["velocity"].value,
                               rtol=1e-6)
    assert run("evaluate", files[3], root / "pred.h5", "--report", "halo2024", "--names", "number",
               "--halo-fields", files[3], "--out", root / "report") == 0
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["schemes"] == ["number"] and set(metrics["training"]["number"]) == {"density", "velocity"}
    assert metrics["agreement"]["number"]["U-net"]["velocity"]["C_r"]["mean"] is not None
    assert "loss_curves.png" in metrics["figures"] and "xi_density.png" in metrics["figures"]
    assert "evaluate (2024 halo paper)" in capsys.readouterr().err


def test_tune_searches_a_halo_task_with_its_loss(stages, tmp_path):
    import keras_tuner

    from velnet.networks.losses import MagnitudeDirectionLoss
    from velnet.training.tune import VelnetHyperModel
    root, _ = stages
    hp = keras_tuner.HyperParameters()
    network = VelnetHyperModel(root / "velocity", MODEL["model"]).build(hp)
    # the paper's space: learning rate, widths N1-N3, dropout, batch size; and the residual over eq. 2-3's v_L
    assert set(hp.values) == {"learning_rate", "n1", "n2", "n3", "dropout", "batch_size", "residual"}
    assert {k: hp.values[k] for k in ("n1", "n2", "n3")} == {k: MODEL["model"][k] for k in ("n1", "n2", "n3")}
    assert hp.values["residual"] is False and hp.values["learning_rate"] == 1e-4
    assert network.name == "halo_velocity_unet" and isinstance(network.loss, MagnitudeDirectionLoss)
    assert run("tune", root / "density", "--preset", "halo-tiny", "--algorithm", "random", "--max-trials", 1,
               "--epochs", 1, "--fixed", json.dumps({"batch_size": 4}), "--out", tmp_path / "tune") == 0
    best = json.loads((tmp_path / "tune" / "best_config.json").read_text())
    assert best["model"]["preset"] == "halo-tiny" and best["batch_size"] == 4
    assert {"n1", "n2", "n3", "dropout"} <= set(best["model"]) and "residual_channels" not in best["model"]


@pytest.mark.parametrize("flags, message", [
    (["--task", "halo-velocity"], "velnet prep --predicted"),
    (["--task", "halo-density", "--density-model", "m.keras"], "makes the predicted density channel only"),
    (["--task", "halo-density", "--smoothing", "3"], "takes no \\['smoothing'\\]"),
    (["--task", "halo-velocity", "--linear-input"], "takes no \\['linear'\\]"),
    (["--task", "halo-density", "--margin", "2"], "margin must be 0"),
    (["--task", "halo-density", "--target", "velocity"], "predicts \\('density',\\)"),
    (["--task", "wu2021", "--target", "density"], "predicts \\('velocity', 'momentum'\\)"),
])
def test_prep_refuses_what_a_task_cannot_take(stages, tmp_path, capsys, flags, message):
    _, files = stages
    assert run("prep", files[0], "--split", "train", "--tile", 8, *flags, "--out", tmp_path / "ds") == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "ds").exists()


def test_prep_refuses_predictions_of_other_boxes_or_models(stages, tmp_path, capsys):
    root, files = stages
    predicted = [root / f"stage-one{i}.h5" for i in range(3)]
    prep = ["prep", *files[:3], "--task", "halo-velocity", "--split", "train", "train", "val", "--tile", 8]
    assert run(*prep, "--predicted", *predicted[::-1], "--out", tmp_path / "a") == 2
    assert "stage-one2.h5: holds predictions for" in capsys.readouterr().err
    assert run(*prep, "--predicted", *predicted, "--density-model", root / "m-velocity" / "model.keras",
               "--out", tmp_path / "b") == 2
    assert "was predicted by" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_stage_two_model_reads_the_density_of_a_stage_one_model_given_beside_it(stages, tmp_path):
    root, files = stages
    density, velocity = tmp_path / "density.keras", tmp_path / "velocity.keras"  # as a shipped pair
    density.write_bytes((root / "m-density" / "model.keras").read_bytes())
    velocity.write_bytes((root / "m-velocity" / "model.keras").read_bytes())
    assert run("predict", files[3], velocity, density, "--out", tmp_path / "pred.h5") == 0
    pred = load_fields(tmp_path / "pred.h5")
    assert pred["density"].attrs["model"] == str(density.resolve())  # the given stage one ran, and only it
    expected = predict_with(root / "m-velocity" / "model.keras", load_fields(files[3]))
    np.testing.assert_allclose(pred["velocity"].value, expected.value, rtol=1e-5, atol=1e-3)

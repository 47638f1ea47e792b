"""velnet.networks.builders: one config parser for both papers' builders, their losses, the model metadata."""
import json
from types import SimpleNamespace

import pytest

from velnet.data.inputs import InputSpec
from velnet.errors import VelnetInputError
from velnet.networks.builders import ModelMetadata, build_network, network_config, task_loss
from velnet.networks.losses import MagnitudeDirectionLoss
from velnet.tasks import TASKS

HALO_SPEC = InputSpec(fields=[f"halos_s_{j}" for j in range(4)], density=None, field_scale=4.0)


def manifest(task, input_shape, target_shape, spec=InputSpec(), margin=0):
    """What the parser reads of a `Manifest`."""
    return SimpleNamespace(task=task, input_shape=input_shape, target_shape=target_shape, input_spec=spec,
                           tile={"input": input_shape[0], "target": target_shape[0], "margin": margin},
                           path="ds/manifest.json")


def test_presets_and_overrides_of_both_papers_builders():
    wu = network_config("tiny", manifest("wu2021", [32, 32, 32, 1], [20, 20, 20, 3], margin=6))
    assert wu["width_multiplier"] == 0.125 and wu["input_shape"] == [32, 32, 32, 1] and wu["out_channels"] == 3
    assert network_config({}, manifest("wu2021", [32, 32, 32, 1], [20, 20, 20, 3]))["width_multiplier"] == 1.0
    halo = manifest("halo-density", [16, 16, 16, 4], [16, 16, 16, 1], HALO_SPEC)
    assert network_config({}, halo) == {"input_channels": 4, "output_channels": 1, "n1": 32, "n2": 64, "n3": 128,
                                        "dropout": 0.1, "init_kernel": 7, "residual_channels": None,
                                        "name": "halo_unet"}
    small = network_config({"preset": "halo-tiny", "n1": 4}, halo)
    assert (small["n1"], small["n2"], small["init_kernel"]) == (4, 16, 5)
    config, network = build_network({"preset": "halo-tiny", "n1": 4, "n2": 4, "n3": 4}, halo)
    assert network.name == "halo_unet" and json.loads(json.dumps(config)) == config
    velocity = manifest("halo-velocity", [16, 16, 16, 8], [16, 16, 16, 3])
    assert "output_channels" not in network_config("halo-tiny", velocity)
    assert isinstance(task_loss(TASKS["halo-velocity"]), MagnitudeDirectionLoss)
    assert task_loss(TASKS["halo-density"]).get_config()["name"] == "mean_squared_error"


@pytest.mark.parametrize("task, config, message", [
    ("halo-density", "tiny", "Unknown preset for the halo-density task"),
    ("halo-density", {"preset": "halo-tiny", "widths": [4]}, "Unknown halo_unet config keys"),
    ("halo-density", "halo-tiny-residual", "ds/manifest.json.*residual model.*no such channels.*--linear-input"),
    ("halo-density", {"input_channels": 3}, "input_channels=3 differs from the dataset's 4"),
    ("wu2021", {"preset": "tiny-residual"}, "ds/manifest.json.*residual model.*--linear-input"),
])
def test_configs_the_dataset_cannot_take_are_refused(task, config, message):
    shapes = ([16, 16, 16, 4], [16, 16, 16, 1]) if task != "wu2021" else ([32, 32, 32, 1], [20, 20, 20, 3])
    with pytest.raises(VelnetInputError, match=message):
        network_config(config, manifest(task, *shapes, HALO_SPEC if task != "wu2021" else InputSpec()))


def test_residual_presets_take_the_datasets_whole_box_estimate():
    spec = InputSpec(fields=HALO_SPEC.fields, density=None, field_scale=4.0, scalar_field="linear_density_s")
    one = manifest("halo-density", [16, 16, 16, 5], [16, 16, 16, 1], spec)
    config, network = build_network({"preset": "halo-tiny-residual", "n1": 4, "n2": 4, "n3": 4}, one)
    assert config["residual_channels"] == [4, 5] and network.get_layer("residual_add")
    two = manifest("halo-velocity", [16, 16, 16, 8], [16, 16, 16, 3],
                   InputSpec(fields=HALO_SPEC.fields, density="predicted", density_model="m.keras",
                             vector_field="linear_velocity_s", field_scale=4.0))
    assert network_config("halo2024-residual", two)["residual_channels"] == [5, 8]
    with pytest.raises(VelnetInputError, match="adds input channels \\[5, 8\\].*hold channels \\[4, 5\\]"):
        network_config({"preset": "halo-tiny", "residual_channels": [5, 8]}, one)


def test_metadata_round_trips_and_older_models_are_wu2021():
    old = {"input_name": "ln_density", "target_name": "velocity", "input_shape": [32, 32, 32, 1],
           "target_shape": [20, 20, 20, 3], "input_vector_slices": [], "target_vector_slices": [[0, 3]],
           "tile": {"input": 32, "target": 20, "margin": 6}, "normalisation": {"target_scale": 256.0},
           "cosmology": {"Omega_m": 0.31}, "box_size": 160.0, "nmesh": 80, "redshift": 0.0,
           "model_config": {"widths": [128, 256, 512]}}
    meta = ModelMetadata.from_dict(old, "model.keras")
    assert meta.task == "wu2021" and meta.input_spec == InputSpec() and meta.cell_size == 2.0
    assert meta.target_scale == 256.0
    assert ModelMetadata.from_dict(meta.to_dict()) == meta
    assert meta.to_dict() == {**old, "task": "wu2021", "input_spec": {"linear": False}}
    with pytest.raises(VelnetInputError, match="model.keras.*lacks \\['nmesh'\\]"):
        ModelMetadata.from_dict({k: v for k, v in old.items() if k != "nmesh"}, "model.keras")

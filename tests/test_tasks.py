"""velnet.tasks and the input channels of each task (velnet.data.inputs.InputSpec)."""
import numpy as np
import pytest
from boxes import halo_boxes

from velnet.data.inputs import InputSpec, box_inputs
from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields
from velnet.tasks import TASKS, get_task

HALOS = ["halos_s_0", "halos_s_1", "halos_s_2", "halos_s_3"]
FILE = ["density", "velocity", "momentum", *HALOS, "linear_velocity_s", "linear_momentum_s", "linear_density_s"]
"""The fields of a halo fields file."""


def test_each_task_names_its_network_loss_and_tiles():
    assert {name: (t.network, t.loss, t.periodic, t.margin) for name, t in TASKS.items()} == {
        "wu2021": ("unet3d", "mse", False, 6),
        "halo-density": ("halo_unet", "mse", True, 0),
        "halo-velocity": ("halo_velocity_unet", "magnitude_direction", True, 0)}
    with pytest.raises(VelnetInputError, match="manifest.json.*task must be one of"):
        get_task("halo-vorticity", "manifest.json")


def test_default_inputs_of_each_task():
    wu = TASKS["wu2021"].inputs("velocity", FILE, linear=True, smoothing=3.0, context=2)
    assert wu.channels == 5 and wu.vector_channels == [1, 4] and wu.field_names() == ["density"]
    assert wu.to_dict() == {"linear": True, "smoothing": 3.0, "context": 2}
    one = TASKS["halo-density"].inputs("density", FILE[::-1])
    assert one.fields == tuple(HALOS) and one.density is None and one.channels == 4 and one.vector_slices == []
    assert one.base_channels is None
    residual = TASKS["halo-density"].inputs("density", FILE, linear=True)
    assert residual.channels == 5 and residual.base_channels == [4, 5] and residual.vector_slices == []
    assert residual.field_names() == [*HALOS, "linear_density_s"]
    assert InputSpec.from_dict({"input_spec": residual.to_dict()}) == residual
    two = TASKS["halo-velocity"].inputs("momentum", FILE, density_model="m.keras")
    assert two.channels == 8 and two.vector_channels == [5, 8] and two.vector_field == "linear_momentum_s"
    assert two.field_names() == [*HALOS, "linear_momentum_s"]
    stored = two.to_dict()
    assert stored == {"linear": False, "fields": HALOS, "density": "model", "density_model": "m.keras",
                      "vector_field": "linear_momentum_s"}
    assert InputSpec.from_dict({"input_spec": stored}) == two


@pytest.mark.parametrize("call, message", [
    (lambda: TASKS["halo-density"].inputs("density", ["density", "velocity"]), "halos_s_0.. of a halo fields file"),
    (lambda: TASKS["halo-velocity"].inputs("velocity", FILE), "--density-model"),
    (lambda: TASKS["wu2021"].inputs("velocity", FILE, density_model="m.keras"), "input of the halo-velocity task"),
    (lambda: TASKS["halo-density"].inputs("density", FILE, context=2), "inputs of the wu2021 task"),
    (lambda: TASKS["halo-density"].check("velocity", 0), "predicts \\('density',\\)"),
    (lambda: TASKS["halo-velocity"].check("velocity", 2), "margin must be 0"),
    (lambda: InputSpec(density="model"), "density='model' with density_model"),
    (lambda: InputSpec(linear=True, vector_field="linear_velocity_s"), "one whole-box estimate"),
    (lambda: InputSpec(fields=HALOS, density=None, vector_field="v", scalar_field="d"), "one whole-box estimate"),
    (lambda: TASKS["halo-velocity"].inputs("velocity", FILE, "m.keras", linear=True), "always eq. 2-3's linear"),
    (lambda: InputSpec(fields=HALOS, density=None, linear=True), "need the ln\\(1 \\+ rho/rho_mean\\) channel"),
    (lambda: InputSpec(density=None), "no input channel"),
    (lambda: InputSpec(fields=HALOS, field_scale=0.0), "field_scale must be > 0"),
])
def test_what_a_task_or_spec_cannot_take_is_refused(call, message):
    with pytest.raises(VelnetInputError, match=message):
        call()


def test_box_inputs_of_the_halo_stages(tmp_path):
    box = load_fields(halo_boxes(tmp_path, seeds=(0,), nmesh=8)[0])
    spec = InputSpec(fields=HALOS, density="model", density_model="m.keras", vector_field="linear_velocity_s",
                     field_scale=2.0)
    predicted = np.full((8, 8, 8), 1.5, np.float32)
    x = box_inputs(box, spec, "velocity", 300.0, predicted)
    assert x.shape == (8, 8, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., :4], np.stack([box[h].value / np.float32(2.0) for h in HALOS], -1))
    np.testing.assert_array_equal(x[..., 4], predicted)
    np.testing.assert_allclose(x[..., 5:], box["linear_velocity_s"].value / 300.0, rtol=1e-6)
    with pytest.raises(VelnetInputError, match="need the fields \\['linear_velocity_s'\\]"):
        box_inputs({k: v for k, v in box.items() if k != "linear_velocity_s"}, spec, "velocity", 300.0, predicted)

    one = InputSpec(fields=HALOS, density=None, scalar_field="linear_density_s", field_scale=2.0)
    x = box_inputs(box, one, "density", 0.5)
    assert x.shape == (8, 8, 8, 5)
    np.testing.assert_array_equal(x[..., 4], box["linear_density_s"].value / np.float32(0.5))
    with pytest.raises(VelnetInputError, match="'linear_velocity_s' must be a scalar field"):
        box_inputs(box, InputSpec(fields=HALOS, density=None, scalar_field="linear_velocity_s", field_scale=2.0),
                   "density", 0.5)

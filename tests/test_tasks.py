"""velnet.tasks and the input channels of each task (velnet.data.inputs.InputSpec)."""
import numpy as np
import pytest
from boxes import halo_boxes

from velnet.data.boxes import load_box
from velnet.data.inputs import PREDICTED_DENSITY, InputSpec, box_inputs
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, load_fields, save_fields
from velnet.tasks import TARGETS, TASKS, get_target, get_task

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


def test_each_target_is_a_row_of_the_table():
    assert {name: (t.vector, t.units, t.of_velocity is not None) for name, t in TARGETS.items()} == {
        "velocity": (True, "km/s", True), "momentum": (True, "(rho/rho_mean) km/s", True),
        "density": (False, "rho/rho_mean", False)}
    with pytest.raises(VelnetInputError, match="target must be one of"):
        get_target("vorticity")


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
    two = TASKS["halo-velocity"].inputs("momentum", [*FILE, PREDICTED_DENSITY])
    assert two.channels == 8 and two.vector_channels == [5, 8] and two.vector_field == "linear_momentum_s"
    assert two.field_names() == [*HALOS, PREDICTED_DENSITY, "linear_momentum_s"]
    stored = two.to_dict()
    assert stored == {"linear": False, "fields": HALOS, "density": "predicted", "vector_field": "linear_momentum_s"}
    assert InputSpec.from_dict({"input_spec": stored}) == two
    # specs stored before stage one's density was a file's field read the same way
    legacy = InputSpec.from_dict({"input_spec": {**stored, "density": "model", "density_model": "m.keras"}})
    assert legacy.density == "predicted" and legacy.density_model == "m.keras"


@pytest.mark.parametrize("call, message", [
    (lambda: TASKS["halo-density"].inputs("density", ["density", "velocity"]), "reads the fields halos_s_0, halos_s_1"),
    (lambda: TASKS["halo-velocity"].inputs("velocity", FILE), "velnet prep --predicted"),
    (lambda: InputSpec(density_model="m.keras"), "makes the predicted density channel only"),
    (lambda: TASKS["halo-density"].inputs("density", FILE, context=2), "takes no \\['context'\\]"),
    (lambda: TASKS["halo-density"].check("velocity", 0), "predicts \\('density',\\)"),
    (lambda: TASKS["halo-velocity"].check("velocity", 2), "margin must be 0"),
    (lambda: InputSpec(density="model"), "density must be one of"),
    (lambda: InputSpec(linear=True, vector_field="linear_velocity_s"), "one whole-box estimate"),
    (lambda: InputSpec(fields=HALOS, density=None, vector_field="v", scalar_field="d"), "one whole-box estimate"),
    (lambda: TASKS["halo-velocity"].inputs("velocity", [*FILE, PREDICTED_DENSITY], linear=True),
     "takes no \\['linear'\\]"),
    (lambda: InputSpec(fields=HALOS, density=None, linear=True), "need the ln\\(1 \\+ rho/rho_mean\\) channel"),
    (lambda: InputSpec(density=None), "no input channel"),
    (lambda: InputSpec(fields=HALOS, field_scale=0.0), "field_scale must be > 0"),
])
def test_what_a_task_or_spec_cannot_take_is_refused(call, message):
    with pytest.raises(VelnetInputError, match=message):
        call()


def test_box_inputs_of_the_halo_stages(tmp_path):
    box = load_fields(halo_boxes(tmp_path, seeds=(0,), nmesh=8)[0])
    spec = InputSpec(fields=HALOS, density="predicted", vector_field="linear_velocity_s", field_scale=2.0)
    predicted = np.full((8, 8, 8), 1.5, np.float32)
    box[PREDICTED_DENSITY] = box["density"].with_value(predicted, PREDICTED_DENSITY)
    x = box_inputs(box, spec, TARGETS["velocity"], 300.0)
    assert x.shape == (8, 8, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., :4], np.stack([box[h].value / np.float32(2.0) for h in HALOS], -1))
    np.testing.assert_array_equal(x[..., 4], predicted)
    np.testing.assert_allclose(x[..., 5:], box["linear_velocity_s"].value / 300.0, rtol=1e-6)
    with pytest.raises(VelnetInputError, match="need the fields \\['linear_velocity_s'\\]"):
        box_inputs({k: v for k, v in box.items() if k != "linear_velocity_s"}, spec, TARGETS["velocity"], 300.0)

    one = InputSpec(fields=HALOS, density=None, scalar_field="linear_density_s", field_scale=2.0)
    x = box_inputs(box, one, TARGETS["density"], 0.5)
    assert x.shape == (8, 8, 8, 5)
    np.testing.assert_array_equal(x[..., 4], box["linear_density_s"].value / np.float32(0.5))
    with pytest.raises(VelnetInputError, match="'linear_velocity_s' must be a scalar field"):
        box_inputs(box, InputSpec(fields=HALOS, density=None, scalar_field="linear_velocity_s", field_scale=2.0),
                   TARGETS["density"], 0.5)


def test_a_box_reads_its_predictions_file_and_refuses_another_boxs(tmp_path):
    first, second = halo_boxes(tmp_path, seeds=(0, 1), nmesh=8)
    density = load_fields(first, ["density"])["density"]
    predictions = save_fields(tmp_path / "p.h5", [density.with_value(density.value * 2)],
                              attrs={"source": str(first.resolve())})
    box = load_box(first, ["halos_s_0", PREDICTED_DENSITY], predictions)
    assert set(box) == {"halos_s_0", PREDICTED_DENSITY} and box[PREDICTED_DENSITY].attrs["path"] == str(predictions)
    np.testing.assert_array_equal(box[PREDICTED_DENSITY].value, density.value * 2)
    with pytest.raises(VelnetInputError, match="p.h5: holds predictions for .*halos0.h5, not for .*halos1.h5"):
        load_box(second, [PREDICTED_DENSITY], predictions)
    with pytest.raises(VelnetInputError, match="fields of the box's predictions file"):
        load_box(first, ["halos_s_0", PREDICTED_DENSITY])
    other = save_fields(tmp_path / "q.h5", [Field(np.ones((4,) * 3, np.float32), "density", 32.0, 0.59,
                                                  density.cosmology)])
    with pytest.raises(VelnetInputError, match="q.h5: nmesh is 4, but the box"):
        load_box(first, [PREDICTED_DENSITY], other)

"""The power-preserving output: gains that restore the power of theta_v, their file, the CLI."""
import numpy as np
import pytest

from velnet.cli import main as velnet
from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields
from velnet.physics.classical import absolute_kedges
from velnet.physics.linear import divergence, linear_velocity
from velnet.prediction.power_correction import MIN_MODES, PowerCorrection, correction_path
from velnet.statistics.spectra import power


def run(*argv):
    return velnet([str(a) for a in argv])


def _theta(velocity):
    return velocity.with_value(divergence(velocity), "theta_v")


def test_a_uniformly_damped_field_is_restored_exactly(nonlinear_boxes):
    truth = load_fields(nonlinear_boxes[0], ["velocity"])["velocity"]
    damped = truth.with_value(0.5 * truth.value)
    correction = PowerCorrection.fit([damped], [truth])
    trusted = correction.modes >= MIN_MODES
    np.testing.assert_allclose(correction.gain[trusted], 2.0, rtol=1e-5)
    restored = correction.apply(damped)
    assert restored.attrs["output"] == "power-preserving"
    # every mode of a trusted bin is doubled back to the truth; the few-mode bins keep gain 1
    assert np.all(correction.gain[~trusted] == 1.0) and (~trusted & (correction.modes > 0)).any()
    residual = power(truth.with_value(restored.value - truth.value), kedges=correction.kedges)["power"]
    reference = power(truth, kedges=correction.kedges)["power"]
    assert np.all(residual[trusted] < 1e-9 * reference[trusted])
    kept = ~trusted & (reference > 0)
    assert kept.any()
    np.testing.assert_allclose(residual[kept], 0.25 * reference[kept], rtol=1e-5)  # still half the truth


def test_smoothed_linear_theory_gets_the_power_of_theta_back(nonlinear_boxes):
    box = load_fields(nonlinear_boxes[0], ["density", "velocity"])
    pred = linear_velocity(box["density"], 3.0)
    correction = PowerCorrection.fit([pred], [box["velocity"]])
    kedges = absolute_kedges(pred.cell_size, 64)
    before = power(_theta(pred), kedges=kedges)["power"] / power(_theta(box["velocity"]), kedges=kedges)["power"]
    after = (power(_theta(correction.apply(pred)), kedges=kedges)["power"]
             / power(_theta(box["velocity"]), kedges=kedges)["power"])
    # (beyond k = 1 the R = 3 field keeps less than 1e-4 of its power, near float32 rounding)
    trusted = (correction.modes >= MIN_MODES) & (kedges[1:] <= 1.0)
    assert np.min(before[trusted]) < 0.5  # R = 3 removes most of the small-scale power
    np.testing.assert_allclose(after[trusted], 1.0, rtol=1e-3)


def test_file_round_trip_and_refusals(tmp_path):
    correction = PowerCorrection(absolute_kedges(2.0, 8), np.linspace(1, 2, 8), 2.0, np.full(8, 100.0),
                                 {"model": "m.json"})
    path = correction.save(tmp_path / "m.power.json")
    again = PowerCorrection.load(path)
    np.testing.assert_array_equal(again.gain, correction.gain)
    assert again.attrs == correction.attrs and correction_path(tmp_path / "m.json") == path
    (tmp_path / "bad.power.json").write_text('{"format": "something else"}')
    with pytest.raises(VelnetInputError, match="bad.power.json.*not a velnet power correction"):
        PowerCorrection.load(tmp_path / "bad.power.json")
    with pytest.raises(VelnetInputError, match="none.power.json.*velnet calibrate"):
        PowerCorrection.load(tmp_path / "none.power.json")


def test_baseline_calibrate_and_predict_from_the_command_line(nonlinear_boxes, tmp_path, capsys):
    train, val, test = nonlinear_boxes
    model = tmp_path / "classical.json"
    assert run("baseline", train, "--radii", 0, 2, 4, "--out", model) == 0
    assert "linear + bernardeau + 2lpt-log" in capsys.readouterr().out
    assert run("predict", test, model, "--power-preserving", "--out", tmp_path / "pp.h5") == 2
    assert "classical.power.json" in capsys.readouterr().err
    assert run("calibrate", model, val) == 0
    assert correction_path(model).exists()
    assert run("predict", test, model, "--out", tmp_path / "mv.h5") == 0
    assert run("predict", test, model, "--power-preserving", "--out", tmp_path / "pp.h5") == 0
    mv = load_fields(tmp_path / "mv.h5")
    pp = load_fields(tmp_path / "pp.h5")
    density = load_fields(test, ["density"])["density"]
    np.testing.assert_allclose(pp["velocity"].value,
                               PowerCorrection.load(correction_path(model)).apply(mv["velocity"]).value, rtol=1e-6)
    np.testing.assert_allclose(pp["momentum"].value, density.value[..., None] * pp["velocity"].value, rtol=1e-6)
    assert pp["velocity"].attrs["output"] == "power-preserving"
    assert np.abs(pp["velocity"].value - mv["velocity"].value).max() > 1.0  # km/s

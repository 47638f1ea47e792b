"""experiments.halo_limits: the C_r bounds of a smoothed truth and of the momentum's factors."""
import json

import numpy as np
import pytest

from experiments import halo_limits
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, save_fields
from velnet.fields.mesh import smoothed
from velnet.physics.cosmology import HALO2024


def _box(path, seed, n=16, box_size=32.0):
    """A fields file with density, velocity and momentum = density x velocity."""
    rng = np.random.default_rng(seed)
    rho = np.exp(0.5 * rng.standard_normal((n,) * 3)).astype(np.float32)
    v = (300 * rng.standard_normal((n,) * 3 + (3,))).astype(np.float32)
    fields = [Field(rho, "density", box_size, 0.59, HALO2024), Field(v, "velocity", box_size, 0.59, HALO2024),
              Field(rho[..., None] * v, "momentum", box_size, 0.59, HALO2024)]
    return save_fields(path, fields)


def test_smoothing_is_exact_gaussian_on_one_mode(tmp_path):
    """A single plane wave of wavenumber k is multiplied by exp(-k^2 R^2 / 2)."""
    n, box_size, radius = 16, 32.0, 3.0
    x = np.arange(n) * box_size / n
    k = 2 * np.pi * 2 / box_size
    wave = np.broadcast_to(np.cos(k * x)[:, None, None], (n,) * 3).astype(np.float32)
    out = smoothed(Field(wave, "density", box_size, 0.59, HALO2024), radius)
    np.testing.assert_allclose(out, wave * np.exp(-0.5 * (k * radius) ** 2), atol=1e-5)


def test_bounds_fall_with_radius_and_true_factors_give_one(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    _box(tmp_path / "truth" / "seed1.h5", 1)
    _box(tmp_path / "pred" / "seed1.h5", 2)
    mean = halo_limits.run(tmp_path / "truth", tmp_path / "pred", tmp_path / "out", radii=(0.5, 2.0, 4.0))
    assert mean["negative_density"]["share"] == 0 and mean["negative_density"]["lowest"] > 0
    for name in halo_limits.FIELDS:
        c = mean["smoothed_truth"][name]
        assert c[0] > c[1] > c[2] > 0, (name, c)
    angle = mean["smoothed_truth"]["one_minus_cos_v"]
    assert 0 < angle[0] < angle[1] < angle[2] < 1
    # independent random predictions: no correlation either way
    assert abs(mean["momentum"]["predicted"]) < 0.1
    # the prediction as truth: every bound is 1
    mean = halo_limits.run(tmp_path / "truth", tmp_path / "truth", tmp_path / "self", radii=(0.5,))
    assert mean["momentum"] == pytest.approx({"predicted": 1, "true_density": 1, "true_velocity": 1})
    assert mean["negative_density"]["share"] == 0 and mean["negative_density"]["clipped_density"] == pytest.approx(1)
    record = json.loads((tmp_path / "self" / "limits.json").read_text())
    assert record["made_by"] == halo_limits.MADE_BY and "seed1" in record["boxes"]
    assert "| 0.5 |" in (tmp_path / "self" / "limits.md").read_text()


def test_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "truth").mkdir()
    _box(tmp_path / "truth" / "seed1.h5", 1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(VelnetInputError, match="not a limits folder"):
        halo_limits.run(tmp_path / "truth", tmp_path / "truth", other)
    assert (other / "notes.txt").read_text() == "mine"


def test_negative_density_cells_are_counted_and_clipped():
    n, box_size = 8, 16.0
    rho = np.ones((n,) * 3, np.float32)
    rho[0, 0, :2] = [-2.0, -0.5]
    v = np.full((n,) * 3 + (3,), 100.0, np.float32)
    pred = {"density": Field(rho, "density", box_size, 0.59, HALO2024),
            "velocity": Field(v, "velocity", box_size, 0.59, HALO2024),
            "momentum": Field(rho[..., None] * v, "momentum", box_size, 0.59, HALO2024)}
    truth = {**pred, "density": Field(np.maximum(rho, 0), "density", box_size, 0.59, HALO2024)}
    truth["momentum"] = Field(truth["density"].value[..., None] * v, "momentum", box_size, 0.59, HALO2024)
    out = halo_limits.box_limits(truth, pred, radii=(1.0,))["negative_density"]
    assert out["share"] == pytest.approx(2 / n**3) and out["lowest"] == -2.0
    assert out["clipped_density"] == pytest.approx(1) and out["density"] < 1


def test_each_true_factor_is_the_one_named(tmp_path):
    """A prediction with the true velocity and a wrong density: the true density times the predicted velocity
    ("true_density") is the true momentum; the predicted density times the true velocity is not."""
    n, box_size = 8, 16.0
    rng = np.random.default_rng(3)
    rho = np.exp(0.5 * rng.standard_normal((n,) * 3)).astype(np.float32)
    v = (300 * rng.standard_normal((n,) * 3 + (3,))).astype(np.float32)
    wrong = np.exp(0.5 * rng.standard_normal((n,) * 3)).astype(np.float32)
    f = lambda value, name: Field(value, name, box_size, 0.59, HALO2024)  # noqa: E731
    truth = {"density": f(rho, "density"), "velocity": f(v, "velocity"), "momentum": f(rho[..., None] * v, "momentum")}
    pred = {"density": f(wrong, "density"), "velocity": f(v, "velocity"),
            "momentum": f(wrong[..., None] * v, "momentum")}
    out = halo_limits.box_limits(truth, pred, radii=(1.0,))["momentum"]
    assert out["true_velocity"] < 0.9 and out["true_density"] == pytest.approx(1)


def test_a_missing_truth_or_constant_field_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    _box(tmp_path / "pred" / "seed1.h5", 1)
    with pytest.raises(SystemExit, match="seed1.h5"):
        halo_limits.main(["--fields", str(tmp_path / "truth"), "--predictions", str(tmp_path / "pred"),
                          "--out", str(tmp_path / "out")])
    n = 16
    flat = [Field(np.ones((n,) * 3, np.float32), "density", 32.0, 0.59, HALO2024),
            Field(np.ones((n,) * 3 + (3,), np.float32), "velocity", 32.0, 0.59, HALO2024),
            Field(np.ones((n,) * 3 + (3,), np.float32), "momentum", 32.0, 0.59, HALO2024)]
    save_fields(tmp_path / "truth" / "seed1.h5", flat)
    with pytest.raises(VelnetInputError, match="non-finite"):
        halo_limits.run(tmp_path / "truth", tmp_path / "pred", tmp_path / "out")
    assert not (tmp_path / "out").exists()

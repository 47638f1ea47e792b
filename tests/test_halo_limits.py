"""experiments.halo_limits: the C_r bounds of a smoothed truth and of the momentum's factors."""
import json

import numpy as np
import pytest

from experiments import halo_limits
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, save_fields
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
    out = halo_limits.smoothed(Field(wave, "density", box_size, 0.59, HALO2024), radius)
    np.testing.assert_allclose(out, wave * np.exp(-0.5 * (k * radius) ** 2), atol=1e-5)


def test_bounds_fall_with_radius_and_true_factors_give_one(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    _box(tmp_path / "truth" / "seed1.h5", 1)
    _box(tmp_path / "pred" / "seed1.h5", 2)
    mean = halo_limits.run(tmp_path / "truth", tmp_path / "pred", tmp_path / "out", radii=(0.5, 2.0, 4.0))
    for name in halo_limits.FIELDS:
        c = mean["smoothed_truth"][name]
        assert c[0] > c[1] > c[2] > 0, (name, c)
    # independent random predictions: no correlation either way
    assert abs(mean["momentum"]["predicted"]) < 0.1
    # the prediction as truth: every bound is 1
    mean = halo_limits.run(tmp_path / "truth", tmp_path / "truth", tmp_path / "self", radii=(0.5,))
    assert mean["momentum"] == pytest.approx({"predicted": 1, "true_density": 1, "true_velocity": 1})
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

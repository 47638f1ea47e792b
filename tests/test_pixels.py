"""velnet.statistics.pixels: per-cell statistics of both papers (eq. 2-9 of Wu et al., eq. 10 of the 2024 paper),
slices."""
import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field
from velnet.physics.cosmology import WU2021
from velnet.physics.linear import linear_momentum
from velnet.statistics import pixels

N, BOX = 64, 128.0


def _field(value, name="x", box=BOX):
    return Field(np.asarray(value, dtype=np.float32), name, box, 0.0, WU2021)


def test_pixel_statistics_on_a_hand_computed_case():
    # 2^3 cells: truth (3, 4, 0) everywhere; the prediction is right in half the cells and
    # reversed in the other half; density 1 in the right half and 3 in the reversed half.
    truth = np.zeros((2, 2, 2, 3))
    truth[...] = (3.0, 4.0, 0.0)
    pred = truth.copy()
    pred[1] *= -1
    density = np.ones((2, 2, 2))
    density[1] = 3.0
    d, p, t = _field(density, "density"), _field(pred, "velocity"), _field(truth, "velocity")
    out = pixels.pixel_statistics(p, linear_momentum(d, p), t)
    assert out["abs_v"] == pytest.approx({"mean": 5.0, "std": 0.0})
    assert out["abs_v_residual"] == pytest.approx({"mean": 5.0, "std": 5.0})
    assert out["abs_cos_theta"] == pytest.approx({"mean": 1.0, "std": 0.0})
    assert out["cos_theta"] == pytest.approx({"mean": 0.0, "std": 1.0})
    assert out["abs_p"] == pytest.approx({"mean": 10.0, "std": 5.0})  # |p| = |v| (1 + delta): 5 and 15
    region = pixels.Slab((1, 0, 0), (1, 2, 2), 3.0, 1.0).index(2)
    assert pixels.pixel_statistics(p, linear_momentum(d, p), t, region)["abs_v_residual"]["mean"] == 10.0
    # momentum residual: 0 where right, |2 x 3 x (3, 4, 0)| = 30 where reversed
    both = pixels.pixel_statistics(p, linear_momentum(d, p), t, truth_momentum=linear_momentum(d, t))
    assert both["abs_p_residual"] == pytest.approx({"mean": 15.0, "std": 15.0})
    assert "abs_p_residual" not in out


def test_derived_fields_are_speed_divergence_momentum_and_curl():
    rng = np.random.default_rng(14)
    v = _field(rng.normal(0, 100, (16, 16, 16, 3)), "velocity", box=32.0)
    d = _field(np.exp(rng.normal(0, 0.5, (16, 16, 16))), "density", box=32.0)
    out = pixels.derived_fields(v, linear_momentum(d, v))
    assert set(out) == set(pixels.QUANTITIES)
    np.testing.assert_allclose(out["p"].value, np.linalg.norm(v.value, axis=-1) * d.value, rtol=1e-5)
    assert out["curl_p"].is_vector and not out["theta_v"].is_vector


def test_densest_slabs_are_found_in_order_and_do_not_overlap():
    # 2 Mpc/h cells: a slab is 20 x 20 x 1 cells
    density = np.ones((N, N, N))
    density[5:25, 5:25, 10] = 10.0  # densest
    density[10:30, 10:30, 30] = 8.0  # overlaps the first in x-y at another z: must be skipped
    density[40:60, 40:60, 40] = 5.0
    density[5:25, 42:62, 20] = 3.0
    slabs = pixels.densest_slabs(_field(density, "density"))
    assert [s.start for s in slabs] == [(5, 5, 10), (40, 40, 40), (5, 42, 20)]
    assert [s.mean_density for s in slabs] == pytest.approx([10.0, 5.0, 3.0])
    assert slabs[0].shape == (20, 20, 1) and slabs[0].to_dict()["size_mpc_h"] == [40.0, 40.0, 2.0]


def test_slab_windows_wrap_around_the_box():
    density = np.ones((N, N, N))
    density[-5:, :15, 3] = 4.0
    density[:15, -5:, 3] = 4.0  # same window seen across the corner: wraps in x and y
    density[:15, :15, 3] = 4.0
    density[-5:, -5:, 3] = 4.0
    slab = pixels.densest_slabs(_field(density, "density"), count=1)[0]
    assert slab.start == (N - 5, N - 5, 3) and slab.mean_density == pytest.approx(4.0)
    cut = density[slab.index(N)]
    assert cut.shape == (20, 20, 1) and np.all(cut == 4.0)


def test_too_many_slabs_are_refused():
    with pytest.raises(VelnetInputError, match="fewer than 50"):
        pixels.densest_slabs(_field(np.ones((N, N, N)), "density"), count=50)
    with pytest.raises(VelnetInputError, match="does not fit"):
        pixels.densest_slabs(_field(np.ones((8, 8, 8)), "density", box=16.0))


def test_agreement_is_ideal_for_the_truth_and_sees_scale_and_sign():
    truth = np.random.default_rng(0).normal(2.0, 1.0, (8, 8, 8, 3))
    same = pixels.agreement(truth, truth)
    assert same["C_r"] == pytest.approx(1.0, abs=1e-12)
    assert same["R_std"] == pytest.approx(0.0, abs=1e-12) and same["R_mean"] == pytest.approx(0.0, abs=1e-12)
    doubled = pixels.agreement(2 * truth, truth)
    assert doubled["C_r"] == pytest.approx(1.0) and doubled["R_std"] == pytest.approx(1.0)
    assert pixels.agreement(-truth, truth)["C_r"] == pytest.approx(-1.0)
    other = pixels.agreement(np.random.default_rng(1).normal(2.0, 1.0, truth.shape), truth)
    assert abs(other["C_r"]) < 0.05
    with pytest.raises(VelnetInputError, match="differ in shape"):
        pixels.agreement(truth[..., 0], truth)


def test_magnitude_cosine_and_pooled_mean_std():
    a = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    assert pixels.magnitude(a).tolist() == [5.0, 0.0]
    cos = pixels.cosine(a, np.array([[6.0, 8.0, 0.0], [1.0, 0.0, 0.0]]))
    assert cos[0] == pytest.approx(1.0) and np.isnan(cos[1])
    pooled = pixels.mean_std(np.array([1.0, np.nan]), np.array([[3.0]]))
    assert pooled == {"mean": 2.0, "std": 1.0}

"""Power spectra (nbodykit FFTPower), error spectra, pixel statistics, sub-boxes and slices."""
import numpy as np
import pytest

from velnet.cosmology import WU2021
from velnet.errors import VelnetInputError
from velnet.fields import Field
from velnet.linear import linear_momentum

pytest.importorskip("nbodykit")
from velnet import stats  # noqa: E402

N, BOX = 64, 128.0
KF = 2 * np.pi / BOX
SIGMAS = 5.0  # a per-bin deviation beyond this many standard errors fails a test


def _field(value, name="x", box=BOX):
    return Field(np.asarray(value, dtype=np.float32), name, box, 0.0, WU2021)


def _noise(seed, shape=(N, N, N), sigma=1.0, name="x"):
    return _field(np.random.default_rng(seed).normal(0, sigma, shape), name)


def _plane_wave(m, amp, phase=0.0):
    """amp cos(2 pi m x / L + phase) along axis 0, with k = m k_f."""
    x = np.arange(N) * BOX / N
    return amp * np.cos(m * KF * x + phase)[:, None, None] * np.ones((N, N, N))


def test_white_noise_has_a_flat_spectrum():
    sigma = 3.0
    p = stats.power(_noise(0, sigma=sigma))
    expected = sigma**2 * BOX**3 / N**3  # P = sigma^2 V / N^3 for uncorrelated cells
    # each bin averages modes/2 independent |delta_k|^2 (exponential), so its relative error is sqrt(2/modes)
    pull = (p["power"] / expected - 1) / np.sqrt(2 / p["modes"])
    assert np.all(np.abs(pull) < SIGMAS)
    assert np.mean(pull**2) < 1.5
    assert np.sum(p["power"] * p["modes"]) / np.sum(p["modes"]) == pytest.approx(expected, rel=0.01)


def test_default_bins_are_fftpower_own_bins():
    from nbodykit.algorithms.fftpower import FFTPower
    from nbodykit.source.mesh.array import ArrayMesh

    f = _noise(1)
    ours = stats.power(f)
    ref = FFTPower(ArrayMesh(f.value.astype("f8"), BoxSize=BOX), mode="1d", dk=KF, kmin=KF / 2).power
    n = len(ref["k"])
    np.testing.assert_allclose(ours["power"][:n], ref["power"].real, rtol=1e-12)
    np.testing.assert_array_equal(ours["modes"][:n], ref["modes"])
    np.testing.assert_allclose(ours["k_lo"], KF * np.arange(0.5, N // 2), rtol=1e-12)
    # bins are centred on multiples of k_f (the lowest hold few, unevenly spread |k|)
    np.testing.assert_allclose(ours["k"][4:], KF * np.arange(5, N // 2 + 1), rtol=0.03)


def test_irregular_edges_agree_with_nested_edges():
    # [0, .05, .1, .2] is served from FFTPower bins of width 0.05; nudging the last edge by
    # 1e-7 (no mode lies in between) forces the dk=0 route: both must agree.
    f = _noise(2)
    nested = stats.power(f, kedges=[0.0, 0.05, 0.1, 0.2])
    fine = stats.power(f, kedges=[0.0, 0.05, 0.1, 0.2 + 1e-7])
    np.testing.assert_array_equal(nested["modes"], fine["modes"])
    np.testing.assert_allclose(nested["power"], fine["power"], rtol=1e-12)


def test_cross_power_with_itself_is_the_auto_power():
    v = _noise(3, shape=(N, N, N, 3), name="velocity")
    np.testing.assert_allclose(stats.power(v, v)["power"], stats.power(v)["power"], rtol=1e-12)


def test_vector_power_is_the_sum_of_its_components():
    v = _noise(4, shape=(N, N, N, 3), name="velocity")
    parts = sum(stats.power(_field(v.value[..., i]))["power"] for i in range(3))
    np.testing.assert_allclose(stats.power(v)["power"], parts, rtol=1e-12)


def test_identical_fields_have_unit_transfer_and_correlation():
    f = _noise(5)
    res = stats.compare_spectra(f, f)
    np.testing.assert_allclose(res["T"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(res["r"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(stats.transfer(_field(2 * f.value), f)["T"], 4.0, rtol=1e-6)


def test_independent_fields_are_uncorrelated():
    res = stats.correlation(_noise(6), _noise(7))
    assert np.all(np.abs(res["r"]) < SIGMAS * np.sqrt(2 / res["modes"]))
    assert abs(np.sum(res["r"] * res["modes"]) / np.sum(res["modes"])) < 0.01


def test_error_spectrum_puts_each_plane_wave_in_its_band():
    # one wave per band (k = m k_f, k_f = 0.049 h/Mpc), amplitudes chosen per band, in v_x only
    waves = {1: 10.0, 2: 20.0, 3: 30.0, 6: 40.0, 12: 50.0, 24: 60.0}
    error = sum(_plane_wave(m, amp, phase=0.3 * m) for m, amp in waves.items())
    rng = np.random.default_rng(8)
    truth = _field(rng.normal(0, 100, (N, N, N, 3)), "velocity")
    pred_value = truth.value.copy()
    pred_value[..., 0] += error
    res = stats.error_spectrum(_field(pred_value, "velocity"), truth)
    # a cosine of amplitude A has variance A^2 / 2; one of three components carries it
    expected = np.sqrt(np.array(list(waves.values())) ** 2 / 2 / 3)
    np.testing.assert_allclose(res["rms_error"], expected, rtol=1e-4)
    assert res.attrs["rms_error_all"] == pytest.approx(np.sqrt(np.sum(expected**2)), rel=1e-4)
    # truth: white noise of 100 km/s per component shares its variance out by mode count
    ratio = res["rms_truth"] ** 2 / (100**2 * res["modes"] / N**3)
    many = res["modes"] > 100
    assert np.all(np.abs(ratio[many] - 1) < SIGMAS * np.sqrt(2 / res["modes"][many]))


def test_band_variances_add_up_to_the_variance_parseval():
    v = _noise(9, shape=(N, N, N, 3), sigma=50.0, name="velocity")
    corner = np.sqrt(3) * np.pi * N / BOX
    bands = stats.band_variance(v, edges=list(stats.ERROR_BANDS) + [corner * 1.01])
    per_component = np.mean(np.var(v.value.astype(np.float64).reshape(-1, 3), axis=0))
    assert np.sum(bands["variance"]) == pytest.approx(per_component, rel=1e-10)
    assert np.sum(bands["modes"]) == N**3


def test_statistic_round_trips_through_json(tmp_path):
    stat = stats.compare_spectra(_noise(10), _noise(11))
    path = stat.save(tmp_path / "spec.json")
    back = stats.Statistic.load(path)
    assert back.attrs == stat.attrs
    for name in stat.columns:
        np.testing.assert_array_equal(back[name], stat[name])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VelnetInputError, match="bad.json"):
        stats.Statistic.load(tmp_path / "bad.json")
    with pytest.raises(VelnetInputError, match="not found"):
        stats.Statistic.load(tmp_path / "missing.json")


def test_mismatched_fields_are_refused():
    with pytest.raises(VelnetInputError, match="does not match"):
        stats.power(_noise(12), _noise(13, shape=(32, 32, 32)))


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
    out = stats.pixel_statistics(p, linear_momentum(d, p), t)
    assert out["abs_v"] == pytest.approx({"mean": 5.0, "std": 0.0})
    assert out["abs_v_residual"] == pytest.approx({"mean": 5.0, "std": 5.0})
    assert out["abs_cos_theta"] == pytest.approx({"mean": 1.0, "std": 0.0})
    assert out["cos_theta"] == pytest.approx({"mean": 0.0, "std": 1.0})
    assert out["abs_p"] == pytest.approx({"mean": 10.0, "std": 5.0})  # |p| = |v| (1 + delta): 5 and 15
    region = stats.Slab((1, 0, 0), (1, 2, 2), 3.0, 1.0).index(2)
    assert stats.pixel_statistics(p, linear_momentum(d, p), t, region)["abs_v_residual"]["mean"] == 10.0
    # momentum residual: 0 where right, |2 x 3 x (3, 4, 0)| = 30 where reversed
    both = stats.pixel_statistics(p, linear_momentum(d, p), t, truth_momentum=linear_momentum(d, t))
    assert both["abs_p_residual"] == pytest.approx({"mean": 15.0, "std": 15.0})
    assert "abs_p_residual" not in out


def test_derived_fields_are_speed_divergence_momentum_and_curl():
    rng = np.random.default_rng(14)
    v = _field(rng.normal(0, 100, (16, 16, 16, 3)), "velocity", box=32.0)
    d = _field(np.exp(rng.normal(0, 0.5, (16, 16, 16))), "density", box=32.0)
    out = stats.derived_fields(v, linear_momentum(d, v))
    assert set(out) == set(stats.QUANTITIES)
    np.testing.assert_allclose(out["p"].value, np.linalg.norm(v.value, axis=-1) * d.value, rtol=1e-5)
    assert out["curl_p"].is_vector and not out["theta_v"].is_vector


def test_sub_boxes_of_nearest_whole_cells():
    f = _noise(15)  # 64 cells of 2 Mpc/h
    subs = stats.split_subboxes(f, size=61.0)  # 30.5 cells -> 30 (60 Mpc/h), 2 per side
    assert len(subs) == 8 and subs[0].box_size == 60.0 and subs[0].nmesh == 30
    assert subs[-1].attrs["origin"] == [30, 30, 30]
    np.testing.assert_array_equal(subs[-1].value, f.value[30:60, 30:60, 30:60])
    res = stats.subbox_transfer({"same": f, "double": _field(2 * f.value)}, f, size=61.0)
    np.testing.assert_allclose(res["same"]["T_mean"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(res["same"]["T_std"], 0.0, atol=1e-12)
    np.testing.assert_allclose(res["double"]["T_mean"], 4.0, rtol=1e-6)
    assert res["double"]["T_each"].shape == (len(res["double"]["k"]), 8)
    assert res["double"].attrs["n_sub"] == 8 and "periodic" in res["double"].attrs["note"]


def test_densest_slabs_are_found_in_order_and_do_not_overlap():
    # 2 Mpc/h cells: a slab is 20 x 20 x 1 cells
    density = np.ones((N, N, N))
    density[5:25, 5:25, 10] = 10.0  # densest
    density[10:30, 10:30, 30] = 8.0  # overlaps the first in x-y at another z: must be skipped
    density[40:60, 40:60, 40] = 5.0
    density[5:25, 42:62, 20] = 3.0
    slabs = stats.densest_slabs(_field(density, "density"))
    assert [s.start for s in slabs] == [(5, 5, 10), (40, 40, 40), (5, 42, 20)]
    assert [s.mean_density for s in slabs] == pytest.approx([10.0, 5.0, 3.0])
    assert slabs[0].shape == (20, 20, 1) and slabs[0].to_dict()["size_mpc_h"] == [40.0, 40.0, 2.0]


def test_slab_windows_wrap_around_the_box():
    density = np.ones((N, N, N))
    density[-5:, :15, 3] = 4.0
    density[:15, -5:, 3] = 4.0  # same window seen across the corner: wraps in x and y
    density[:15, :15, 3] = 4.0
    density[-5:, -5:, 3] = 4.0
    slab = stats.densest_slabs(_field(density, "density"), count=1)[0]
    assert slab.start == (N - 5, N - 5, 3) and slab.mean_density == pytest.approx(4.0)
    cut = density[slab.index(N)]
    assert cut.shape == (20, 20, 1) and np.all(cut == 4.0)


def test_too_many_slabs_are_refused():
    with pytest.raises(VelnetInputError, match="fewer than 50"):
        stats.densest_slabs(_field(np.ones((N, N, N)), "density"), count=50)
    with pytest.raises(VelnetInputError, match="does not fit"):
        stats.densest_slabs(_field(np.ones((8, 8, 8)), "density", box=16.0))

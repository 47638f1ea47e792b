"""Power spectra (nbodykit FFTPower), error spectra, sub-boxes, multipoles and the error of eq. 11."""
import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field
from velnet.physics.cosmology import WU2021

pytest.importorskip("nbodykit")
from boxes import gaussian  # noqa: E402

from velnet.statistics import spectra, subboxes  # noqa: E402
from velnet.statistics.statistic import Statistic  # noqa: E402

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
    p = spectra.power(_noise(0, sigma=sigma))
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
    ours = spectra.power(f)
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
    nested = spectra.power(f, kedges=[0.0, 0.05, 0.1, 0.2])
    fine = spectra.power(f, kedges=[0.0, 0.05, 0.1, 0.2 + 1e-7])
    np.testing.assert_array_equal(nested["modes"], fine["modes"])
    np.testing.assert_allclose(nested["power"], fine["power"], rtol=1e-12)


def test_cross_power_with_itself_is_the_auto_power():
    v = _noise(3, shape=(N, N, N, 3), name="velocity")
    np.testing.assert_allclose(spectra.power(v, v)["power"], spectra.power(v)["power"], rtol=1e-12)


def test_vector_power_is_the_sum_of_its_components():
    v = _noise(4, shape=(N, N, N, 3), name="velocity")
    parts = sum(spectra.power(_field(v.value[..., i]))["power"] for i in range(3))
    np.testing.assert_allclose(spectra.power(v)["power"], parts, rtol=1e-12)


def test_identical_fields_have_unit_transfer_and_correlation():
    f = _noise(5)
    res = spectra.compare_spectra(f, f)
    np.testing.assert_allclose(res["T"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(res["r"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(spectra.transfer(_field(2 * f.value), f)["T"], 4.0, rtol=1e-6)


def test_independent_fields_are_uncorrelated():
    res = spectra.correlation(_noise(6), _noise(7))
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
    res = spectra.error_spectrum(_field(pred_value, "velocity"), truth)
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
    bands = spectra.band_variance(v, edges=list(spectra.ERROR_BANDS) + [corner * 1.01])
    per_component = np.mean(np.var(v.value.astype(np.float64).reshape(-1, 3), axis=0))
    assert np.sum(bands["variance"]) == pytest.approx(per_component, rel=1e-10)
    assert np.sum(bands["modes"]) == N**3


def test_statistic_round_trips_through_json(tmp_path):
    stat = spectra.compare_spectra(_noise(10), _noise(11))
    path = stat.save(tmp_path / "spec.json")
    back = Statistic.load(path)
    assert back.attrs == stat.attrs
    for name in stat.columns:
        np.testing.assert_array_equal(back[name], stat[name])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(VelnetInputError, match="bad.json"):
        Statistic.load(tmp_path / "bad.json")
    with pytest.raises(VelnetInputError, match="not found"):
        Statistic.load(tmp_path / "missing.json")


def test_mismatched_fields_are_refused():
    with pytest.raises(VelnetInputError, match="does not match"):
        spectra.power(_noise(12), _noise(13, shape=(32, 32, 32)))


def test_sub_boxes_of_nearest_whole_cells():
    f = _noise(15)  # 64 cells of 2 Mpc/h
    subs = subboxes.split_subboxes(f, size=61.0)  # 30.5 cells -> 30 (60 Mpc/h), 2 per side
    assert len(subs) == 8 and subs[0].box_size == 60.0 and subs[0].nmesh == 30
    assert subs[-1].attrs["origin"] == [30, 30, 30]
    np.testing.assert_array_equal(subs[-1].value, f.value[30:60, 30:60, 30:60])
    res = subboxes.subbox_transfer({"same": f, "double": _field(2 * f.value)}, f, size=61.0)
    np.testing.assert_allclose(res["same"]["T_mean"], 1.0, rtol=1e-12)
    np.testing.assert_allclose(res["same"]["T_std"], 0.0, atol=1e-12)
    np.testing.assert_allclose(res["double"]["T_mean"], 4.0, rtol=1e-6)
    assert res["double"]["T_each"].shape == (len(res["double"]["k"]), 8)
    assert res["double"].attrs["n_sub"] == 8 and "periodic" in res["double"].attrs["note"]


def test_quadrupole_vanishes_for_an_isotropic_field_and_matches_kaiser():
    n, box = 48, 96.0
    value, k2, kz = gaussian(n, 4, box=box)
    iso = spectra.multipoles(_field(1 + 0.1 * value, box=box), "z")
    p0, p2, p4, modes = iso["power_0"], iso["power_2"], iso["power_4"], iso["modes"]
    # Gaussian error of P_ell: sqrt((2 ell + 1) / (N_modes / 2)) P_0 (modes come in +-k pairs)
    for p, ell in ((p2, 2), (p4, 4)):
        pulls = p / (np.sqrt((2 * ell + 1) / (modes / 2)) * p0)
        assert np.abs(pulls).max() < 5 and abs(pulls.mean()) < 4 / np.sqrt(len(pulls))
    # Kaiser: delta(k) (1 + beta mu^2) gives P_2 / P_0 = (4 beta / 3 + 4 beta^2 / 7) / (1 + 2 beta / 3 + beta^2 / 5).
    beta = 0.5
    mu2 = np.where(k2 > 0, kz[None, None, :] ** 2 / np.where(k2 > 0, k2, 1), 0)
    squashed = np.fft.irfftn(np.fft.rfftn(value) * (1 + beta * mu2), s=(n,) * 3, axes=(0, 1, 2))
    rsd = spectra.multipoles(_field(1 + 0.1 * squashed, box=box), 2)
    ratio = np.sum(rsd["power_2"] * rsd["modes"]) / np.sum(rsd["power_0"] * rsd["modes"])
    kaiser = (4 * beta / 3 + 4 * beta ** 2 / 7) / (1 + 2 * beta / 3 + beta ** 2 / 5)
    assert ratio == pytest.approx(kaiser, rel=0.03)
    assert spectra.multipoles(_field(1 + 0.1 * squashed, box=box), "x")["power_2"].mean() < 0.5 * rsd["power_2"].mean()
    with pytest.raises(VelnetInputError, match="scalar"):
        spectra.multipoles(_field(np.zeros((8, 8, 8, 3)), "velocity"), "z")


def test_eq_11_rescales_the_spread_by_the_independent_volume():
    # the paper: 25 boxes of 600 Mpc/h cut from 1200 x 1200 x 600 (Mpc/h)^3: a factor 0.4
    error, factor = spectra.box_error(np.array([1.0, 2.0]), 600.0 ** 3, 25, 1200.0 * 1200.0 * 600.0)
    assert factor == pytest.approx(0.4) and error == pytest.approx([0.4, 0.8])
    assert spectra.box_error(3.0, 100.0 ** 3, 4)[1] == 1.0  # separate simulations
    with pytest.raises(VelnetInputError, match="independent volume"):
        spectra.box_error(1.0, 100.0 ** 3, 2, 3 * 100.0 ** 3)

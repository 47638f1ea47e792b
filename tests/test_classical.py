"""Classical estimators: each formula on an analytic case, the per-k fit, its file, and real boxes."""
import json

import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, load_fields
from velnet.physics.classical import ClassicalEstimator, absolute_kedges, estimator_velocity
from velnet.physics.cosmology import WU2021
from velnet.physics.linear import growth_velocity_factor, linear_velocity

N, BOX, Z = 32, 64.0, 0.5
EXACT = 1e-5  # relative tolerance of float32 results in exact cases


def _density(rho, box=BOX):
    return Field(np.asarray(rho, np.float32), "density", box, Z, WU2021)


def _coordinates(n=N, box=BOX):
    x = np.arange(n) * box / n
    return np.meshgrid(x, x, x, indexing="ij")


def _relative_error(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _lognormal(seed, n=N, sigma=0.6):
    """A positive random density with mean about 1."""
    rng = np.random.default_rng(seed)
    g = np.fft.irfftn(np.fft.rfftn(rng.standard_normal((n,) * 3)) * 0.5, s=(n,) * 3, axes=(0, 1, 2))
    g *= sigma / g.std()
    return np.exp(g - g.var() / 2)


def test_bernardeau_on_its_analytic_profile():
    # rho = (1 + B cos kx)^(3/2) makes 1.5 [rho^(2/3) - 1] = 1.5 B cos kx exactly,
    # so v_x = -f a H 1.5 B sin(kx) / k.
    b, k = 0.5, 2 * np.pi * 3 / BOX
    x, _, _ = _coordinates()
    density = _density((1 + b * np.cos(k * x)) ** 1.5)
    v = estimator_velocity(density, "bernardeau").value
    expected = -growth_velocity_factor(density) * 1.5 * b * np.sin(k * x) / k
    assert _relative_error(v[..., 0], expected) < EXACT
    assert np.max(np.abs(v[..., 1:])) < EXACT * np.max(np.abs(expected))


def test_bernardeau_tends_to_linear_theory_for_small_delta():
    differences = []
    for sigma in (1e-2, 1e-3):
        density = _density(1 + sigma * np.random.default_rng(0).standard_normal((N,) * 3))
        linear = linear_velocity(density).value
        differences.append(_relative_error(estimator_velocity(density, "bernardeau").value, linear))
    # s = delta - delta^2 / 6 + ...: the relative difference shrinks with delta, about as sigma / 6
    assert differences[1] < 3e-3 and differences[1] < differences[0] / 5


def test_2lpt_on_two_crossed_waves():
    # delta_L = A (cos kx + cos ky): phi_1 = -delta_L / k^2, the 2LPT source is
    # phi_xx phi_yy = A^2 cos kx cos ky, phi_2 = -A^2 cos kx cos ky / (2 k^2), and
    # v = a H (-f grad phi_1 + f_2 D_2 grad phi_2).
    amp, k = 0.3, 2 * np.pi * 2 / BOX
    x, y, _ = _coordinates()
    density = _density(np.exp(amp * (np.cos(k * x) + np.cos(k * y))))
    a = 1 / (1 + Z)
    omega = WU2021.Omega_m * a**-3 / WU2021.efunc(a) ** 2
    f1, ah = WU2021.growth_rate(a), a * WU2021.hubble(a)
    f2_d2 = 2 * omega ** (6 / 11) * (-3 / 7) * omega ** (-1 / 143)
    expected_x = ah * (-f1 * amp * np.sin(k * x) / k + f2_d2 * amp**2 * np.sin(k * x) * np.cos(k * y) / (2 * k))
    v = estimator_velocity(density, "2lpt-log").value
    assert _relative_error(v[..., 0], expected_x) < 1e-4
    assert _relative_error(v[..., 1], np.swapaxes(expected_x, 0, 1)) < 1e-4
    assert np.max(np.abs(v[..., 2])) < 1e-4 * np.max(np.abs(expected_x))


def test_smoothing_is_applied_to_the_density_first():
    # a plane wave of amplitude A smoothed at R is a plane wave of amplitude A exp(-k^2 R^2 / 2)
    amp, k, radius = 0.01, 2 * np.pi * 4 / BOX, 3.0
    x, _, _ = _coordinates()
    density = _density(1 + amp * np.cos(k * x))
    smoothed = estimator_velocity(density, "linear", radius).value
    np.testing.assert_allclose(smoothed, linear_velocity(density).value * np.exp(-0.5 * k**2 * radius**2),
                               rtol=0, atol=EXACT * np.abs(smoothed).max())


def test_fit_recovers_known_weights_per_bin():
    """A truth made of the estimators with known weights per |k| bin is fitted back exactly."""
    kedges = absolute_kedges(BOX / N, 16)
    rng = np.random.default_rng(1)
    known = np.stack([rng.uniform(0.5, 1.5, 16), rng.uniform(-0.5, 0.5, 16)], axis=1)
    estimators = [{"name": "linear", "smoothing": 0.0}, {"name": "bernardeau", "smoothing": 0.0}]
    maker = ClassicalEstimator(estimators, kedges, known, BOX / N, np.zeros(16))
    densities = [_density(_lognormal(seed)) for seed in (2, 3)]
    truths = [maker.velocity(d) for d in densities]
    fitted = ClassicalEstimator.fit(densities, truths, estimators, n_bins=16, min_modes=1, smoothing_radii=())
    populated = fitted.modes > 0
    assert populated.sum() >= 12
    np.testing.assert_allclose(fitted.weights[populated], known[populated], rtol=0, atol=2e-4)


def test_one_estimator_beats_its_best_gaussian_and_few_modes_keep_the_first(nonlinear_boxes):
    """The per-k filter of linear theory alone is its best isotropic filter: no Gaussian
    radius does better on the boxes it was fitted on. Bins with too few training modes keep
    the first estimator alone."""
    boxes = [load_fields(p, ["density", "velocity"]) for p in nonlinear_boxes[:2]]
    densities, truths = [b["density"] for b in boxes], [b["velocity"] for b in boxes]
    single = ClassicalEstimator.fit(densities, truths, [{"name": "linear"}], min_modes=1,
                                    smoothing_radii=(0, 1, 2, 3, 4, 5, 6))
    error = np.mean([np.mean((single.velocity(d).value - t.value) ** 2) for d, t in zip(densities, truths)])
    best_gaussian = min(single.attrs["linear_smoothing"]["rms_error_km_s"]) ** 2
    assert error < best_gaussian
    fit = ClassicalEstimator.fit(densities, truths, [{"name": "linear"}, {"name": "bernardeau"}], min_modes=100,
                                 smoothing_radii=())
    few = fit.modes < 100
    assert few.any() and (~few).any()
    np.testing.assert_array_equal(fit.weights[few], np.tile([1.0, 0.0], (few.sum(), 1)))
    assert np.all(fit.weights[~few & (fit.kedges[:-1] < 1.0), 1] != 0.0)  # Bernardeau used where fitted


def test_weights_fitted_on_two_boxes_beat_each_estimator_on_a_third(nonlinear_boxes):
    boxes = [load_fields(p, ["density", "velocity"]) for p in nonlinear_boxes]
    train, test = boxes[:2], boxes[2]
    fit = ClassicalEstimator.fit([b["density"] for b in train], [b["velocity"] for b in train],
                                 smoothing_radii=())

    def rms(v):
        return float(np.sqrt(np.mean((v - test["velocity"].value) ** 2)))

    combined = rms(fit.velocity(test["density"]).value)
    for name in ("linear", "bernardeau", "2lpt-log"):
        alone = ClassicalEstimator.fit([b["density"] for b in train], [b["velocity"] for b in train],
                                       [{"name": name}], smoothing_radii=())
        assert combined < rms(alone.velocity(test["density"]).value)
        assert combined < rms(estimator_velocity(test["density"], name).value)


def test_file_round_trip_and_bad_files(tmp_path):
    estimator = ClassicalEstimator([{"name": "linear", "smoothing": 0.0}, {"name": "2lpt-log", "smoothing": 1.0}],
                                   absolute_kedges(2.0, 8), np.arange(16.0).reshape(8, 2) / 16, 2.0,
                                   np.arange(8.0), {"cosmology": WU2021.to_dict()})
    path = estimator.save(tmp_path / "classical.json")
    again = ClassicalEstimator.load(path)
    assert again.to_dict() == estimator.to_dict()
    density = _density(_lognormal(4))
    np.testing.assert_array_equal(again.velocity(density).value, estimator.velocity(density).value)

    with pytest.raises(VelnetInputError, match="missing.json.*not found"):
        ClassicalEstimator.load(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(VelnetInputError, match="text.json.*not JSON"):
        ClassicalEstimator.load(tmp_path / "text.json")
    state = estimator.to_dict()
    state["weights"] = state["weights"][:-1]
    (tmp_path / "short.json").write_text(json.dumps(state))
    with pytest.raises(VelnetInputError, match="short.json.*weights of shape"):
        ClassicalEstimator.load(tmp_path / "short.json")
    state = estimator.to_dict()
    state["estimators"][1]["name"] = "zeldovich"
    (tmp_path / "unknown.json").write_text(json.dumps(state))
    with pytest.raises(VelnetInputError, match="unknown.json.*unknown classical estimator 'zeldovich'"):
        ClassicalEstimator.load(tmp_path / "unknown.json")

    coarse = _density(_lognormal(4, n=16))  # 4 Mpc/h cells
    coarse.attrs["path"] = "coarse.h5"
    with pytest.raises(VelnetInputError, match="coarse.h5.*cell size 4 Mpc/h.*fitted on"):
        estimator.velocity(coarse)


def test_boxes_of_different_cells_are_not_fitted_together():
    fine, coarse = _density(_lognormal(5)), _density(_lognormal(5, n=16))
    coarse.attrs["path"] = "coarse.h5"
    truths = [linear_velocity(fine), linear_velocity(coarse)]
    with pytest.raises(VelnetInputError, match="coarse.h5.*cell size"):
        ClassicalEstimator.fit([fine, coarse], truths, smoothing_radii=())

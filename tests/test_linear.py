"""Linear-theory velocities: exact on fields built from linear theory, signs and units."""
import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field
from velnet.physics.cosmology import WU2021
from velnet.physics.linear import (
    curl,
    divergence,
    fit_smoothing,
    linear_momentum,
    linear_prediction,
    linear_velocity,
)

EXACT = 1e-5  # relative tolerance for float32 results of exact linear-theory cases
N, BOX, Z = 32, 64.0, 0.5


def _fa_h(z=Z, cosmology=WU2021):
    a = 1 / (1 + z)
    return cosmology.growth_rate(a) * cosmology.hubble(a) * a


def _density(delta, z=Z, box=BOX):
    return Field((1 + delta).astype(np.float32), "density", box, z, WU2021)


def _gaussian_delta(seed=0, n=N, box=BOX, sigma=0.3):
    """A random Gaussian delta with no Nyquist-plane modes, and its full complex FFT."""
    rng = np.random.default_rng(seed)
    delta_k = np.fft.fftn(rng.normal(0, sigma, (n,) * 3))
    nyq = n // 2
    delta_k[nyq, :, :] = delta_k[:, nyq, :] = delta_k[:, :, nyq] = 0
    delta = np.fft.ifftn(delta_k).real
    return delta.astype(np.float32), np.fft.fftn(delta.astype(np.float32).astype(np.float64))


def _relative_error(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_f_a_h_matches_linder_approximation():
    # f ~ Omega_m(a)^0.55 (Linder 2005, good to ~0.5%); at z=0, aH = 100 km/s per Mpc/h.
    assert _fa_h(0.0) == pytest.approx(100 * 0.31**0.55, rel=0.01)


def test_plane_wave_is_infall_towards_the_crest():
    # delta = A cos(k x): div v = -f aH delta gives v_x = -f aH A sin(k x) / k.
    amp, m = 0.2, 3
    k = 2 * np.pi * m / BOX
    x = np.arange(N) * BOX / N
    delta = amp * np.cos(k * x)[:, None, None] * np.ones((N, N, N))
    v = linear_velocity(_density(delta)).value
    expected = -_fa_h() * amp * np.sin(k * x) / k
    assert v.shape == (N, N, N, 3) and v.dtype == np.float32
    assert _relative_error(v[:, 0, 0, 0], expected) < EXACT
    assert np.max(np.abs(v[..., 1:])) < EXACT * np.max(np.abs(expected))
    # just past the crest (x > 0, small) matter falls back towards x = 0: v_x < 0
    assert v[1, 0, 0, 0] < 0 and v[-1, 0, 0, 0] > 0


def test_plane_wave_along_z_fills_only_v_z():
    amp, m = 0.1, 2
    k = 2 * np.pi * m / BOX
    z = np.arange(N) * BOX / N
    delta = amp * np.cos(k * z)[None, None, :] * np.ones((N, N, N))
    v = linear_velocity(_density(delta)).value
    assert _relative_error(v[0, 0, :, 2], -_fa_h() * amp * np.sin(k * z) / k) < EXACT
    assert np.max(np.abs(v[..., :2])) < EXACT * np.max(np.abs(v[..., 2]))


def test_random_field_matches_full_complex_fft_construction():
    delta, delta_k = _gaussian_delta()
    kf = 2 * np.pi / BOX
    kvec = np.meshgrid(*(np.fft.fftfreq(N, 1 / N) * kf,) * 3, indexing="ij")
    k2 = sum(k**2 for k in kvec)
    k2[0, 0, 0] = 1.0
    expected = np.stack([np.fft.ifftn(1j * _fa_h() * k * delta_k / k2).real for k in kvec], -1)
    v = linear_velocity(_density(delta)).value
    assert _relative_error(v, expected) < EXACT


def test_divergence_of_linear_velocity_is_minus_f_a_h_delta():
    delta, _ = _gaussian_delta(seed=1)
    v = linear_velocity(_density(delta))
    assert _relative_error(divergence(v), -_fa_h() * (delta - delta.mean())) < EXACT


def test_curl_of_a_gradient_is_zero():
    delta, _ = _gaussian_delta(seed=2)
    v = linear_velocity(_density(delta))
    assert np.max(np.abs(curl(v))) < EXACT * np.max(np.abs(divergence(v)))
    # an analytic gradient: phi = sin(k1 x) cos(k2 y), grad phi = (k1 cos cos, -k2 sin sin, 0)
    k1, k2 = 2 * np.pi * 2 / BOX, 2 * np.pi * 5 / BOX
    x = np.arange(N) * BOX / N
    X, Y = np.meshgrid(x, x, indexing="ij")
    grad = np.zeros((N, N, N, 3), np.float32)
    grad[..., 0] = (k1 * np.cos(k1 * X) * np.cos(k2 * Y))[..., None]
    grad[..., 1] = (-k2 * np.sin(k1 * X) * np.sin(k2 * Y))[..., None]
    g = Field(grad, "gradient", BOX, Z, WU2021)
    assert np.max(np.abs(curl(g))) < EXACT * max(k1, k2) ** 2


def test_curl_of_a_rotation_is_known():
    # v = (-sin(k y), 0, 0) has curl (0, 0, k cos(k y))
    k = 2 * np.pi * 3 / BOX
    y = np.arange(N) * BOX / N
    v = np.zeros((N, N, N, 3), np.float32)
    v[..., 0] = -np.sin(k * y)[None, :, None]
    c = curl(Field(v, "velocity", BOX, Z, WU2021))
    assert _relative_error(c[0, :, 0, 2], k * np.cos(k * y)) < EXACT
    assert np.max(np.abs(c[..., :2])) < EXACT * k


def test_smoothing_damps_each_mode_by_a_gaussian():
    amp, m, radius = 0.2, 4, 3.0
    k = 2 * np.pi * m / BOX
    x = np.arange(N) * BOX / N
    delta = amp * np.cos(k * x)[:, None, None] * np.ones((N, N, N))
    v = linear_velocity(_density(delta), smoothing=radius).value
    expected = -_fa_h() * amp * np.exp(-0.5 * (k * radius) ** 2) * np.sin(k * x) / k
    assert _relative_error(v[:, 0, 0, 0], expected) < EXACT


def test_fit_smoothing_recovers_the_radius_used():
    densities = [_density(_gaussian_delta(seed=s)[0]) for s in (3, 4)]
    truths = [linear_velocity(d, smoothing=4.0) for d in densities]
    radii = [0.0, 2.0, 4.0, 6.0, 8.0]
    best, errors = fit_smoothing(densities, truths, radii)
    assert best == 4.0
    assert errors.shape == (5,)
    assert errors[2] < 1e-6 * errors[0]
    assert np.all(np.diff(errors[:3]) < 0) and np.all(np.diff(errors[2:]) > 0)


def test_momentum_is_density_times_velocity():
    delta, _ = _gaussian_delta(seed=5)
    density = _density(delta)
    pred = linear_prediction(density, smoothing=2.0)
    assert pred["momentum"].name == "momentum"
    np.testing.assert_allclose(pred["momentum"].value, (1 + delta)[..., None] * pred["velocity"].value,
                               rtol=1e-6)
    assert pred["velocity"].attrs["smoothing_mpc_h"] == 2.0
    with pytest.raises(VelnetInputError, match="vector"):
        linear_momentum(density, density)


def test_bad_input_is_refused():
    density = _density(_gaussian_delta()[0])
    with pytest.raises(VelnetInputError, match="scalar"):
        linear_velocity(linear_velocity(density))
    with pytest.raises(VelnetInputError, match="smoothing"):
        linear_velocity(density, smoothing=-1)
    with pytest.raises(VelnetInputError, match="equally many"):
        fit_smoothing([density], [], [1.0])


def test_linear_velocity_matches_a_fastpm_simulation_on_large_scales(tmp_path):
    """Sign, units and f a H against real dynamics: on the largest scales of a FastPM box the
    linear velocity of the painted density is the painted velocity."""
    pytest.importorskip("fastpm")
    from data_prep.paint import paint_fields
    from data_prep.readers import read_particles
    from data_prep.simulate import SimulationConfig, simulate
    from velnet.statistics.spectra import compare_spectra

    config = SimulationConfig.from_preset("wu2021", box_size=256.0, nparticles=64, steps=10, output_redshifts=(1.0,),
                                          seed=3)
    fields = paint_fields(read_particles(simulate(config, tmp_path)[0]), 32)
    res = compare_spectra(linear_velocity(fields["density"]), fields["velocity"], kedges=[0.02, 0.05, 0.1])
    assert res["T"][0] == pytest.approx(1.0, abs=0.05)  # measured 0.996 at k = 0.037 h/Mpc (r = 0.9998)
    assert res["r"][0] > 0.99

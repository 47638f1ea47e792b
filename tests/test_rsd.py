"""velnet.physics.rsd: redshift-space positions (eq. 1) and back, the bias of eq. 4, the linear inputs of eq. 2-3."""
import math

import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, los_axis
from velnet.physics.cosmology import HALO2024
from velnet.physics.rsd import (
    bias_kedges,
    kaiser_bias,
    linear_bias,
    linear_density,
    linear_inputs,
    read_back,
    real_space_positions,
    redshift_space_positions,
)

BOX = 100.0
Z = 0.59


def a_hubble(z, omega_m):
    """a H(a) in km/s per Mpc/h, written out independently of Cosmology."""
    a = 1.0 / (1.0 + z)
    return a * 100.0 * math.sqrt(omega_m / a**3 + 1.0 - omega_m)


@pytest.mark.parametrize("los, axis", [(0, 0), (1, 1), (2, 2), ("x", 0), ("y", 1), ("z", 2), ("Z", 2)])
def test_los_axis(los, axis):
    assert los_axis(los) == axis


@pytest.mark.parametrize("los", [3, -1, "w", True, 1.0, None, [0, 0, 1]])
def test_los_axis_rejects(los):
    with pytest.raises(VelnetInputError, match="line of sight"):
        los_axis(los)


@pytest.mark.parametrize("los", [0, "y", 2])
def test_halo_moves_along_the_line_of_sight_only(los):
    axis = los_axis(los)
    r = np.array([[10.0, 20.0, 30.0]])
    v = np.array([[150.0, -220.0, 310.0]])
    s = redshift_space_positions(r, v, los, BOX, Z, HALO2024)
    expected = r.copy()
    expected[0, axis] += v[0, axis] / a_hubble(Z, HALO2024.Omega_m)
    np.testing.assert_allclose(s, expected, rtol=0, atol=1e-12)
    assert s.dtype == np.float64


def test_halo_crosses_the_box_edge():
    ah = a_hubble(Z, HALO2024.Omega_m)
    r = np.array([[5.0, 6.0, 99.5], [5.0, 6.0, 0.25], [1.0, 2.0, 50.0]])
    v = np.zeros((3, 3))
    v[:, 2] = [1.0 * ah, -1.0 * ah, 0.0]  # +1 Mpc/h, -1 Mpc/h, none
    v[:, 0] = 1e4  # across the line of sight: ignored
    s = redshift_space_positions(r, v, "z", BOX, Z, HALO2024)
    np.testing.assert_allclose(s[:, 2], [0.5, 99.25, 50.0], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(s[:, :2], r[:, :2])
    assert np.all((s >= 0) & (s < BOX))


def test_tiny_negative_position_wraps_inside_the_box():
    s = redshift_space_positions([[1.0, 1.0, 0.0]], [[0.0, 0.0, -1e-14]], 2, BOX, 0.0, HALO2024)
    assert 0.0 <= s[0, 2] < BOX


def test_redshift_space_rejects_bad_shapes():
    with pytest.raises(VelnetInputError, match=r"\(N, 3\)"):
        redshift_space_positions(np.zeros((4, 3)), np.zeros((3, 3)), 0, BOX, Z, HALO2024)


def gaussian_delta(nmesh, seed):
    return np.random.default_rng(seed).normal(size=(nmesh,) * 3)


def field(value, name="density", box=200.0):
    return Field(np.asarray(value, dtype=np.float32), name, box, Z, HALO2024)


def scale_by_kbin(delta, box, factors_in_bin, beyond):
    """delta with the modes of bias_kedges bin i scaled by factors_in_bin[i], the rest by `beyond`."""
    n = delta.shape[0]
    kf = 2 * np.pi / box
    kx = np.fft.fftfreq(n, 1.0 / n)
    kz = np.fft.rfftfreq(n, 1.0 / n)
    k = kf * np.sqrt(kx[:, None, None] ** 2 + kx[None, :, None] ** 2 + kz[None, None, :] ** 2)
    edges = bias_kedges(box)
    scale = np.full(k.shape, beyond)
    for i, factor in enumerate(factors_in_bin):
        scale[(k >= edges[i]) & (k < edges[i + 1])] = factor
    return np.fft.irfftn(np.fft.rfftn(delta) * scale, s=delta.shape, axes=(0, 1, 2))


def test_bias_of_a_scaled_field_is_the_scale():
    delta = gaussian_delta(32, 1)
    for b in (1.0, 1.85, 2.57):
        beta = linear_bias(field(1 + b * delta, "halos_s"), field(1 + delta))
        assert beta == pytest.approx(b, rel=1e-5)


def test_bias_uses_only_k_below_kmax():
    delta = gaussian_delta(32, 2)
    nbins = len(bias_kedges(200.0)) - 1
    halo = scale_by_kbin(delta, 200.0, [2.0] * nbins, beyond=7.0)
    assert linear_bias(field(1 + halo), field(1 + delta)) == pytest.approx(2.0, rel=1e-5)


def test_bias_averages_the_ratio_in_dk_not_over_modes():
    # eq. 4: every bin of equal width counts once, however many modes it has
    delta = gaussian_delta(32, 3)
    nbins = len(bias_kedges(200.0)) - 1
    factors = np.linspace(1.0, 3.0, nbins)
    halo = scale_by_kbin(delta, 200.0, factors, beyond=1.0)
    expected = math.sqrt(np.mean(factors**2))
    assert linear_bias(field(1 + halo), field(1 + delta)) == pytest.approx(expected, rel=1e-5)
    n = 32
    kx = np.fft.fftfreq(n, 1.0 / n) * 2 * np.pi / 200.0
    k = np.sqrt(kx[:, None, None] ** 2 + kx[None, :, None] ** 2 + kx[None, None, :] ** 2)
    modes, _ = np.histogram(k, bins=bias_kedges(200.0))
    mode_weighted = math.sqrt(np.sum(modes * factors**2) / np.sum(modes))
    assert mode_weighted - expected > 0.1  # the test tells the two averages apart


def test_bias_kedges():
    edges = bias_kedges(200.0)
    kf = 2 * np.pi / 200.0
    np.testing.assert_allclose(np.diff(edges), kf)
    assert edges[0] == pytest.approx(kf / 2) and edges[-1] <= 0.3 < edges[-1] + kf
    with pytest.raises(VelnetInputError, match="no k bin"):
        bias_kedges(20.0)


def test_bias_needs_matter_power():
    with pytest.raises(VelnetInputError, match="no power"):
        linear_bias(field(1 + gaussian_delta(16, 4)), field(np.ones((16,) * 3)))


def test_linear_inputs_equal_linear_theory_of_the_matter():
    from velnet.physics.linear import linear_prediction

    delta = gaussian_delta(16, 5) * 0.2
    b = 2.57
    out = linear_inputs(field(1 + b * delta, "halos_s"), b)
    truth = linear_prediction(field(1 + delta))
    assert set(out) == {"linear_velocity_s", "linear_momentum_s"}
    np.testing.assert_allclose(out["linear_velocity_s"].value, truth["velocity"].value, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["linear_momentum_s"].value, truth["momentum"].value, rtol=1e-4, atol=1e-3)
    assert out["linear_velocity_s"].name == "linear_velocity_s" and out["linear_velocity_s"].attrs["beta"] == b
    assert np.abs(truth["velocity"].value).max() > 10.0  # a real velocity field, not zeros
    with pytest.raises(VelnetInputError, match="beta"):
        linear_inputs(field(1 + delta), 0.0)


@pytest.mark.parametrize("beta, f", [(1.85, 0.75), (2.57, 0.75), (1.2, 0.5)])
def test_kaiser_bias_has_the_monopole_beta_squared(beta, f):
    b = kaiser_bias(beta, f)
    assert b > 0
    mu = np.linspace(0.0, 1.0, 200_001)
    monopole = np.trapezoid((b + f * mu ** 2) ** 2, mu)  # <(b + f mu^2)^2> over mu in [0, 1]
    assert monopole == pytest.approx(beta ** 2, rel=1e-9)
    with pytest.raises(VelnetInputError, match="beta\\^2 must exceed"):
        kaiser_bias(0.9 * f / math.sqrt(5), f)


@pytest.mark.parametrize("los", ["x", "z"])
def test_linear_density_divides_each_plane_wave_by_b_plus_f_mu_squared(los):
    n, box, amplitude, radius = 16, 200.0, 0.05, 4.0
    x = np.arange(n) * box / n
    k = 2 * np.pi * 2 / box  # the second harmonic
    along = np.cos(k * x)[:, None, None] * np.ones((n, n, n))  # a wave along x: mu = 1 if los is x, else 0
    beta = 2.0
    out = linear_density(field(1 + amplitude * along, "halos_s"), beta, los, smoothing=radius)
    f = HALO2024.growth_rate(1 / (1 + Z))
    b = kaiser_bias(beta, f)
    expected = 1 + amplitude * along * np.exp(-0.5 * (k * radius) ** 2) / (b + f * (los == "x"))
    np.testing.assert_allclose(out.value, expected, atol=1e-6)
    assert out.name == "linear_density_s" and out.attrs["bias"] == pytest.approx(b)
    with pytest.raises(VelnetInputError, match="smoothing must be"):
        linear_density(field(1 + amplitude * along, "halos_s"), beta, los, smoothing=-1.0)


MESH_BOX, MESH_N = 64.0, 32
"""The velocity fields that move halos back: 2 Mpc/h cells."""


def mesh_field(value, name="density"):
    return Field(np.asarray(value, dtype=np.float32), name, MESH_BOX, Z, HALO2024)


def hubble_rate():
    """a H(a) of HALO2024 at Z, km/s per Mpc/h."""
    a = 1 / (1 + Z)
    return a * HALO2024.hubble(a)


def test_rsd_correction_moves_halos_back_to_their_real_space_positions():
    rng = np.random.default_rng(3)
    real = rng.uniform(0, MESH_BOX, (40, 3))
    uniform = np.zeros((MESH_N, MESH_N, MESH_N, 3))
    uniform[..., 2] = 350.0  # km/s along the line of sight, everywhere
    velocity = mesh_field(uniform, "velocity")
    halo_v = np.tile([[120.0, -80.0, 350.0]], (40, 1))
    s = redshift_space_positions(real, halo_v, "z", MESH_BOX, Z, HALO2024)
    assert np.abs(s[:, 2] - real[:, 2]).max() > 1.0  # the distortion is several Mpc/h
    for back in (real_space_positions(s, velocity, "z"), read_back(s, real, velocity, "z")):
        offset = np.mod(back - real + MESH_BOX / 2, MESH_BOX) - MESH_BOX / 2
        np.testing.assert_allclose(offset, 0.0, atol=1e-6)

    # v_z = A + B z (away from the periodic face): the root of r + (A + B r) / aH = s.
    z = np.arange(MESH_N) * MESH_BOX / MESH_N
    ramp = np.zeros((MESH_N, MESH_N, MESH_N, 3))
    ramp[..., 2] = 200.0 + 3000.0 / MESH_BOX * z[None, None, :]
    real = np.column_stack([rng.uniform(0, MESH_BOX, 30), rng.uniform(0, MESH_BOX, 30), rng.uniform(10, 40, 30)])
    s = real.copy()
    s[:, 2] += (200.0 + 3000.0 / MESH_BOX * real[:, 2]) / hubble_rate()
    np.testing.assert_allclose(real_space_positions(s, mesh_field(ramp, "velocity"), "z"), real, atol=1e-6)


def test_rsd_correction_takes_the_densest_root_where_the_map_folds():
    # Bulk flow v_b plus infall onto z0 at up to three times the Hubble rate: with u = r - z0,
    # r + v(r) / aH = s has the roots u (1 - 3 exp(-(u / 4)^2)) = 0: u = 0 and u = +-4 sqrt(ln 3).
    ah = hubble_rate()
    z = np.arange(MESH_N) * MESH_BOX / MESH_N
    z0, bulk = 32.0, 3.5 * ah
    u = z - z0
    infall = np.zeros((MESH_N, MESH_N, MESH_N, 3))
    infall[..., 2] = (bulk - 3 * ah * u * np.exp(-(u / 4) ** 2))[None, None, :]
    peak = mesh_field(np.ones((MESH_N, MESH_N, 1)) * (1 + 50 * np.exp(-(u / 2) ** 2))[None, None, :])
    real = np.array([[10.0, 20.0, z0], [30.0, 5.0, z0]])
    s = real + [0, 0, bulk / ah]  # the halo at the centre moves with the bulk flow only
    velocity = mesh_field(infall, "velocity")
    np.testing.assert_allclose(real_space_positions(s, velocity, "z", density=peak), real, atol=0.05)
    nearest = real_space_positions(s, velocity, "z")  # without a density: the root nearest s, an outer one
    np.testing.assert_allclose(nearest[:, 2], z0 + 4 * np.log(3) ** 0.5, atol=0.5)
    with pytest.raises(VelnetInputError, match="not a vector"):
        real_space_positions(s, peak, "z")

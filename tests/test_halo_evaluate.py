"""The 2024 halo paper's evaluation: eq. 10, CIC read-out, RSD correction, multipoles, xi, the report."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from velnet.cosmology import HALO2024
from velnet.errors import VelnetInputError
from velnet.fields import Field
from velnet.linear import linear_velocity

pytest.importorskip("nbodykit")

from velnet import stats  # noqa: E402
from velnet.halo_evaluate import (agreement, cic_readout, evaluate_halo, heaviest, read_back,  # noqa: E402
                                  real_space_positions, xi_rp_pi)
from velnet.rsd import redshift_space_positions  # noqa: E402

Z = 0.59
BOX, N = 64.0, 32


def field(value, name="density", box=BOX):
    return Field(np.asarray(value, dtype=np.float32), name, box, Z, HALO2024)


def gaussian(n, seed, slope=-1.5, box=BOX):
    """A periodic Gaussian field with a power-law spectrum P ~ k^slope, unit variance, and its k grid."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n, box / n) * 2 * np.pi
    kz = np.fft.rfftfreq(n, box / n) * 2 * np.pi
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kz[None, None, :] ** 2
    amplitude = np.where(k2 > 0, k2, 1.0) ** (slope / 4)
    modes = np.fft.rfftn(rng.standard_normal((n,) * 3)) * amplitude
    modes[0, 0, 0] = 0
    value = np.fft.irfftn(modes, s=(n,) * 3, axes=(0, 1, 2))
    return value / value.std(), k2, kz


def a_hubble():
    a = 1 / (1 + Z)
    return a * HALO2024.hubble(a)


def test_agreement_is_ideal_for_the_truth_and_sees_scale_and_sign():
    truth = np.random.default_rng(0).normal(2.0, 1.0, (8, 8, 8, 3))
    same = agreement(truth, truth)
    assert same["C_r"] == pytest.approx(1.0, abs=1e-12)
    assert same["R_std"] == pytest.approx(0.0, abs=1e-12) and same["R_mean"] == pytest.approx(0.0, abs=1e-12)
    doubled = agreement(2 * truth, truth)
    assert doubled["C_r"] == pytest.approx(1.0) and doubled["R_std"] == pytest.approx(1.0)
    assert agreement(-truth, truth)["C_r"] == pytest.approx(-1.0)
    other = agreement(np.random.default_rng(1).normal(2.0, 1.0, truth.shape), truth)
    assert abs(other["C_r"]) < 0.05
    with pytest.raises(VelnetInputError, match="differ in shape"):
        agreement(truth[..., 0], truth)


def test_cic_readout_is_exact_for_a_trilinear_field_and_wraps():
    n, box = 8, 16.0
    x = np.arange(n) * box / n  # node positions: nbodykit's painting convention
    value = 1.0 + 2.0 * x[:, None, None] - 0.5 * x[None, :, None] + 0.25 * x[None, None, :]
    pos = np.random.default_rng(2).uniform(0, box * (n - 1) / n, (50, 3))  # never between the last and first node
    expected = 1.0 + 2.0 * pos[:, 0] - 0.5 * pos[:, 1] + 0.25 * pos[:, 2]
    np.testing.assert_allclose(cic_readout(field(value, box=box), pos), expected, rtol=1e-5)
    vector = np.stack([value, 2 * value, -value], axis=-1)
    out = cic_readout(field(vector, "velocity", box=box), pos)
    assert out.shape == (50, 3)
    np.testing.assert_allclose(out[:, 1], 2 * expected, rtol=1e-5)
    # Halfway between the last node and the first one (through the periodic face), and beyond the box.
    edge = cic_readout(field(value, box=box), [[box - 1.0, 0.0, 0.0], [box + 2.0, 0.0, 0.0]])
    np.testing.assert_allclose(edge, [0.5 * (value[-1, 0, 0] + value[0, 0, 0]), value[1, 0, 0]], rtol=1e-6)
    with pytest.raises(VelnetInputError, match="finite"):
        cic_readout(field(value, box=box), [[np.nan, 0, 0]])


def test_rsd_correction_moves_halos_back_to_their_real_space_positions():
    rng = np.random.default_rng(3)
    real = rng.uniform(0, BOX, (40, 3))
    uniform = np.zeros((N, N, N, 3))
    uniform[..., 2] = 350.0  # km/s along the line of sight, everywhere
    velocity = field(uniform, "velocity")
    halo_v = np.tile([[120.0, -80.0, 350.0]], (40, 1))
    s = redshift_space_positions(real, halo_v, "z", BOX, Z, HALO2024)
    assert np.abs(s[:, 2] - real[:, 2]).max() > 1.0  # the distortion is several Mpc/h
    for back in (real_space_positions(s, velocity, "z"), read_back(s, real, velocity, "z")):
        offset = np.mod(back - real + BOX / 2, BOX) - BOX / 2
        np.testing.assert_allclose(offset, 0.0, atol=1e-6)

    # v_z = A + B z (away from the periodic face): the root of r + (A + B r) / aH = s.
    z = np.arange(N) * BOX / N
    ramp = np.zeros((N, N, N, 3))
    ramp[..., 2] = 200.0 + 3000.0 / BOX * z[None, None, :]
    real = np.column_stack([rng.uniform(0, BOX, 30), rng.uniform(0, BOX, 30), rng.uniform(10, 40, 30)])
    s = real.copy()
    s[:, 2] += (200.0 + 3000.0 / BOX * real[:, 2]) / a_hubble()
    np.testing.assert_allclose(real_space_positions(s, field(ramp, "velocity"), "z"), real, atol=1e-6)


def test_rsd_correction_takes_the_densest_root_where_the_map_folds():
    # Bulk flow v_b plus infall onto z0 at up to three times the Hubble rate: with u = r - z0,
    # r + v(r) / aH = s has the roots u (1 - 3 exp(-(u / 4)^2)) = 0: u = 0 and u = +-4 sqrt(ln 3).
    ah = a_hubble()
    z = np.arange(N) * BOX / N
    z0, bulk = 32.0, 3.5 * ah
    u = z - z0
    infall = np.zeros((N, N, N, 3))
    infall[..., 2] = (bulk - 3 * ah * u * np.exp(-(u / 4) ** 2))[None, None, :]
    peak = field(np.ones((N, N, 1)) * (1 + 50 * np.exp(-(u / 2) ** 2))[None, None, :])
    real = np.array([[10.0, 20.0, z0], [30.0, 5.0, z0]])
    s = real + [0, 0, bulk / ah]  # the halo at the centre moves with the bulk flow only
    velocity = field(infall, "velocity")
    np.testing.assert_allclose(real_space_positions(s, velocity, "z", density=peak), real, atol=0.05)
    nearest = real_space_positions(s, velocity, "z")  # without a density: the root nearest s, an outer one
    np.testing.assert_allclose(nearest[:, 2], z0 + 4 * np.log(3) ** 0.5, atol=0.5)
    with pytest.raises(VelnetInputError, match="not a vector"):
        real_space_positions(s, peak, "z")


def test_quadrupole_vanishes_for_an_isotropic_field_and_matches_kaiser():
    n, box = 48, 96.0
    value, k2, kz = gaussian(n, 4, box=box)
    iso = stats.multipoles(field(1 + 0.1 * value, box=box), "z")
    p0, p2, p4, modes = iso["power_0"], iso["power_2"], iso["power_4"], iso["modes"]
    # Gaussian error of P_ell: sqrt((2 ell + 1) / (N_modes / 2)) P_0 (modes come in +-k pairs)
    for p, ell in ((p2, 2), (p4, 4)):
        pulls = p / (np.sqrt((2 * ell + 1) / (modes / 2)) * p0)
        assert np.abs(pulls).max() < 5 and abs(pulls.mean()) < 4 / np.sqrt(len(pulls))
    # Kaiser: delta(k) (1 + beta mu^2) gives P_2 / P_0 = (4 beta / 3 + 4 beta^2 / 7) / (1 + 2 beta / 3 + beta^2 / 5).
    beta = 0.5
    mu2 = np.where(k2 > 0, kz[None, None, :] ** 2 / np.where(k2 > 0, k2, 1), 0)
    squashed = np.fft.irfftn(np.fft.rfftn(value) * (1 + beta * mu2), s=(n,) * 3, axes=(0, 1, 2))
    rsd = stats.multipoles(field(1 + 0.1 * squashed, box=box), 2)
    ratio = np.sum(rsd["power_2"] * rsd["modes"]) / np.sum(rsd["power_0"] * rsd["modes"])
    kaiser = (4 * beta / 3 + 4 * beta ** 2 / 7) / (1 + 2 * beta / 3 + beta ** 2 / 5)
    assert ratio == pytest.approx(kaiser, rel=0.03)
    assert stats.multipoles(field(1 + 0.1 * squashed, box=box), "x")["power_2"].mean() < 0.5 * rsd["power_2"].mean()
    with pytest.raises(VelnetInputError, match="scalar"):
        stats.multipoles(field(np.zeros((8, 8, 8, 3)), "velocity"), "z")


def test_xi_of_uniform_points_is_zero_and_of_pairs_is_positive_at_their_separation():
    rng = np.random.default_rng(5)
    uniform = rng.uniform(0, BOX, (3000, 3))
    r_perp, r_par, xi = xi_rp_pi(uniform, BOX, "z", rmax=16, dr=2)
    assert xi.shape == (8, 8) and r_perp[0] == 1.0 and r_par[-1] == 15.0
    assert abs(xi.mean()) < 0.05
    # Pairs 0.5 Mpc/h apart across and 5 along the line of sight: excess at r_perp < 2, 4 <= r_par < 6.
    base = rng.uniform(0, BOX, (1500, 3))
    pairs = np.concatenate([base, np.mod(base + [0.5, 0, 5.0], BOX)])
    xi = xi_rp_pi(pairs, BOX, "z", rmax=16, dr=2)[2]
    assert xi[0, 2] > 10 * max(abs(xi[0, 0]), abs(xi[3, 2]), 0.1)


def truth_box(seed):
    """Lognormal density, its linear velocity and momentum."""
    value, _, _ = gaussian(N, seed)
    density = field(np.exp(0.6 * value - 0.18))
    velocity = linear_velocity(density)
    return {"density": density, "velocity": velocity,
            "momentum": velocity.with_value(density.value[..., None] * velocity.value, "momentum")}


def halo_inputs(truth, beta):
    """Halo channels from the density, and linear theory of their sum divided by beta (eq. 2-3)."""
    density = truth["density"].value
    total = 1 + beta * (density - 1)
    channels = {f"halos_s_{j}": field(total * share, f"halos_s_{j}") for j, share in enumerate((0.1, 0.2, 0.3, 0.4))}
    velocity = linear_velocity(field(density))
    velocity.attrs["beta"] = beta
    momentum = velocity.with_value(density[..., None] * velocity.value, "linear_momentum_s")
    return {**channels, "linear_velocity_s": velocity.with_value(velocity.value, "linear_velocity_s"),
            "linear_momentum_s": momentum}


def catalog(truth, seed, count=900):
    """Halos at random positions moving with the true field there."""
    position = np.random.default_rng(seed).uniform(0, BOX, (count, 3))
    return SimpleNamespace(position=position, velocity=cic_readout(truth["velocity"], position),
                           mass=np.random.default_rng(seed).uniform(1e12, 1e14, count), box_size=BOX, redshift=Z,
                           cosmology=HALO2024)


def noisy(truth, seed):
    rng = np.random.default_rng(seed)
    return {name: f.with_value((f.value * (1 + 0.1 * rng.standard_normal(f.value.shape))).astype(np.float32))
            for name, f in truth.items()}


def test_evaluate_halo_writes_the_report_and_is_ideal_for_the_truth(tmp_path):
    truths = [truth_box(10), truth_box(11)]
    predictions = {"number": truths, "mass": [noisy(t, 20 + i) for i, t in enumerate(truths)]}
    inputs = {scheme: [halo_inputs(t, 2.0) for t in truths] for scheme in predictions}
    catalogs = [catalog(t, 30 + i) for i, t in enumerate(truths)]
    out = tmp_path / "report"
    metrics = evaluate_halo(truths, predictions, out, inputs_by_scheme=inputs, catalogs=catalogs, los="z")

    names = {p.name for p in out.iterdir()}
    assert {"report.md", "metrics.json", "xi.png", "multipoles.png", "spectra_velocity.png",
            "joint_truth_prediction.png", "histograms_momentum.png"} <= names
    assert json.loads((out / "metrics.json").read_text()) == metrics
    report = (out / "report.md").read_text()
    assert "eq. 10" in report and "number: U-net" in report and "mass: linear" in report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    exact = metrics["agreement"]["number"]["U-net"]
    for row in ("density", "velocity", "abs_v", "theta_v", "momentum", "abs_m", "theta_m"):
        assert exact[row]["C_r"]["mean"] == pytest.approx(1.0, abs=1e-6)
        assert exact[row]["R_std"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["agreement"]["mass"]["U-net"]["velocity"]["C_r"]["mean"] < 0.999
    assert metrics["pixel"]["number"]["U-net"]["one_minus_cos_v"]["mean"] == pytest.approx(0.0, abs=1e-6)
    for q in ("density", "velocity", "momentum", "theta_v", "theta_m"):
        curve = metrics["spectra"][q]["number"]["U-net"]
        np.testing.assert_allclose(curve["R_mean"], 0.0, atol=1e-5)
        assert len(curve["std"]) == len(curve["k"]) and all(s is not None for s in curve["std"])
    # The linear velocity here is the truth itself; its density is 1 + delta_s / beta = the truth too.
    assert metrics["agreement"]["number"]["linear"]["velocity"]["C_r"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["multipoles"]["summary"]["2"]["number"]["U-net"]["diff_mean"] == pytest.approx(0.0, abs=1e-9)

    rsd = metrics["rsd"]
    assert rsd["nhalos"] == [heaviest(c).size for c in catalogs] == [786, 786]
    offsets, residual = rsd["los_offset"], rsd["xi"]["anisotropy_residual"]
    for mode in ("from s", "at r"):
        assert offsets[f"true v, {mode}"]["rms"]["mean"] < 0.05 * offsets["redshift space"]["rms"]["mean"]
        assert offsets[f"number U-net v, {mode}"] == offsets[f"true v, {mode}"]
        assert residual[f"true v, {mode}"] < 0.2
    assert residual["redshift space"] == pytest.approx(1.0)


def test_evaluate_halo_rejects_bad_input_and_leaves_nothing(tmp_path):
    truth = truth_box(12)
    out = tmp_path / "report"
    with pytest.raises(VelnetInputError, match="same test boxes"):
        evaluate_halo([truth], {"number": [truth, truth]}, out)
    with pytest.raises(VelnetInputError, match="no 'momentum'"):
        evaluate_halo(truth, {"number": [{"density": truth["density"], "velocity": truth["velocity"]}]}, out)
    small = {name: Field(f.value[:16, :16, :16], name, BOX, Z, HALO2024) for name, f in truth.items()}
    with pytest.raises(VelnetInputError, match="mesh"):
        evaluate_halo(truth, {"number": [small]}, out)
    bad = catalog(truth, 40)
    bad.position[0], bad.mass[0] = np.nan, 1e15  # found only inside the report folder: during the RSD correction
    with pytest.raises(VelnetInputError, match="finite"):
        evaluate_halo(truth, {"number": [truth]}, out, catalogs=[bad])
    assert list(tmp_path.iterdir()) == []

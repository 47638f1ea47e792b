"""data_prep.subhalos: satellites drawn onto FOF hosts from Han et al. (2016)'s model."""
import numpy as np
import pytest

from data_prep import subhalos
from velnet.physics.cosmology import HALO2024


def test_r200c_of_a_known_halo():
    """1e14 Msun/h at z = 0: R200c = (3 M / (4 pi 200 rho_crit))^(1/3) = 0.755 Mpc/h."""
    assert subhalos.r200c(1e14, HALO2024, 0.0) == pytest.approx(0.7547, rel=1e-3)
    # comoving: at z = 1 the physical radius is smaller (rho_crit grows as E^2), times (1 + z)
    e2 = HALO2024.efunc(0.5) ** 2
    assert subhalos.r200c(1e14, HALO2024, 1.0) == pytest.approx(0.7547 * e2 ** (-1 / 3) * 2, rel=1e-3)


def test_infall_counts_and_masses_follow_the_power_law():
    rng = np.random.default_rng(0)
    host, low = 1e14, 1e11
    draws = [subhalos.draw_infall_masses(host, low, rng) for _ in range(4000)]
    expected = subhalos.mean_infall_count(host, low)
    assert np.mean([len(d) for d in draws]) == pytest.approx(expected, rel=0.02)
    masses = np.concatenate(draws)
    assert masses.min() >= low and masses.max() <= subhalos.PSI_ACC_MAX * host
    # the share above 1e12: N(>m) of the power law, independently of the sampler
    above = subhalos.mean_infall_count(host, 1e12) / expected
    assert np.mean(masses >= 1e12) == pytest.approx(above, rel=0.05)
    assert subhalos.mean_infall_count(host, 2e13) == 0  # nothing falls in above PSI_ACC_MAX M


def test_bound_fractions_are_the_truncated_log_normal():
    """At one radius, ln mu is a normal of SIGMA_MU about ln median, cut at ln min(1, MU_MAX_FACTOR median)."""
    from scipy.stats import truncnorm

    rng = np.random.default_rng(1)
    for radius in (0.2, 1.0):
        pick, mu = subhalos.draw_orbits(1e14, np.full(100, radius), 40000, rng)
        median = subhalos.median_bound_fraction(1e14, radius)
        cut = np.log(min(1.0, subhalos.MU_MAX_FACTOR * median) / median) / subhalos.SIGMA_MU
        expected = truncnorm(-np.inf, cut, loc=np.log(median), scale=subhalos.SIGMA_MU)
        assert np.mean(np.log(mu)) == pytest.approx(expected.mean(), abs=0.02)
        assert np.std(np.log(mu)) == pytest.approx(expected.std(), rel=0.02)
        assert mu.max() < min(1.0, subhalos.MU_MAX_FACTOR * median) and set(pick) <= set(range(100))
    assert subhalos.median_bound_fraction(1e14, 0.2) < 0.2 * subhalos.median_bound_fraction(1e14, 1.0)


def test_orbits_stay_within_r_max_and_pairs_are_redrawn_whole():
    """Particles beyond R_MAX R200c hold none; where a particle's radius makes mu exceed its cut more
    often, it is picked less (the joint density, not a fixed radius)."""
    rng = np.random.default_rng(5)
    radius = np.array([0.1, 1.0, 1.9, 3.0, 5.0])
    pick, _ = subhalos.draw_orbits(1e14, radius, 60000, rng)
    counts = np.bincount(pick, minlength=5)
    assert counts[3] == counts[4] == 0
    # P(mu < cut | R) is Phi(cut / sigma): the same for R below the radius where MU_MAX_FACTOR median
    # reaches 1, smaller beyond it
    shares = counts[:3] / counts[:3].sum()
    cut = [min(np.log(1 / subhalos.median_bound_fraction(1e14, r)), np.log(subhalos.MU_MAX_FACTOR))
           / subhalos.SIGMA_MU for r in radius[:3]]
    from scipy.stats import norm

    expected = norm.cdf(cut) / norm.cdf(cut).sum()
    np.testing.assert_allclose(shares, expected, atol=0.01)


def _hosts(rng, masses=(3e14, 5e13, 2e12)):
    """Hosts at random centres, each with 500 particles within 0.5 Mpc/h and its own bulk velocity."""
    members, centres = [], rng.uniform(0, 100, (len(masses), 3))
    for centre in centres:
        pos = (centre + rng.normal(0, 0.3, (500, 3))) % 100
        members.append((pos, rng.normal(0, 300, (500, 3))))
    return np.array(masses), centres, rng.normal(0, 200, (len(masses), 3)), members


@pytest.mark.parametrize("ranking", ["bound", "infall"])
def test_satellites_sit_on_their_hosts_particles(ranking):
    rng = np.random.default_rng(2)
    mass, centres, velocity, members = _hosts(rng)
    out_mass, pos, vel, host = subhalos.with_subhalos(mass, centres, velocity, dict(enumerate(members)), 1e11,
                                                      100.0, HALO2024, 0.59, np.random.default_rng(3), ranking)
    satellite = host >= 0
    assert satellite.sum() > 10 and (~satellite).sum() == len(mass)
    assert np.all(np.diff(out_mass) <= 0) and out_mass[satellite].min() > 1e11
    for p, v, h in zip(pos[satellite], vel[satellite], host[satellite]):
        row = np.flatnonzero(np.all(members[h][0] == p, axis=1))  # one of its own host's particles
        assert len(row) == 1 and np.array_equal(members[h][1][row[0]], v)
    centrals = {tuple(c): m for c, m in zip(pos[~satellite], out_mass[~satellite])}
    for h in range(len(mass)):
        central = centrals[tuple(centres[h])]
        if ranking == "bound":  # each host's mass is shared between its central and its satellites
            assert central + out_mass[host == h].sum() == pytest.approx(mass[h], rel=1e-12)
        else:  # the central keeps its host's mass; satellites carry their infall masses
            assert central == mass[h]
    assert (host == 0).sum() > (host == 1).sum()  # the heavier host holds more


def test_no_satellites_below_the_floor():
    rng = np.random.default_rng(4)
    mass, centres, velocity, members = _hosts(rng, masses=(1e12, 5e11))
    out = subhalos.with_subhalos(mass, centres, velocity, {}, 1e11, 100.0, HALO2024, 0.59, rng)
    assert not (out[3] >= 0).any()
    np.testing.assert_array_equal(out[0], mass)
    with pytest.raises(ValueError, match="ranking"):
        subhalos.with_subhalos(mass, centres, velocity, {}, 1e11, 100.0, HALO2024, 0.59, rng, "peak")


def test_the_command_line_offers_every_model():
    from velnet.cli_args import build_parser

    args = build_parser("velnet").parse_args(["halos", "snap", "--out", "h.h5", "--subhalos", "han16-infall"])
    assert args.subhalos == "han16-infall"
    for model in subhalos.MODELS:
        build_parser("velnet").parse_args(["halos", "snap", "--out", "h.h5", "--subhalos", model])

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


def test_bound_fractions_are_truncated_and_fall_towards_the_centre():
    rng = np.random.default_rng(1)
    inner = subhalos.draw_bound_fractions(1e14, np.full(20000, 0.2), rng)
    outer = subhalos.draw_bound_fractions(1e14, np.full(20000, 1.0), rng)
    median = subhalos.mu_star(1e14) * np.array([0.2 ** subhalos.beta(1e14), 1.0])
    assert inner.max() < subhalos.MU_MAX_FACTOR * median[0]
    assert outer.max() < min(1.0, subhalos.MU_MAX_FACTOR * median[1])
    assert np.median(inner) < 0.2 * np.median(outer)


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
    out_mass, pos, vel, satellite = subhalos.with_subhalos(mass, centres, velocity, members, 1e11, 100.0,
                                                           HALO2024, 0.59, np.random.default_rng(3), ranking)
    assert satellite.sum() > 10 and (~satellite).sum() == len(mass)
    assert np.all(np.diff(out_mass) <= 0) and out_mass[satellite].min() >= 1e11
    particles = np.concatenate([m[0] for m in members])
    velocities = np.concatenate([m[1] for m in members])
    for p, v in zip(pos[satellite], vel[satellite]):
        row = np.flatnonzero(np.all(particles == p, axis=1))
        assert len(row) == 1 and np.array_equal(velocities[row[0]], v)
    centrals = out_mass[~satellite]
    if ranking == "bound":  # mass moves from the centrals to their satellites, none is made or lost
        assert out_mass.sum() == pytest.approx(mass.sum(), rel=1e-12)
        assert np.all(np.sort(centrals) <= np.sort(mass)) and centrals.max() < mass.max()
    else:  # centrals keep their host's mass; satellites carry their infall masses
        np.testing.assert_array_equal(np.sort(centrals), np.sort(mass))


def test_no_satellites_below_the_floor():
    rng = np.random.default_rng(4)
    mass, centres, velocity, members = _hosts(rng, masses=(1e12, 5e11))
    out = subhalos.with_subhalos(mass, centres, velocity, members, 1e11, 100.0, HALO2024, 0.59, rng)
    assert not out[3].any()
    np.testing.assert_array_equal(out[0], mass)
    with pytest.raises(ValueError, match="ranking"):
        subhalos.with_subhalos(mass, centres, velocity, members, 1e11, 100.0, HALO2024, 0.59, rng, "peak")


def test_the_command_line_offers_every_model():
    from velnet.cli_args import build_parser

    args = build_parser("velnet").parse_args(["halos", "snap", "--out", "h.h5", "--subhalos", "han16-infall"])
    assert args.subhalos == "han16-infall"
    for model in subhalos.MODELS:
        build_parser("velnet").parse_args(["halos", "snap", "--out", "h.h5", "--subhalos", model])

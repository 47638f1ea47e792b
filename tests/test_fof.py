"""data_prep.fof: friends-of-friends halos of a snapshot's particles."""
import numpy as np
import pytest

pytest.importorskip("nbodykit")

from data_prep.fof import find_halos, particle_mass  # noqa: E402
from data_prep.readers import Particles  # noqa: E402
from velnet.physics.cosmology import HALO2024  # noqa: E402


def test_particle_mass():
    assert particle_mass(HALO2024, 100.0, 100**3) == pytest.approx(0.268 * 2.775e11, rel=1e-12)
    # the 2024 paper's CosmicGrowth box: 1200 Mpc/h, 2048^3 particles
    assert particle_mass(HALO2024, 1200.0, 2048**3) == pytest.approx(1.496e10, rel=1e-3)


def clumps_in_background(box=50.0, seed=4):
    """A sparse background (too sparse for FOF groups) and two tight clumps of 30 particles."""
    rng = np.random.default_rng(seed)
    background = rng.uniform(0, box, (4000, 3))
    centres = np.array([[0.02, 25.0, 25.0], [30.0, 10.0, 40.0]])  # the first straddles x = 0
    clumps = [(c + rng.normal(0, 0.01, (30, 3))) % box for c in centres]
    position = np.concatenate([background] + clumps)
    velocity = np.zeros_like(position)
    velocity[4000:4030] = [100.0, -50.0, 20.0]
    velocity[4030:] = rng.normal(0, 80.0, (30, 3))
    particles = Particles(position, velocity, np.arange(len(position)), box, 0.59, HALO2024, "clumps", "bigfile")
    return particles, centres, velocity


def test_find_halos_finds_the_clumps():
    particles, centres, velocity = clumps_in_background()
    halos = find_halos(particles, nmin=20)
    assert len(halos) == 2
    mp = particle_mass(HALO2024, 50.0, 4060)
    np.testing.assert_allclose(halos.mass, 30 * mp, rtol=1e-6)
    found = halos.position[np.argsort(halos.position[:, 0])]
    # the clump across x = 0 has its centre near 0 (or 50), not at the box centre
    assert min(found[0, 0], 50.0 - found[0, 0]) < 0.05
    np.testing.assert_allclose(found[1], centres[1], atol=0.01)
    first = np.argmin(np.abs(halos.position[:, 1] - 25.0))
    np.testing.assert_allclose(halos.velocity[first], [100.0, -50.0, 20.0], rtol=1e-5)
    np.testing.assert_allclose(halos.velocity[1 - first], velocity[4030:].mean(axis=0), rtol=1e-4, atol=1e-3)
    assert halos.attrs["linking_length"] == 0.2 and halos.attrs["nmin"] == 20
    assert halos.attrs["particle_mass"] == pytest.approx(mp)
    assert np.all((halos.position >= 0) & (halos.position < 50.0))
    assert len(find_halos(particles, nmin=31)) == 0


def test_find_halos_hands_each_host_its_own_particles(monkeypatch):
    """With a subhalo model, the model gets each host (heaviest first) with exactly its FOF members."""
    from data_prep import subhalos

    particles, centres, _ = clumps_in_background()
    seen = {}

    def record(mass, position, velocity, members, min_mass, box_size, cosmology, redshift, rng, ranking):
        seen.update(position=position, members=members, min_mass=min_mass, ranking=ranking)
        return mass, position, velocity, np.zeros(len(mass), bool)

    monkeypatch.setattr(subhalos, "with_subhalos", record)
    halos = find_halos(particles, nmin=20, subhalos="han16-infall", seed=7)
    assert len(seen["members"]) == 2 and seen["ranking"] == "infall"
    assert seen["min_mass"] == pytest.approx(20 * particle_mass(HALO2024, 50.0, 4060))
    for centre, (pos, vel) in zip(seen["position"], seen["members"]):
        assert len(pos) == 30 and len(vel) == 30
        offset = (pos - centre + 25.0) % 50.0 - 25.0
        assert np.abs(offset).max() < 0.1  # all 30 of this clump's particles, none of the other's
    assert halos.attrs["subhalos"] == "han16-infall" and halos.attrs["subhalo_seed"] == 7
    with pytest.raises(Exception, match="unknown subhalo model"):
        find_halos(particles, nmin=20, subhalos="nfw")

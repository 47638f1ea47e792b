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


def clumps_in_background(box=50.0, seed=4, sizes=(30, 30)):
    """A sparse background (too sparse for FOF groups) and two tight clumps of `sizes` particles."""
    rng = np.random.default_rng(seed)
    background = rng.uniform(0, box, (4000, 3))
    centres = np.array([[0.02, 25.0, 25.0], [30.0, 10.0, 40.0]])  # the first straddles x = 0
    clumps = [(c + rng.normal(0, 0.01, (n, 3))) % box for c, n in zip(centres, sizes)]
    position = np.concatenate([background] + clumps)
    velocity = np.zeros_like(position)
    velocity[4000:4000 + sizes[0]] = [100.0, -50.0, 20.0]
    velocity[4000 + sizes[0]:] = rng.normal(0, 80.0, (sizes[1], 3))
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
    """With a subhalo model, the model gets the hosts heaviest first, and the particles of exactly
    those heavy enough to hold a satellite (more than 10 nmin particles: here the 60-particle clump,
    listed second, not the 45-particle one)."""
    from data_prep import fof

    particles, centres, _ = clumps_in_background(sizes=(45, 60))
    seen = {}

    def record(mass, position, velocity, members, min_mass, box_size, cosmology, redshift, rng, ranking):
        seen.update(mass=mass, position=position, members=members, min_mass=min_mass, ranking=ranking)
        return mass, position, velocity, np.full(len(mass), -1)

    monkeypatch.setattr(fof, "with_subhalos", record)
    mp = particle_mass(HALO2024, 50.0, 4105)
    halos = find_halos(particles, nmin=5, subhalos="han16-infall", seed=7)
    np.testing.assert_allclose(seen["mass"], [60 * mp, 45 * mp])
    assert list(seen["members"]) == [0] and seen["ranking"] == "infall"
    assert seen["min_mass"] == pytest.approx(5 * mp)
    pos, vel = seen["members"][0]
    np.testing.assert_array_equal(pos, particles.position[4045:])  # the second clump, in snapshot order
    np.testing.assert_array_equal(vel, particles.velocity[4045:])
    np.testing.assert_allclose(seen["position"][0], centres[1], atol=0.01)
    assert halos.attrs["subhalos"] == "han16-infall" and halos.attrs["subhalo_seed"] == 7
    assert halos.attrs["satellites"] == 0
    with pytest.raises(Exception, match="unknown subhalo model"):
        find_halos(particles, nmin=20, subhalos="nfw")


MEMBERS_SCRIPT = """
import sys
import numpy as np
from nbodykit import CurrentMPIComm
from data_prep import fof
from data_prep.readers import read_particles

seen = {}
def record(mass, position, velocity, members, *args):
    seen.update(mass=mass, position=position, members=members)
    return mass, position, velocity, np.full(len(mass), -1)
fof.with_subhalos = record
fof.mean_infall_count = lambda mass, floor: np.ones(len(mass))  # every host's particles gathered
comm = CurrentMPIComm.get()
halos = fof.find_halos(read_particles(sys.argv[1], comm=comm), 0.2, 2, subhalos="han16")
mp, box = halos.attrs["particle_mass"], halos.box_size
assert comm.size == 2 and len(seen["members"]) == len(halos) > 20
for host, (pos, vel) in seen["members"].items():
    assert abs(len(pos) * mp - seen["mass"][host]) < 1e-6 * mp, (host, len(pos), seen["mass"][host] / mp)
    offset = (pos - seen["position"][host] + box / 2) % box - box / 2
    assert np.abs(offset.mean(axis=0)).max() < 1e-3 * box, host  # its centre of mass is the host's
print("checked", len(seen["members"]), "hosts")
"""


@pytest.mark.mpi
def test_members_across_two_ranks_are_each_hosts_own(tiny_simulation, tmp_path):
    """Under mpirun -n 2 (FOF's rows and the particles both split over the ranks), every host gets exactly
    its own particles: as many as its length, centred on its centre of mass."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun")
    _, snapshots = tiny_simulation
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.run([mpirun, "-n", "2", sys.executable, "-c", MEMBERS_SCRIPT, str(snapshots[-1])],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "checked" in run.stdout

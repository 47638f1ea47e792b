"""Shared fixtures."""
import pytest


@pytest.fixture(scope="session")
def tiny_simulation(tmp_path_factory):
    """A FastPM box run once per session: 32^3 particles, 64 Mpc/h, 3 steps, z = 1 and 0.

    Returns:
        (SimulationConfig, [snapshot at z=1, snapshot at z=0]).
    """
    pytest.importorskip("fastpm")
    from data_prep.simulate import SimulationConfig, simulate

    config = SimulationConfig.from_preset("wu2021", box_size=64.0, nparticles=32, steps=3,
                                          output_redshifts=(1.0, 0.0), seed=7)
    return config, simulate(config, tmp_path_factory.mktemp("tiny_simulation"))

"""Shared fixtures, and TensorFlow's functions run eagerly in the tests' own processes.

A Keras fit, evaluate or predict on TensorFlow first traces its step into a graph, about 10 s
for a U-net on this 2-core CPU: most of a test training's time for the few steps a test runs.
Eagerly, the same layers compute the same numbers without the trace. The tests marked `graph`
(velnet's own training) and the commands a test starts in a subprocess (velnet's multi-device
and multi-worker runs, the command line) run traced, as a user's do.

JAX (in the tests' subprocesses) compiles without LLVM's optimisations: a test's few steps cost
less than the optimising compile of a U-net (a JAX test: about half its time).
"""
import os

import pytest

XLA_FAST_COMPILE = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    if XLA_FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_FAST_COMPILE}".strip()
    try:
        import tensorflow as tf
    except ImportError:  # (a JAX-only environment: nothing to trace)
        return
    tf.config.run_functions_eagerly(True)


@pytest.fixture(autouse=True)
def traced_tensorflow(request):
    """TensorFlow's functions traced into graphs, as outside the tests, for a test marked `graph`."""
    if request.node.get_closest_marker("graph") is None:
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(False)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(True)


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


@pytest.fixture(scope="session")
def nonlinear_boxes(tmp_path_factory):
    """Three FastPM boxes at the Wu et al. 2021 resolution, painted once per session.

    64 Mpc/h, 64^3 particles (1 Mpc/h spacing), 10 steps to z = 0, CIC on 32^3 (2 Mpc/h
    cells), seeds 1-3: small, but non-linear where the classical estimators differ.

    Returns:
        list of fields file paths (density, velocity, momentum).
    """
    pytest.importorskip("fastpm")
    from data_prep.paint import paint_snapshot
    from data_prep.simulate import SimulationConfig, simulate

    root = tmp_path_factory.mktemp("nonlinear_boxes")
    files = []
    for seed in (1, 2, 3):
        config = SimulationConfig.from_preset("wu2021", box_size=64.0, nparticles=64, seed=seed,
                                              output_redshifts=(0.0,))
        snapshot = simulate(config, root / f"sim{seed}")[0]
        files.append(paint_snapshot(snapshot, 32, root / f"box{seed}.h5"))
    return files

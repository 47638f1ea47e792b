"""The whole-box steps under `mpirun -n 2`, the box cut into x-slabs over the ranks, against one process.

One 64^3 box (128 Mpc/h, the shipped models' 2 Mpc/h cells), its particles sampled from a
lognormal field (`benchmarks.whole_box`): `velnet paint`, `predict` (the shipped classical
estimator and network), `evaluate` and `calibrate` run on one process and under mpirun, and
agree to float32 rounding: within 1e-5 of each field's (or statistic's) largest value.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nbodykit")

from benchmarks.whole_box import CLASSICAL, NETWORK, write_snapshot  # noqa: E402
from velnet.cli import main as velnet  # noqa: E402
from velnet.data.inputs import InputSpec  # noqa: E402
from velnet.data.tiling import cover_origins  # noqa: E402
from velnet.data.windows import InputWindows  # noqa: E402
from velnet.fields.field import load_fields  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NMESH = 64
TOLERANCE = 1e-5
"""Relative to the largest value of each field or statistic."""


def steps(folder, snapshot):
    """The `velnet` commands of one run, writing into `folder`."""
    truth, classical = folder / "truth.h5", folder / "estimator.json"
    return [["paint", snapshot, "--nmesh", NMESH, "--out", truth],
            ["predict", truth, classical, "--out", folder / "classical.h5"],
            ["predict", truth, NETWORK, "--out", folder / "network.h5"],
            ["evaluate", truth, folder / "network.h5", "--names", "U-net", "--baseline", "none",
             "--out", folder / "report"],
            ["calibrate", classical, truth]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same steps on one process and on two MPI ranks: `(serial folder, MPI folder)`."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun")
    root = tmp_path_factory.mktemp("slabs")
    write_snapshot(root / "snapshot", NMESH)
    folders = root / "serial", root / "mpi"
    for folder in folders:
        folder.mkdir()
        shutil.copy(CLASSICAL, folder / "estimator.json")  # (calibrate writes beside it)
    for argv in steps(folders[0], root / "snapshot"):
        assert velnet([str(a) for a in argv]) == 0, argv
    script = ("import json, sys\n"
              "from velnet.cli import main\n"
              "for argv in json.loads(sys.argv[1]):\n"
              "    assert main(argv) == 0, argv\n")
    argvs = [[str(a) for a in argv] for argv in steps(folders[1], root / "snapshot")]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([mpirun, "-n", "2", sys.executable, "-c", script, json.dumps(argvs)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return folders


def assert_close(actual, expected, what):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    scale = np.nanmax(np.abs(expected)) if np.isfinite(expected).any() else 0.0
    np.testing.assert_allclose(actual, expected, rtol=TOLERANCE, atol=TOLERANCE * scale, err_msg=what)


@pytest.mark.mpi
@pytest.mark.parametrize("name", ["truth", "classical", "network"])
def test_fields_under_mpi_equal_one_process(runs, name):
    serial, mpi = (load_fields(folder / f"{name}.h5") for folder in runs)
    assert set(serial) == set(mpi) and {"velocity", "momentum"} <= set(serial)
    for field in serial:
        assert_close(mpi[field].value, serial[field].value, f"{name} {field}")
    assert np.abs(serial["velocity"].value).max() > 10  # km/s: a field, not zeros
    if name != "truth":  # the run records say how many ranks predicted
        ranks = [json.loads((folder / f"{name}.json").read_text())["config"]["ranks"] for folder in runs]
        assert ranks == [1, 2]


@pytest.mark.mpi
def test_the_formed_momentum_is_the_density_times_the_predicted_velocity(runs):
    """The network predicts the velocity only; the momentum is formed plane by plane as it is written."""
    density = load_fields(runs[0] / "truth.h5", ["density"])["density"].value
    for folder in runs:
        predicted = load_fields(folder / "network.h5", ["velocity", "momentum"])
        np.testing.assert_allclose(predicted["momentum"].value, density[..., None] * predicted["velocity"].value,
                                   rtol=1e-6, err_msg=str(folder))


def numbers(tree, path=""):
    """Every number of a metrics tree, as path -> array of the numbers at that path's list."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() if key != "provenance"
                for k, v in numbers(value, f"{path}/{key}").items()}
    if isinstance(tree, list) and tree and all(isinstance(x, (int, float)) or x is None for x in tree):
        return {path: np.array([np.nan if x is None else x for x in tree], dtype=float)}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in numbers(value, f"{path}[{i}]").items()}
    return {path: np.array([tree], dtype=float)} if isinstance(tree, (int, float)) else {}


@pytest.mark.mpi
def test_evaluate_under_mpi_equals_one_process(runs):
    serial, mpi = (json.loads((folder / "report" / "metrics.json").read_text()) for folder in runs)
    assert serial["methods"] == mpi["methods"] == ["U-net", "linear"]
    a, b = numbers(serial), numbers(mpi)
    assert set(a) == set(b) and len(a) > 100
    for path, expected in a.items():
        if "/figures" not in path and "seconds" not in path:
            assert_close(b[path], expected, path)
    assert sorted(p.name for p in (runs[1] / "report").glob("*.png")) == \
        sorted(p.name for p in (runs[0] / "report").glob("*.png"))


@pytest.mark.mpi
def test_calibrate_under_mpi_equals_one_process(runs):
    serial, mpi = (json.loads((folder / "estimator.power.json").read_text()) for folder in runs)
    assert_close(mpi["gain"], serial["gain"], "gain")
    assert np.ptp(serial["gain"]) > 0.01  # gains per k, not all ones


def test_input_windows_on_a_range_of_planes_equal_the_whole_box():
    """What a rank gathers: the x-planes its tiles reach (wrapping past the box's end), context included."""
    n, tile, margin, factor = 32, 8, 2, 2
    rng = np.random.default_rng(0)
    density = np.exp(rng.standard_normal((n, n, n))).astype(np.float32)
    inputs = rng.standard_normal((n, n, n, 2)).astype(np.float32)
    spec = InputSpec(context=factor)
    whole = InputWindows(inputs, density, spec)
    origins = cover_origins(n, tile)
    for first_tile in (0, 3):  # the tiles of one x-interval; their windows reach planes 26..n+... (wrapping)
        chosen = origins[origins[:, 0] == tile * first_tile]
        first = (tile * first_tile - margin + (tile + 2 * margin) // 2 - factor * (tile + 2 * margin) // 2) % n
        count = factor * (tile + 2 * margin) + 1
        planes = np.arange(first, first + count) % n
        part = InputWindows(inputs[planes], density[planes], spec, first)
        np.testing.assert_array_equal(part(chosen, tile + 2 * margin, margin),
                                      whole(chosen, tile + 2 * margin, margin))

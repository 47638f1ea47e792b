"""The whole-box steps under `mpirun -n 2`, the box cut into x-slabs over the ranks, against one process.

One 64^3 box (128 Mpc/h, the shipped models' 2 Mpc/h cells), its particles sampled from a
lognormal field (`benchmarks.whole_box`): `velnet paint`, `predict` (the shipped classical
estimator and network), `evaluate` and `calibrate` run on one process and under mpirun
(`benchmarks.mpi_agreement`, which checks a 256^3 box the same way), and agree to float32
rounding: within 1e-5 of each field's (or statistic's) largest value.
"""
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("nbodykit")

from benchmarks.mpi_agreement import TOLERANCE, differences, run  # noqa: E402
from benchmarks.whole_box import write_snapshot  # noqa: E402
from velnet.data.inputs import InputSpec  # noqa: E402
from velnet.data.tiling import cover_origins  # noqa: E402
from velnet.data.windows import InputWindows  # noqa: E402
from velnet.fields.field import load_fields  # noqa: E402

NMESH = 64


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same steps on one process and on two MPI ranks: `(serial folder, MPI folder)`."""
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun")
    root = tmp_path_factory.mktemp("slabs")
    write_snapshot(root / "snapshot", NMESH)
    folders = root / "serial", root / "mpi"
    for folder, ranks in zip(folders, (1, 2)):
        run(folder, root / "snapshot", NMESH, ranks, timeout=900)
    return folders


@pytest.fixture(scope="module")
def found(runs):
    """What the two runs wrote, compared: "file: name" -> the largest relative difference."""
    return differences(*runs)


def agree(found, prefix):
    mine = {k: v for k, v in found.items() if k.startswith(prefix)}
    assert mine and all(v <= TOLERANCE for v in mine.values()), {k: v for k, v in mine.items() if v > TOLERANCE}
    return mine


@pytest.mark.mpi
@pytest.mark.parametrize("name", ["truth", "classical", "network"])
def test_fields_under_mpi_equal_one_process(runs, found, name):
    assert {f"{name}.h5: velocity", f"{name}.h5: momentum"} <= set(agree(found, f"{name}.h5:"))
    serial = load_fields(runs[0] / f"{name}.h5", ["velocity"])["velocity"]
    assert np.abs(serial.value).max() > 10  # km/s: a field, not zeros
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


@pytest.mark.mpi
def test_evaluate_under_mpi_equals_one_process(runs, found):
    serial, mpi = (json.loads((folder / "report" / "metrics.json").read_text()) for folder in runs)
    assert serial["methods"] == mpi["methods"] == ["U-net", "linear"]
    assert len(agree(found, "report/metrics.json:")) > 100
    assert sorted(p.name for p in (runs[1] / "report").glob("*.png")) == \
        sorted(p.name for p in (runs[0] / "report").glob("*.png"))


@pytest.mark.mpi
def test_calibrate_under_mpi_equals_one_process(runs, found):
    agree(found, "estimator.power.json:")
    serial = json.loads((runs[0] / "estimator.power.json").read_text())
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

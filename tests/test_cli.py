"""The command line as a user meets it: a whole small run, bad input, quiet logs, MPI errors."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from velnet.cli import main as velnet


def run(*argv):
    return velnet([str(a) for a in argv])


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    """Three small fastpm boxes (train, val, test) painted on 2 Mpc/h cells."""
    pytest.importorskip("fastpm")
    root = tmp_path_factory.mktemp("cli")
    fields = []
    for seed in (1, 2, 3):
        assert run("simulate", "--box", 64, "--particles", 32, "--steps", 4, "--seed", seed,
                   "--out", root / f"sim{seed}") == 0
        assert run("paint", root / f"sim{seed}" / "snapshot_z0.000", "--nmesh", 32,
                   "--out", root / f"box{seed}.h5") == 0
        fields.append(root / f"box{seed}.h5")
    return root, fields


@pytest.mark.slow
def test_simulate_prep_train_predict_evaluate(boxes, capsys):
    root, (train, val, test) = boxes
    assert run("prep", train, val, "--split", "train", "val", "--tile", 16,
               "--out", root / "data") == 0
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    assert manifest["split"]["counts"]["train"] == 8 and manifest["input_shape"] == [28, 28, 28, 1]

    assert run("train", root / "data", "--out", root / "run", "--preset", "tiny", "--epochs", 2,
               "--steps-per-epoch", 2) == 0
    assert (root / "run" / "model.keras").exists() and (root / "run" / "history.csv").exists()

    assert run("baseline", train, "--radii", 0, 2, 4, "--out", root / "classical.json") == 0
    radius = json.loads((root / "classical.json").read_text())["attrs"]["linear_smoothing"]["radius"]
    assert radius in (0, 2, 4)

    assert run("predict", test, root / "run" / "model.keras", "--out", root / "pred.h5") == 0
    with h5py.File(root / "pred.h5") as h5:
        assert h5["velocity"].shape == (32, 32, 32, 3) and np.all(np.isfinite(h5["velocity"][...]))
    assert (root / "pred.json").exists()

    assert run("evaluate", test, root / "pred.h5", "--names", "U-net", "--baseline", root / "classical.json",
               "--smoothing", 2, "--out", root / "report") == 0
    report = (root / "report" / "report.md").read_text()
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    for method in ("U-net", "classical (linear + bernardeau + 2lpt-log)", "linear", "linear R=2"):
        assert method in report
    assert "T(k)" in report and metrics
    assert str(root / "report" / "report.md") in capsys.readouterr().out


def test_missing_snapshot_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "snapshot_z0.000"
    assert run("paint", missing, "--nmesh", 16, "--out", tmp_path / "f.h5") == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "error" in err
    assert not (tmp_path / "f.h5").exists()


def test_a_different_dataset_is_not_overwritten(boxes, tmp_path, capsys):
    _, (train, val, _) = boxes
    out = tmp_path / "data"
    assert run("prep", train, "--split", "train", "--tile", 16, "--out", out) == 0
    before = (out / "manifest.json").read_text()
    assert run("prep", train, val, "--split", "train", "--tile", 16, "--out", out) == 2
    assert "different dataset" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before


def test_a_grid_the_tile_cannot_use(boxes, tmp_path, capsys):
    _, (train, _, _) = boxes
    assert run("prep", train, "--split", "train", "--tile", 20, "--out", tmp_path / "d") == 2
    err = capsys.readouterr().err
    assert str(train) in err and "tile sizes that would" in err
    assert not (tmp_path / "d").exists()


def test_paint_a_gadget_snapshot_with_the_cosmology_it_lacks(tmp_path, capsys):
    from test_readers import MISSING, write_gadget
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 50.0, (4000, 3)).astype(np.float32)
    vel = np.full((4000, 3), 100.0, np.float32)
    write_gadget(tmp_path / "snap_000", pos, vel / np.sqrt(0.5), np.arange(4000, dtype=np.uint32))
    assert run("paint", tmp_path / "snap_000", "--nmesh", 10, "--out", tmp_path / "f.h5") == 2
    assert "sigma8" in capsys.readouterr().err
    assert run("paint", tmp_path / "snap_000", "--nmesh", 10, "--cosmology", json.dumps(MISSING),
               "--out", tmp_path / "f.h5") == 0
    with h5py.File(tmp_path / "f.h5") as h5:
        np.testing.assert_allclose(h5["velocity"][...], 100.0, rtol=1e-5)
        assert json.loads(h5.attrs["cosmology"])["sigma8"] == MISSING["sigma8"]


def test_halos_then_halo_fields(tiny_simulation, tmp_path):
    _, snapshots = tiny_simulation
    assert run("halos", snapshots[-1], "--nmin", 10, "--out", tmp_path / "halos.h5") == 0
    assert run("halo-fields", snapshots[-1], "--catalog", tmp_path / "halos.h5", "--nmesh", 16,
               "--los", "x", "--weighting", "mass", "--nmin", 10, "--out", tmp_path / "f.h5") == 0
    with h5py.File(tmp_path / "f.h5") as h5:
        assert {f"halos_s_{i}" for i in range(4)} <= set(h5) and h5["linear_velocity_s"].shape == (16,) * 3 + (3,)


ROOT = Path(__file__).resolve().parents[1]


def velnet_process(*argv, mpi_ranks=0, timeout=180):
    """`velnet ARGV` in a fresh process (under `mpirun -n RANKS` if asked): (returncode, stderr).

    The process group is killed at `timeout`, which returns code None.
    """
    command = [sys.executable, "-m", "velnet.cli", *map(str, argv)]
    if mpi_ranks:
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            pytest.skip("no mpirun")
        command = [mpirun, "-n", str(mpi_ranks), *command]
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err


def test_halos_with_subhalos(tiny_simulation, tmp_path):
    """`velnet halos --subhalos`: satellites join the hosts, the same seed draws the same ones."""
    _, snapshots = tiny_simulation
    flags = ["--nmin", 2, "--subhalos", "han16-infall"]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert run("halos", snapshots[-1], *flags, "--subhalo-seed", seed, "--out", tmp_path / f"{name}.h5") == 0
    assert run("halos", snapshots[-1], "--nmin", 2, "--out", tmp_path / "hosts.h5") == 0
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b, h5py.File(tmp_path / "c.h5") as c, \
            h5py.File(tmp_path / "hosts.h5") as hosts:
        satellites = json.loads(a.attrs["attrs"])["satellites"]
        assert satellites > 0 and len(a["mass"]) == len(hosts["mass"]) + satellites
        np.testing.assert_array_equal(a["position"][...], b["position"][...])
        assert len(c["mass"]) != len(a["mass"]) or not np.array_equal(c["position"][...], a["position"][...])


def test_other_packages_logs_only_with_verbose(tiny_simulation, tmp_path):
    _, snapshots = tiny_simulation
    code, quiet = velnet_process("paint", snapshots[-1], "--nmesh", 16, "--out", tmp_path / "quiet.h5")
    assert code == 0, quiet
    assert "paint 16^3: 100%" in quiet  # the progress bar
    code, loud = velnet_process("-v", "paint", snapshots[-1], "--nmesh", 16, "--out", tmp_path / "loud.h5")
    assert code == 0, loud
    nbodykit = ("FileType", "BigFile(")  # nbodykit's snapshot reader
    assert any(name in loud for name in nbodykit), loud[-3000:]
    assert not any(name in quiet for name in nbodykit), quiet[-3000:]
    assert len(quiet.splitlines()) < len(loud.splitlines())


@pytest.mark.mpi
def test_an_error_on_one_rank_stops_every_rank(tiny_simulation, tmp_path):
    """Only rank 0 writes the fields file; if it cannot, rank 1 must not wait for it forever."""
    _, snapshots = tiny_simulation
    (tmp_path / "taken").write_text("a file, not a folder")
    out = tmp_path / "taken" / "fields.h5"
    code, err = velnet_process("paint", snapshots[-1], "--nmesh", 16, "--out", out, mpi_ranks=2, timeout=120)
    assert code is not None, "the run hung: the other rank was left waiting\n" + err[-3000:]
    assert code != 0
    assert "velnet paint: error (rank 0 of 2)" in err and str(out) in err and "cannot be written" in err

"""SimulationConfig, the fastpm driver, and the simulation check."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.simulate import SimulationConfig
from velnet.errors import VelnetInputError
from velnet.physics.cosmology import HALO2024, WU2021

ROOT = Path(__file__).resolve().parents[1]


def test_presets():
    wu = SimulationConfig.from_preset("wu2021", box_size=128.0)
    assert (wu.nparticles, wu.spacing, wu.output_redshifts, wu.cosmology) == (128, 1.0, (0.0,), WU2021)
    assert SimulationConfig.from_preset("wu2021").nparticles == 512
    halo = SimulationConfig.from_preset("halo2024", box_size=300.0)
    assert halo.cosmology == HALO2024 and halo.output_redshifts == (0.59,) and halo.nparticles == 512
    assert SimulationConfig.from_preset("wu2021", box_size=64.0, spacing=2.0).nparticles == 32


def test_config_round_trip_and_checks():
    config = SimulationConfig.from_preset("wu2021", box_size=64.0, output_redshifts=[0.0, 1.0], seed=3)
    assert config.output_redshifts == (1.0, 0.0)
    assert SimulationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    bad = [{"z_start": 0.5, "output_redshifts": (1.0,)}, {"nparticles": 1}, {"steps": 0},
           {"transfer": "BBKS"}, {"output_redshifts": (-0.5,)}, {"box_size": -1.0}]
    for override in bad:
        with pytest.raises(VelnetInputError, match="Received"):
            SimulationConfig.from_preset("wu2021", **override)
    with pytest.raises(VelnetInputError, match="unknown preset"):
        SimulationConfig.from_preset("millennium")


def test_tiny_simulation(tiny_simulation):
    from mpi4py import MPI

    from data_prep.check_simulation import initial_field, velocity_rows
    from data_prep.readers import read_particles
    from data_prep.simulate import nbodykit_cosmology

    config, snapshots = tiny_simulation
    assert [p.name for p in snapshots] == ["snapshot_z1.000", "snapshot_z0.000"]
    record = json.loads((snapshots[0].parent / "config.json").read_text())
    assert record["config"] == config.to_dict() and record["snapshots"] == [p.name for p in snapshots]
    assert record["versions"]["fastpm"] and record["timings_s"]["total"] > 0
    assert len(record["stages"]) == config.steps + 1 and 0.5 in record["stages"]
    assert not [p for p in snapshots[0].parent.iterdir() if p.name.startswith(".")]  # no leftovers

    cosmo = nbodykit_cosmology(config.cosmology)
    initial = initial_field(config, cosmo, MPI.COMM_SELF)
    rms = []
    for path, z in zip(snapshots, (1.0, 0.0)):
        p = read_particles(path)  # everything from the file's own metadata
        assert (p.box_size, p.cosmology, len(p)) == (64.0, config.cosmology, 32**3)
        assert p.redshift == pytest.approx(z, abs=1e-6)
        np.testing.assert_array_equal(np.sort(p.ids), np.arange(32**3))
        assert p.position.min() >= 0 and p.position.max() < 64.0
        rows = velocity_rows(p, config, cosmo, initial)
        for row in rows:  # non-linear velocities exceed the linear ones a little
            assert 0.9 < row["sim"] / row["lin_realisation"] < 1.5, row
        rms.append(np.mean([row["sim"] for row in rows]))
    c = config.cosmology
    growth = [c.growth_rate(a) * a * c.hubble(a) * c.growth(a) for a in (0.5, 1.0)]
    assert rms[1] / rms[0] == pytest.approx(growth[1] / growth[0], rel=0.15)


def test_failed_write_leaves_nothing(tmp_path):
    from mpi4py import MPI

    from data_prep.simulate import _shared_atomic_dir

    with pytest.raises(RuntimeError):
        with _shared_atomic_dir(tmp_path / "snapshot_z0.000", MPI.COMM_SELF) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_check_simulation_report(tmp_path, tiny_simulation):
    from data_prep.check_simulation import main

    config, snapshots = tiny_simulation
    out = tmp_path / "check.md"
    main(["--snapshot", str(snapshots[-1]), "--out", str(out)])
    text = out.read_text()
    assert "python -m data_prep.check_simulation --snapshot" in text
    rows = [[float(x) for x in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| 0.")]
    assert rows, text
    assert 0.7 < rows[0][7] < 1.2, text  # P_sim / P_initial: the largest scales grow linearly
    assert all(0.6 < r[6] < 1.3 for r in rows if r[0] > 0.3), text  # P_sim / P_halofit
    assert "| v_x |" in text and "n/a" not in text


@pytest.mark.mpi
def test_mpi_run_matches_serial(tmp_path, tiny_simulation):
    """The same config on 2 MPI ranks gives the same particles as the serial run."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun")
    config, snapshots = tiny_simulation
    script = (
        "import json, sys\n"
        "from data_prep.simulate import SimulationConfig, simulate\n"
        "from data_prep.readers import read_particles\n"
        "from data_prep.paint import paint_snapshot\n"
        "from nbodykit import CurrentMPIComm\n"
        "config = SimulationConfig.from_dict(json.loads(sys.argv[1]))\n"
        "paths = simulate(config, sys.argv[2])\n"
        "p = read_particles(paths[-1], comm=CurrentMPIComm.get())\n"
        "assert p.total == 32**3 and 0 < len(p) < 32**3\n"
        "paint_snapshot(paths[-1], 16, sys.argv[2] + '/fields.h5')\n"
    )
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([mpirun, "-n", "2", sys.executable, "-c", script,
                          json.dumps(config.to_dict()), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]

    from data_prep.paint import paint_snapshot
    from data_prep.readers import read_particles
    from velnet.fields.field import load_fields

    serial, parallel = (read_particles(p) for p in (snapshots[-1], tmp_path / snapshots[-1].name))
    a, b = np.argsort(serial.ids), np.argsort(parallel.ids)
    np.testing.assert_array_equal(serial.ids[a], parallel.ids[b])
    offset = (parallel.position[b] - serial.position[a] + 32.0) % 64.0 - 32.0
    assert np.abs(offset).max() < 1e-3
    np.testing.assert_allclose(parallel.velocity[b], serial.velocity[a], atol=0.05)
    fields_serial = load_fields(paint_snapshot(snapshots[-1], 16, tmp_path / "serial.h5"))
    fields_mpi = load_fields(tmp_path / "fields.h5")
    for name in ("density", "momentum", "velocity"):
        np.testing.assert_allclose(fields_mpi[name].value, fields_serial[name].value,
                                   rtol=1e-4, atol=1e-2)

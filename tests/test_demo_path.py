"""`make demo`'s path on a small box: a fresh fastpm box reconstructed with what ships in velnet (the
classical estimator, its power-preserving output, every shipped network) and evaluated, as
experiments/demo.py does at 160 Mpc/h."""
import json

import numpy as np
import pytest

from experiments import demo
from velnet.physics.classical import ClassicalEstimator
from velnet.shipped import model_path

SHIPPED = model_path()  # velnet's default, the shipped classical estimator


def test_the_shipped_classical_estimator_loads_for_2_mpc_h_cells():
    estimator = ClassicalEstimator.load(SHIPPED)
    assert estimator.cell_size == 2.0 and estimator.target_name == "velocity"
    assert SHIPPED.with_suffix(".power.json").is_file()  # its power-preserving correction ships beside it


@pytest.mark.slow
def test_the_demo_runs_on_a_small_box(tmp_path, monkeypatch, capsys):
    pytest.importorskip("fastpm")
    monkeypatch.setattr(demo, "BOX", 48.0)  # 48^3 particles at 1 Mpc/h spacing, 2 Mpc/h cells
    monkeypatch.setattr(demo, "NMESH", 24)
    demo.main(["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    reference = next(m for m in metrics["methods"] if m.startswith("classical ("))
    assert reference == "classical (linear + bernardeau + 2lpt-log)"
    networks = [f"U-net {name}" for name in demo.networks()]
    assert networks and set(networks) <= set(metrics["methods"])
    for method in [reference, "classical, power-preserving", *networks, "linear"]:
        assert np.isfinite(metrics["error_spectrum"][method]["attrs"]["rms_error_all"])
        assert method in printed
    # the classical estimator beats raw linear theory on a non-linear box
    assert (metrics["pixel"][reference]["abs_v_residual"]["mean"]
            < metrics["pixel"]["linear"]["abs_v_residual"]["mean"])
    assert "checks pass" in printed and str(tmp_path / "report" / "report.md") in printed

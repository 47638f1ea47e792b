"""The 2024 halo paper experiment end to end, at toy size: velnet commands only."""
import json

import pytest

from experiments import halo2024
from velnet.errors import VelnetInputError

NARROW = {"n1": 4, "n2": 4, "n3": 8, "dropout": 0.0, "init_kernel": 3}
DESIGNS = {"paper": {"preset": "halo-tiny", **NARROW}, "residual": {"preset": "halo-tiny-residual", **NARROW}}
TINY = {
    **halo2024.CONFIG,
    "box_size": 32.0, "particles": 32, "nmesh": 16,
    "train_seeds": [1], "val_seeds": [2], "test_seeds": [3],
    "density_models": DESIGNS, "velocity_models": DESIGNS,
    "size": 8, "batch_size": 2, "epochs_density": 1, "epochs_velocity": 1,
}


def test_config_overrides_are_checked(capsys):
    with pytest.raises(SystemExit):
        halo2024.main(["--out", "unused", "--set", "no_such_key=1"])
    assert "unknown CONFIG key" in capsys.readouterr().err
    assert set(halo2024.LARGE) <= set(halo2024.CONFIG)


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "epochs_density": 99}))
    with pytest.raises(VelnetInputError, match="config.json.*another configuration"):
        halo2024.run(tmp_path, TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


@pytest.mark.slow
def test_the_whole_chain_runs_and_resumes(tmp_path, caplog):
    pytest.importorskip("fastpm")
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="experiments"):
        report = halo2024.run(out, TINY)
    commands = [r.getMessage() for r in caplog.records if r.getMessage().startswith("$ velnet")]
    assert sum(c.startswith("$ velnet simulate --preset halo2024") for c in commands) == 3
    assert sum(c.startswith("$ velnet halo-fields") for c in commands) == 6  # 3 boxes x 2 weightings
    # per weighting: density with and without the linear density; velocity, momentum
    for task, count in (("halo-density", 4), ("halo-velocity", 4)):
        assert sum(c.startswith("$ velnet prep") and f"--task {task}" in c for c in commands) == count
    assert sum(c.startswith("$ velnet prep") and "--linear-input" in c for c in commands) == 2
    assert sum(c.startswith("$ velnet train") for c in commands) == 12  # 2 designs x 3 networks x 2 weightings
    assert sum(c.startswith("$ velnet evaluate") and "--report halo2024" in c for c in commands) == 1

    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics["schemes"] == ["number", "mass"] and metrics["boxes"] == 1
    assert metrics["rsd"]["nhalos"][0] > 10
    for scheme in ("number", "mass"):
        for target in ("velocity", "momentum"):
            manifest = json.loads((out / "data" / scheme / target / "manifest.json").read_text())
            assert manifest["input_shape"][-1] == 8 and manifest["input_vector_slices"] == [[5, 8]]
            assert manifest["task"] == "halo-velocity"
        designs = json.loads((out / "models" / scheme / "designs.json").read_text())
        assert set(designs) == {"density", "velocity", "momentum"} and set(designs.values()) <= set(DESIGNS)
        residual = json.loads((out / "data" / scheme / "density-linear" / "manifest.json").read_text())
        assert residual["input_shape"][-1] == 5 and residual["input_spec"]["scalar_field"] == "linear_density_s"
        choice = json.loads((out / "models" / scheme / "momentum-choice.json").read_text())
        assert choice["chosen"] in ("network", "product") and set(choice["C_r"]) == {"network", "product"}
        assert metrics["agreement"][scheme]["U-net"]["velocity"]["C_r"]["mean"] is not None
        assert set(metrics["training"][scheme]) >= {"density", "velocity"}
    assert "xi_density.png" in metrics["figures"] and "loss_curves.png" in metrics["figures"]

    stamps = {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file()}
    caplog.clear()
    with caplog.at_level("INFO", logger="experiments"):
        assert halo2024.run(out, TINY) == report
    assert not [r for r in caplog.records if r.getMessage().startswith(("$ velnet", "train"))]
    changed = [p for p, t in stamps.items() if p.exists() and p.stat().st_mtime != t and p.name != "config.json"]
    assert changed == []


"""The 2024 halo paper experiment end to end, at toy size: velnet commands only."""
import json

import pytest

from experiments import halo2024
from velnet.errors import VelnetInputError

NARROW = {"n1": 4, "n2": 4, "n3": 8, "dropout": 0.0, "init_kernel": 3}
DESIGNS = {"paper": {"model": {"preset": "halo-tiny", **NARROW}, "base": None},
           "residual-filter": {"model": {"preset": "halo-tiny-residual", **NARROW}, "base": "filter"}}
TINY = {
    **halo2024.CONFIG,
    "box_size": 32.0, "particles": 32, "nmesh": 16,
    "train_seeds": [1], "val_seeds": [2], "test_seeds": [3],
    "density_models": DESIGNS, "velocity_models": {"residual-filter": DESIGNS["residual-filter"]},
    "momentum": ["product", "network"], "weightings": ["number"],  # (mass weighting: test_halo_fields, pretrained)
    "size": 8, "batch_size": 2, "epochs_density": 1, "epochs_velocity": 1,
}


@pytest.fixture(autouse=True)
def box_cache(tmp_path, monkeypatch):
    """Simulations and halos go to a cache of the test's own (velnet simulate/halos --cache)."""
    monkeypatch.setenv("VELNET_CACHE", str(tmp_path / "cache"))


def test_config_overrides_are_checked(capsys):
    with pytest.raises(SystemExit):
        halo2024.main(["--out", "unused", "--set", "no_such_key=1"])
    assert "unknown CONFIG key" in capsys.readouterr().err


def test_a_folder_of_another_configuration_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "batch_size": 99}))
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
    assert sum(c.startswith("$ velnet simulate --preset halo2024") and "--cache" in c for c in commands) == 3
    assert sum(c.startswith("$ velnet halo-fields") for c in commands) == 3  # 3 boxes x 1 weighting
    # the filter and the reconstruction, fitted on the training boxes
    assert sum(c.startswith("$ velnet baseline") and "--task halo-velocity" in c for c in commands) == 2
    # the density without a base and over the filter (the best kept), velocity and momentum over the
    # filter, as the shipped pair (stage two's designs are chosen as stage one's)
    for task, count in (("halo-density", 2), ("halo-velocity", 2)):
        assert sum(c.startswith("$ velnet prep") and f"--task {task}" in c for c in commands) == count
    assert sum(c.startswith("$ velnet prep") and "--base" in c for c in commands) == 3
    # stage two's prep reads stage one's density from the files velnet predict wrote, and runs no model
    assert all("--predicted" in c for c in commands if c.startswith("$ velnet prep") and "halo-velocity" in c)
    assert sum(c.startswith("$ velnet train") for c in commands) == 4  # 2 densities + 2 stage twos
    evaluate = [c for c in commands if c.startswith("$ velnet evaluate") and "--report halo2024" in c]
    assert len(evaluate) == 1 and "--classical number=" in evaluate[0]

    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics["schemes"] == ["number"] and metrics["boxes"] == 1
    assert metrics["rsd"]["nhalos"][0] > 10
    assert metrics["reference"] == {"number": "filter"}
    for scheme in ("number",):
        for target in ("velocity", "momentum"):
            manifest = json.loads((out / "data" / scheme / f"{target}-filter" / "manifest.json").read_text())
            assert manifest["input_shape"][-1] == 8 and manifest["input_vector_slices"] == [[5, 8]]
            assert manifest["task"] == "halo-velocity" and "reference" in manifest["input_spec"]
        designs = json.loads((out / "models" / scheme / "designs.json").read_text())
        assert set(designs) == {"density", "velocity", "momentum"} and set(designs.values()) <= set(DESIGNS)
        residual = json.loads((out / "data" / scheme / "density-filter" / "manifest.json").read_text())
        assert residual["input_shape"][-1] == 5 and residual["input_spec"]["reference"]["target"] == "density"
        choice = json.loads((out / "models" / scheme / "momentum-choice.json").read_text())
        assert choice["chosen"] in ("network", "product") and set(choice["C_r"]) == {"network", "product"}
        agreement = metrics["agreement"][scheme]
        assert set(agreement) == {"U-net", "filter", "reconstruction", "linear"}
        assert agreement["U-net"]["velocity"]["C_r"]["mean"] is not None
        assert set(metrics["training"][scheme]) >= {"density", "velocity"}
    assert "xi_density.png" in metrics["figures"] and "loss_curves.png" in metrics["figures"]

    stamps = {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file()}
    caplog.clear()
    with caplog.at_level("INFO", logger="experiments"):
        assert halo2024.run(out, TINY) == report
    assert not [r for r in caplog.records if r.getMessage().startswith(("$ velnet", "train"))]
    changed = [p for p, t in stamps.items() if p.exists() and p.stat().st_mtime != t and p.name != "config.json"]
    assert changed == []


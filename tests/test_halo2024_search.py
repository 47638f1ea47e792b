"""The 2024 halo paper experiment with a search in its config: each network trained under keras-tuner.

In its own file so that it runs beside test_halo2024's whole chain (`make test` keeps a file's
tests in one process).
"""
import json

import pytest
from test_halo2024 import DESIGNS, TINY

from experiments import halo2024


@pytest.mark.slow
def test_a_config_with_a_search_trains_with_the_tuners_best(tmp_path, caplog, monkeypatch):
    pytest.importorskip("fastpm")
    monkeypatch.setenv("VELNET_CACHE", str(tmp_path / "cache"))
    config = {**TINY, "weightings": ["number"], "momentum": ["product"],
              "density_models": {"paper": DESIGNS["paper"]}, "velocity_models": {"paper": DESIGNS["paper"]},
              "search": {"max_trials": 2, "epochs": 1, "executions_per_trial": 2}}
    with caplog.at_level("INFO", logger="experiments"):
        halo2024.run(tmp_path, config)
    commands = [r.getMessage() for r in caplog.records if r.getMessage().startswith("$ velnet")]
    tunes = [c for c in commands if c.startswith("$ velnet tune")]
    assert len(tunes) == 2 and all("--executions-per-trial 2" in c and "--max-trials 2" in c for c in tunes)
    for name in ("density", "velocity"):
        best = json.loads((tmp_path / "tuning" / "number" / f"{name}-paper" / "best_config.json").read_text())
        record = tmp_path / "models" / "number" / f"{name}-paper" / "train_config.json"
        trained = json.loads(record.read_text())["config"]
        assert trained["learning_rate"] == best["learning_rate"] and trained["batch_size"] == best["batch_size"]
        assert {k: trained["model"][k] for k in ("n1", "n2", "n3", "dropout")} == \
            {k: best["model"][k] for k in ("n1", "n2", "n3", "dropout")}

"""The 2024 halo paper experiment with a search in its config: a network trained under keras-tuner's best.

In its own file so that it runs beside test_halo2024's whole chain (`make test` keeps a file's
tests in one process). It runs the experiment's step for one network (`train_network`: prep,
tune, train) on two boxes, not the whole chain, which test_halo2024 runs.
"""
import json

import pytest
from test_halo2024 import DESIGNS, TINY

from experiments import halo2024


@pytest.mark.slow
def test_a_config_with_a_search_trains_with_the_tuners_best(tmp_path, caplog, monkeypatch):
    pytest.importorskip("fastpm")
    monkeypatch.setenv("VELNET_CACHE", str(tmp_path / "cache"))
    config = {**TINY, "weightings": ["number"], "search": {"max_trials": 2, "epochs": 1, "executions_per_trial": 1}}
    files = {seed: halo2024.prepare_box(tmp_path, config, seed)["number"] for seed in (1, 2)}
    with caplog.at_level("INFO", logger="experiments"):
        model = halo2024.train_network(tmp_path, config, files, "number", "density", "paper", DESIGNS["paper"],
                                       "--task", "halo-density")
    commands = [r.getMessage() for r in caplog.records if r.getMessage().startswith("$ velnet")]
    tunes = [c for c in commands if c.startswith("$ velnet tune")]
    assert len(tunes) == 1 and "--executions-per-trial 1" in tunes[0] and "--max-trials 2" in tunes[0]
    best_file = tmp_path / "tuning" / "number" / "density-paper" / "best_config.json"
    trains = [c for c in commands if c.startswith("$ velnet train")]
    assert model.exists() and len(trains) == 1 and f"--config {best_file}" in trains[0]
    best = json.loads(best_file.read_text())
    trained = json.loads((model.parent / "train_config.json").read_text())["config"]
    assert trained["learning_rate"] == best["learning_rate"] and trained["batch_size"] == best["batch_size"]
    assert {k: trained["model"][k] for k in ("n1", "n2", "n3", "dropout")} == \
        {k: best["model"][k] for k in ("n1", "n2", "n3", "dropout")}

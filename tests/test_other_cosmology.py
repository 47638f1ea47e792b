"""The other-cosmology evaluation experiments/wu2021.py reports: a test box simulated in the 2024 halo
paper's WMAP-like cosmology, reconstructed with models trained in Wu et al.'s, and evaluated."""
import json
import logging

import numpy as np
import pytest

from experiments.wu2021 import PRETRAINED, evaluate_box, fields_for_seed
from velnet.fields.field import load_fields
from velnet.physics.cosmology import HALO2024, WU2021
from velnet.shipped import model_path

SHIPPED = model_path()  # velnet's default, the shipped classical estimator


@pytest.mark.slow
def test_models_of_one_cosmology_evaluated_on_a_box_of_another(tmp_path, caplog):
    pytest.importorskip("fastpm")
    config = {"box_size": 48.0, "nmesh": 24}  # 1 Mpc/h particle spacing, 2 Mpc/h cells, as the experiment's
    other = fields_for_seed(tmp_path, config, 100, "halo2024")
    box = load_fields(other, ["density"])["density"]
    assert box.cosmology == HALO2024 and box.cell_size == 2.0
    models = {"paper": {"velocity": PRETRAINED / "wu2021-tiny-paper" / "velocity.keras"}}
    with caplog.at_level(logging.WARNING, logger="velnet.prediction.predict"):
        report = evaluate_box(tmp_path, other, models, SHIPPED, "report-halo2024")
    assert "differs from the model's training cosmology" in caplog.text  # the user is told
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert metrics["config"]["cosmology"] == HALO2024.to_dict() != WU2021.to_dict()
    errors = {m: metrics["error_spectrum"][m]["attrs"]["rms_error_all"] for m in metrics["methods"]}
    assert {"U-net paper", "linear"} <= set(errors) and all(np.isfinite(e) for e in errors.values())
    # linear theory uses the box's own cosmology: its error stays below the field's rms
    assert errors["linear"] < metrics["error_spectrum"]["linear"]["attrs"]["rms_truth_all"]
    assert "U-net paper" in report.read_text()

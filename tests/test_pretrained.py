"""The Wu et al. models that ship in velnet/pretrained load, describe their inputs, and predict a box
(the halo models: test_halo_pretrained)."""
import json
from pathlib import Path

import numpy as np
import pytest

from velnet.fields.field import Field
from velnet.networks.builders import ModelMetadata
from velnet.physics.cosmology import WU2021
from velnet.prediction.predict import predict_box
from velnet.training.train import load_model

PRETRAINED = Path(__file__).resolve().parents[1] / "velnet" / "pretrained"
MODELS = sorted(PRETRAINED.glob("wu2021-*/*.keras"))


def test_a_paper_design_and_a_default_ship():
    families = {p.parent.name for p in MODELS}
    assert "wu2021-tiny-paper" in families and len(families) >= 2


@pytest.mark.parametrize("path", MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_model_predicts_a_box(path):
    model, meta = load_model(path)  # saved before tasks existed: a wu2021 model
    assert meta.target_name == path.stem and meta.task == "wu2021"
    spec = meta.input_spec
    assert model.input_shape[-1] == spec.channels and isinstance(meta, ModelMetadata)
    experiment = json.loads((path.parent / "experiment.json").read_text())
    (variant, settings), = experiment["variants"].items()
    assert spec.linear == settings["linear_input"] and spec.context == settings.get("context", 0)
    rng = np.random.default_rng(0)
    density = Field(np.exp(0.5 * rng.standard_normal((24,) * 3)).astype(np.float32), "density", 48.0, 0.0, WU2021)
    out = predict_box(model, meta, density)
    assert out.value.shape == (24, 24, 24, 3) and np.all(np.isfinite(out.value))
    assert 10 < np.std(out.value) < 3000  # km/s

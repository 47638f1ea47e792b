"""Whole-box prediction: periodic tiling, batched inference and stitching are exact."""
import keras
import numpy as np
import pytest

from velnet.cosmology import WU2021
from velnet.errors import VelnetInputError
from velnet.fields import Field
from velnet.predict import inference_tile, predict_box

MARGIN = 6


def central_copy_model():
    """A model whose output is the central region of its input, copied into 3 channels.

    Fully convolutional (any input size), so predicting a box with it must return
    ln(1 + density) of that box, wherever the tile edges fall.
    """
    x = keras.Input((None, None, None, 1))
    centre = keras.layers.Cropping3D(MARGIN)(x)
    return keras.Model(x, keras.layers.Concatenate()([centre, 2 * centre, -centre]))


def metadata(nmesh, box_size):
    return {"box_size": box_size, "nmesh": nmesh, "target_name": "velocity",
            "tile": {"input": 32, "target": 20, "margin": MARGIN},
            "normalisation": {"target_scale": 300.0}}


@pytest.mark.parametrize("nmesh,tile", [(40, 20), (40, 8), (36, None)])
def test_prediction_stitches_every_cell_exactly_once(nmesh, tile):
    rng = np.random.default_rng(nmesh)
    density = Field(np.exp(rng.standard_normal((nmesh,) * 3)).astype(np.float32), "density",
                    2.0 * nmesh, 0.0, WU2021)
    out = predict_box(central_copy_model(), metadata(80, 160.0), density, tile=tile, batch_size=3)
    expected = np.log1p(density.value)
    assert out.name == "velocity" and out.value.shape == (nmesh,) * 3 + (3,)
    np.testing.assert_allclose(out.value, np.stack([expected, 2 * expected, -expected], -1), rtol=1e-6)
    assert out.box_size == density.box_size and out.cosmology == density.cosmology


def test_inference_tile_is_the_largest_that_fits():
    assert inference_tile(80, MARGIN) == 40      # 40 + 12 = 52, divisible by 4
    assert inference_tile(36, MARGIN) == 36      # one tile: the whole box
    assert inference_tile(256, MARGIN) == 64
    with pytest.raises(VelnetInputError, match="30"):
        inference_tile(30, MARGIN)               # no divisor t of 30 has t + 12 divisible by 4


def test_a_box_of_another_cell_size_is_refused():
    density = Field(np.ones((40,) * 3, np.float32), "density", 120.0, 0.0, WU2021, {"path": "box.h5"})
    with pytest.raises(VelnetInputError, match="box.h5.*cell size 3 Mpc/h.*2 Mpc/h"):
        predict_box(central_copy_model(), metadata(80, 160.0), density)


def test_a_box_of_another_cosmology_is_predicted_with_a_warning(caplog):
    from velnet.cosmology import HALO2024
    density = Field(np.ones((40,) * 3, np.float32), "density", 80.0, 0.0, HALO2024, {"path": "wmap.h5"})
    meta = {**metadata(80, 160.0), "cosmology": WU2021.to_dict(), "redshift": 0.0}
    with caplog.at_level("WARNING", logger="velnet.predict"):
        out = predict_box(central_copy_model(), meta, density)
    assert out.cosmology == HALO2024
    assert "wmap.h5: cosmology" in caplog.text and "training cosmology" in caplog.text
    caplog.clear()
    same = Field(density.value, "density", 80.0, 0.0, WU2021)
    with caplog.at_level("WARNING", logger="velnet.predict"):
        predict_box(central_copy_model(), meta, same)
    assert "cosmology" not in caplog.text and "redshift" not in caplog.text

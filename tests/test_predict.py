"""Whole-box prediction: periodic tiling, batched inference and stitching are exact."""
import keras
import numpy as np
import pytest

from velnet.data.tiling import cover_origins, cover_owners, cover_starts, extract
from velnet.errors import VelnetInputError
from velnet.fields.field import Field
from velnet.networks.unet3d import physical_model, unet_config, unet_from_config
from velnet.physics.cosmology import WU2021
from velnet.prediction.predict import predict_box
from velnet.prediction.tiles import inference_tile

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
    """What `velnet train` stores with a model of ln(1 + density) tiles, 2 Mpc/h cells."""
    return {"box_size": box_size, "nmesh": nmesh, "redshift": 0.0, "cosmology": WU2021.to_dict(),
            "input_name": "ln_density", "target_name": "velocity", "input_shape": [32, 32, 32, 1],
            "target_shape": [20, 20, 20, 3], "input_vector_slices": [], "target_vector_slices": [[0, 3]],
            "tile": {"input": 32, "target": 20, "margin": MARGIN}, "normalisation": {"target_scale": 300.0},
            "model_config": {}}


@pytest.mark.parametrize("nmesh,tile", [(40, 20), (40, 8), (36, None), (25, None), (27, 8), (30, None)])
def test_prediction_stitches_every_cell_exactly_once(nmesh, tile):
    rng = np.random.default_rng(nmesh)
    density = Field(np.exp(rng.standard_normal((nmesh,) * 3)).astype(np.float32), "density",
                    2.0 * nmesh, 0.0, WU2021)
    out = predict_box(central_copy_model(), metadata(80, 160.0), density, tile=tile, batch_size=3)
    expected = np.log1p(density.value)
    assert out.name == "velocity" and out.value.shape == (nmesh,) * 3 + (3,)
    np.testing.assert_allclose(out.value, np.stack([expected, 2 * expected, -expected], -1), rtol=1e-6)
    assert out.box_size == density.box_size and out.cosmology == density.cosmology


def test_inference_tile_is_the_fewest_smallest_that_fit():
    assert inference_tile(80, MARGIN) == 40      # 2 per axis; 40 + 12 = 52, divisible by 4
    assert inference_tile(36, MARGIN) == 36      # one tile: the whole box
    assert inference_tile(256, MARGIN) == 64
    assert inference_tile(250, MARGIN) == 64     # 4 per axis, overlapping by 6 cells in all
    assert inference_tile(30, MARGIN) == 16      # 2 per axis; 15 + 12 is not divisible by 4
    assert inference_tile(25, MARGIN) == 16
    with pytest.raises(VelnetInputError, match="nmesh=2"):
        inference_tile(2, MARGIN)                # 1 + 12 and 2 + 12: not divisible by 4


def test_a_tile_that_does_not_fit_names_the_flag():
    density = Field(np.ones((25,) * 3, np.float32), "density", 50.0, 0.0, WU2021)
    with pytest.raises(VelnetInputError, match="--tile must be 1 to 25 cells.*--tile 15"):
        predict_box(central_copy_model(), metadata(80, 160.0), density, tile=15)


@pytest.mark.parametrize("nmesh", [25, 27])
def test_stitched_prediction_is_each_cells_most_central_tile_prediction(nmesh):
    """A U-net is not shift-invariant (stride 2), so overlapping tiles disagree where they
    overlap: the stitched box must hold, at each cell, the prediction of the tile that owns it."""
    keras.utils.set_random_seed(1)
    tiny = unet_config("tiny", input_shape=[None, None, None, 1], n_valid=MARGIN)
    model = physical_model(tiny, unet_from_config(tiny).get_weights(), 300.0, {})
    rng = np.random.default_rng(nmesh)
    density = Field(np.exp(0.5 * rng.standard_normal((nmesh,) * 3)).astype(np.float32), "density",
                    2.0 * nmesh, 0.0, WU2021)
    meta = {**metadata(80, 160.0), "model_config": tiny}
    out = predict_box(model, meta, density).value
    size = inference_tile(nmesh, MARGIN)
    origins = cover_origins(nmesh, size)
    windows = extract(np.log1p(density.value)[..., None], origins, size + 2 * MARGIN, -MARGIN)
    tiles = model.predict(windows, verbose=0)
    owner, offset = cover_owners(nmesh, size)
    k = len(cover_starts(nmesh, size))
    owned = 0
    for n, (i, j, m) in enumerate(np.ndindex(k, k, k)):
        cells = [np.flatnonzero(owner == a) for a in (i, j, m)]
        here = np.ix_(*cells)
        np.testing.assert_allclose(out[here], tiles[n][np.ix_(*[offset[c] for c in cells])], rtol=1e-5, atol=1e-3)
        owned += np.prod([len(c) for c in cells])
    assert owned == nmesh**3
    # the choice matters: where tiles (0, 0, 0) and (1, 0, 0) overlap along x, they disagree
    second = cover_starts(nmesh, size)[1]
    assert second < size and not np.allclose(tiles[0][second:], tiles[k * k][:size - second], rtol=1e-5, atol=1e-3)


def test_a_box_of_another_cell_size_is_refused():
    density = Field(np.ones((40,) * 3, np.float32), "density", 120.0, 0.0, WU2021, {"path": "box.h5"})
    with pytest.raises(VelnetInputError, match="box.h5.*cell size 3 Mpc/h.*2 Mpc/h"):
        predict_box(central_copy_model(), metadata(80, 160.0), density)


def test_a_box_of_another_cosmology_is_predicted_with_a_warning(caplog):
    from velnet.physics.cosmology import HALO2024
    density = Field(np.ones((40,) * 3, np.float32), "density", 80.0, 0.0, HALO2024, {"path": "wmap.h5"})
    meta = metadata(80, 160.0)
    with caplog.at_level("WARNING", logger="velnet.prediction.predict"):
        out = predict_box(central_copy_model(), meta, density)
    assert out.cosmology == HALO2024
    assert "wmap.h5: cosmology" in caplog.text and "training cosmology" in caplog.text
    caplog.clear()
    same = Field(density.value, "density", 80.0, 0.0, WU2021)
    with caplog.at_level("WARNING", logger="velnet.prediction.predict"):
        predict_box(central_copy_model(), meta, same)
    assert "cosmology" not in caplog.text and "redshift" not in caplog.text


def test_metadata_that_train_did_not_write_is_refused():
    density = Field(np.ones((40,) * 3, np.float32), "density", 80.0, 0.0, WU2021, {"path": "box.h5"})
    partial = {key: value for key, value in metadata(80, 160.0).items() if key != "tile"}
    with pytest.raises(VelnetInputError, match="box.h5.*lacks \\['tile'\\]"):
        predict_box(central_copy_model(), partial, density)
    with pytest.raises(VelnetInputError, match="box.h5.*task must be one of"):
        predict_box(central_copy_model(), {**metadata(80, 160.0), "task": "wu2022"}, density)

"""The Wu et al. 2021 U-net: shapes, parameter count, configs, the km/s layer, `.keras` reload."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from velnet.networks.unet3d import (
    PRESETS,
    ToPhysical,
    physical_model,
    unet3d,
    unet_config,
    unet_from_config,
)

TEXT_LAYOUT_PARAMETERS = 27_016_195
"""Keras's count for the layout of section 3 (reference-numbers.md); the paper states 48,690,307."""


def hand_count(widths, n_valid, in_channels=1, out_channels=3):
    """Parameters of the text layout, summed layer by layer: 3^3 kernels, biases, 4 BN vectors."""
    def conv(cin, cout, batch_norm=True):
        return 27 * cin * cout + cout + (4 * cout if batch_norm else 0)

    *levels, bottom = widths
    total, c = 0, in_channels
    for w in levels:  # two 'same' convolutions and a stride-2 one per level
        total += conv(c, w) + conv(w, w) + conv(w, w)
        c = w
    total += conv(c, bottom) + conv(bottom, bottom)
    c = bottom
    for i in reversed(range(len(levels))):
        w = levels[i]
        total += conv(c, w)  # transposed convolution, then concatenation with the skip
        c = 2 * w
        if i > 0:
            total += conv(c, w)
            c = w
    for _ in range(n_valid):
        total += conv(c, levels[0])
        c = levels[0]
    return total + conv(c, out_channels, batch_norm=False)


def tiny(**overrides):
    return unet_from_config(unet_config("tiny", **overrides))


@pytest.mark.parametrize("size", [32, 44])
def test_tiny_maps_tiles_to_tiles_twelve_cells_smaller(size):
    model = tiny(input_shape=(size, size, size, 1))
    assert model.output_shape == (None, size - 12, size - 12, size - 12, 3)
    x = np.random.default_rng(0).standard_normal((2, size, size, size, 1)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, size - 12, size - 12, size - 12, 3)


def test_any_size_model_agrees_with_the_fixed_size_one():
    fixed = tiny()
    free = tiny(input_shape=(None, None, None, 1))
    free.set_weights(fixed.get_weights())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 32, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(free.predict(x, verbose=0), fixed.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    big = rng.standard_normal((1, 36, 40, 44, 1)).astype("float32")
    assert free.predict(big, verbose=0).shape == (1, 24, 28, 32, 3)


def test_parameter_count_of_the_text_layout():
    model = unet_from_config(unet_config("wu2021-text"))
    expected = hand_count((128, 256, 512), 6)
    print(f"wu2021-text layout: {model.count_params():,} parameters in Keras, "
          f"{expected:,} by hand; the paper states 48,690,307")
    assert expected == TEXT_LAYOUT_PARAMETERS
    assert model.count_params() == expected


def test_parameter_count_of_tiny_and_other_shapes():
    assert tiny().count_params() == hand_count((16, 32, 64), 6)
    model = unet3d(input_shape=(24, 24, 24, 2), out_channels=1, widths=(8, 12, 16, 20), n_valid=3)
    assert model.output_shape == (None, 18, 18, 18, 1)
    assert model.count_params() == hand_count((8, 12, 16, 20), 3, in_channels=2, out_channels=1)


def test_crop_layout_crops_each_transposed_convolution_on_both_sides():
    """Section 3 to the letter: each deconvolution, then a cropping layer (the same on both
    sides), then the concatenation; the parameters are those of the 'same' layout."""
    model = unet_from_config(unet_config("tiny-crop"))
    shape = {layer.name: tuple(layer.output.shape[1:4]) for layer in model.layers}
    assert shape["dec2_up_conv"] == (18,) * 3 and shape["dec2_up_crop"] == (16,) * 3
    assert shape["dec1_up_conv"] == (34,) * 3 and shape["dec1_up_crop"] == (32,) * 3
    for i in (1, 2):
        assert model.get_layer(f"dec{i}_up_crop").cropping == ((1, 1),) * 3
        names = [layer.name for layer in model.layers]
        assert names.index(f"dec{i}_up_conv") < names.index(f"dec{i}_up_crop") < names.index(f"dec{i}_up_bn") \
            < names.index(f"dec{i}_concat")
    assert "crop" not in " ".join(layer.name for layer in tiny().layers)
    assert model.output_shape == (None, 20, 20, 20, 3)
    assert model.count_params() == tiny().count_params() == hand_count((16, 32, 64), 6)
    free = unet_from_config(unet_config("tiny-crop", input_shape=(None, None, None, 1)))
    assert free.predict(np.zeros((1, 28, 36, 44, 1), "float32"), verbose=0).shape == (1, 16, 24, 32, 3)
    with pytest.raises(ValueError, match="Received: upsampling='bilinear'"):
        unet3d(upsampling="bilinear")


def test_parameter_count_of_the_crop_layout_is_the_texts():
    assert unet_from_config(unet_config("wu2021-text-crop")).count_params() == TEXT_LAYOUT_PARAMETERS


def test_every_layer_is_named_by_its_role():
    names = [layer.name for layer in tiny().layers]
    assert len(set(names)) == len(names)
    role = re.compile(r"(ln_density|output|(enc\d_(conv\d|down)|bottom_conv\d|dec\d_(up|conv)|valid\d+)"
                      r"_(conv|bn|relu)|dec\d_concat)$")
    assert [n for n in names if not role.match(n)] == []


@pytest.mark.parametrize("kwargs", [
    dict(input_shape=(30, 30, 30, 1)),          # not divisible by 4
    dict(input_shape=(12, 12, 12, 1)),          # not larger than 2 * n_valid
    dict(input_shape=(32, 32, 32)),             # no channel axis
    dict(widths=(128,)),                        # no bottom level
    dict(widths=(128, 0, 512)),
    dict(width_multiplier=0),
    dict(n_valid=-1),
    dict(out_channels=0),
])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError, match=r"Received: "):
        unet3d(**kwargs)


def test_unknown_preset_and_config_keys_are_refused():
    with pytest.raises(ValueError, match="Received: preset=wu2022"):
        unet_config("wu2022")
    with pytest.raises(ValueError, match=r"Received: \['depth'\]"):
        unet_from_config({"depth": 3})


def test_config_round_trips():
    config = unet_config("tiny", n_valid=4, input_shape=(24, 24, 24, 1))
    assert set(config) == {"input_shape", "out_channels", "widths", "width_multiplier", "n_valid",
                           "residual_channels", "upsampling", "name"}
    model = unet_from_config(json.loads(json.dumps(config)))
    assert model.output_shape == (None, 16, 16, 16, 3)
    assert model.get_config() == unet_from_config(config).get_config()
    clone = keras.Model.from_config(model.get_config())
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    assert clone.count_params() == model.count_params()
    assert all(unet_config(name) for name in PRESETS)


def test_to_physical_serialisation_round_trip():
    layer = ToPhysical(412.5, {"target_name": "momentum", "tile": {"input": 32}}, name="to_physical")
    serialised = keras.saving.serialize_keras_object(layer)
    assert serialised["registered_name"] == "velnet>ToPhysical"
    clone = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialised)))
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(layer.get_config(), sort_keys=True)
    assert clone.metadata == {"target_name": "momentum", "tile": {"input": 32}}
    np.testing.assert_allclose(clone(np.ones((1, 2), "float32")), [[412.5, 412.5]])


def test_keras_file_reloads_with_identical_km_s_predictions(tmp_path):
    config = unet_config("tiny")
    network = unet_from_config(config)
    model = physical_model(config, network.get_weights(), 300.0, {"target_name": "velocity"})
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)  # no custom_objects: ToPhysical is registered
    x = np.random.default_rng(2).standard_normal((2, 32, 32, 32, 1)).astype("float32")
    km_s = reloaded.predict(x, verbose=0)
    np.testing.assert_array_equal(km_s, model.predict(x, verbose=0))
    np.testing.assert_allclose(km_s, 300.0 * network.predict(x, verbose=0), rtol=1e-5, atol=1e-4)
    assert reloaded.get_layer("to_physical").metadata == {"target_name": "velocity"}
    assert reloaded.predict(x[:, :28, :28, :28], verbose=0).shape == (2, 16, 16, 16, 3)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_backends_build_and_run_it(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    code = ("import numpy as np; from velnet.networks.unet3d import unet_config, unet_from_config; "
            "m = unet_from_config(unet_config('tiny')); "
            "print(m.count_params(), m.predict(np.zeros((1, 32, 32, 32, 1), 'float32'), verbose=0).shape)")
    env = {**os.environ, "KERAS_BACKEND": backend}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-6:] == [str(hand_count((16, 32, 64), 6)), "(1,", "20,", "20,", "20,", "3)"]

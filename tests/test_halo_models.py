"""The halo-paper U-nets: shapes, periodic equivariance, block order, configs, reload, the head."""
import json

import keras
import numpy as np
import pytest

from velnet.networks.halo_unets import (
    DIRECTION,
    MAGNITUDE,
    PeriodicPad3D,
    Recombine,
    decompose,
    halo_unet,
    halo_velocity_unet,
    recombine,
    unit_vector,
)

WIDTHS = dict(n1=4, n2=6, n3=8, init_kernel=5)
"""Tiny widths for a 2-core CPU."""


def random_box(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.fixture(scope="module")
def density_net():
    return halo_unet(4, 1, dropout=0.2, **WIDTHS)


@pytest.fixture(scope="module")
def velocity_net():
    return halo_velocity_unet(8, **WIDTHS)


def hand_count(cin, cout, n1, n2, n3, init_kernel):
    """Parameters of the `halo_unet` layout, layer by layer: kernels, biases, 4 BN vectors."""
    def conv(a, b, k=3, batch_norm=True):
        return k ** 3 * a * b + b + (4 * b if batch_norm else 0)

    return (conv(cin, n1, init_kernel) + conv(n1, n1) + conv(n1, n2) + conv(n2, n2) + conv(n2, n3)
            + conv(n3, n3) + conv(n3, n2, 2) + conv(2 * n2, n2) + conv(n2, n1, 2)
            + conv(2 * n1, n1) + conv(n1, cout, 1, batch_norm=False))


def test_table_1_channels_and_any_size_divisible_by_four(density_net, velocity_net):
    for shape in [(1, 16, 16, 16, 4), (2, 8, 12, 20, 4)]:
        assert density_net.predict(random_box(shape), verbose=0).shape == (*shape[:4], 1)
    out = velocity_net.predict(random_box((1, 12, 12, 12, 8)), verbose=0)
    assert out.shape == (1, 12, 12, 12, 4)


def test_parameter_count_follows_the_layout(density_net, velocity_net):
    assert density_net.count_params() == hand_count(4, 1, **WIDTHS)
    assert velocity_net.count_params() == hand_count(8, 1, **WIDTHS) + hand_count(8, 3, **WIDTHS)


def test_periodic_roll_by_the_total_stride_rolls_the_output(density_net):
    x = random_box((1, 16, 16, 16, 4))
    y = density_net.predict(x, verbose=0)
    shift = (4, 8, -12)
    rolled = density_net.predict(np.roll(x, shift, axis=(1, 2, 3)), verbose=0)
    np.testing.assert_allclose(rolled, np.roll(y, shift, axis=(1, 2, 3)), atol=1e-5)
    # A shift by less than the total stride is not a symmetry of the strided network.
    off_grid = density_net.predict(np.roll(x, 2, axis=1), verbose=0)
    assert np.abs(off_grid - np.roll(y, 2, axis=1)).max() > 1e-3


def test_box_edges_are_no_worse_than_the_middle(velocity_net):
    """A periodic box repeated 2 x 2 x 2 times gives the box's own output in every copy."""
    x = random_box((1, 8, 8, 8, 8), seed=1)
    y = velocity_net.predict(x, verbose=0)
    tiled = velocity_net.predict(np.tile(x, (1, 2, 2, 2, 1)), verbose=0)
    np.testing.assert_allclose(tiled, np.tile(y, (1, 2, 2, 2, 1)), atol=1e-5)


def test_final_block_has_dropout_between_convolution_and_batch_norm(density_net):
    layer = density_net.get_layer
    assert layer("final_dropout").input is layer("final_conv").output
    assert layer("final_bn").input is layer("final_dropout").output
    assert layer("final_relu").input is layer("final_bn").output
    assert layer("output").input is layer("final_relu").output
    assert layer("final_dropout").rate == pytest.approx(0.2)
    x = random_box((1, 8, 8, 8, 4))
    a, b = (keras.ops.convert_to_numpy(density_net(x, training=True)) for _ in range(2))
    assert np.abs(a - b).max() > 1e-4  # dropout draws differ in training
    np.testing.assert_array_equal(density_net.predict(x, verbose=0),
                                  density_net.predict(x, verbose=0))


def test_every_convolution_but_the_output_is_followed_by_batch_norm_and_relu(velocity_net):
    kinds = (keras.layers.Conv3D, keras.layers.Conv3DTranspose)
    convs = [layer for layer in velocity_net.layers if isinstance(layer, kinds)]
    assert len(convs) == 2 * 11
    for conv in convs:
        if conv.name.endswith("output"):
            assert conv.kernel_size == (1, 1, 1)
            continue
        prefix = conv.name[: -len("_conv")]
        assert isinstance(velocity_net.get_layer(f"{prefix}_bn"), keras.layers.BatchNormalization)
        assert isinstance(velocity_net.get_layer(f"{prefix}_relu"), keras.layers.ReLU)


def test_velocity_head_gives_unit_directions_and_non_negative_magnitudes(velocity_net):
    out = velocity_net.predict(random_box((1, 12, 12, 12, 8), seed=2), verbose=0)
    norms = np.linalg.norm(out[..., DIRECTION], axis=-1)
    # Where the direction U-net's raw output is exactly 0 (all its last ReLUs off) it stays 0.
    np.testing.assert_allclose(norms[norms > 0], 1, atol=1e-5)
    assert np.mean(norms > 0) > 0.5
    assert out[..., MAGNITUDE].min() > 0


@pytest.mark.parametrize("kwargs, key", [
    (dict(n1=0), "n1"), (dict(n2=2.5), "n2"), (dict(n3=True), "n3"), (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"), (dict(init_kernel=4), "init_kernel"),
    (dict(input_channels=0), "input_channels"), (dict(output_channels=None), "output_channels"),
])
def test_invalid_arguments_raise(kwargs, key):
    with pytest.raises(ValueError, match=f"Received: {key}="):
        halo_unet(**{**WIDTHS, **kwargs})


def test_periodic_pad_matches_numpy_wrap_and_round_trips():
    x = random_box((2, 5, 6, 7, 3))
    layer = PeriodicPad3D((1, 0, 3))
    expected = np.pad(x, [(0, 0), (1, 1), (0, 0), (3, 3), (0, 0)], mode="wrap")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), expected)
    assert layer.compute_output_shape((None, 5, None, 7, 3)) == (None, 7, None, 13, 3)
    config = json.dumps(keras.saving.serialize_keras_object(layer))
    again = keras.saving.deserialize_keras_object(json.loads(config))
    assert isinstance(again, PeriodicPad3D) and again.padding == (1, 0, 3)
    assert json.dumps(keras.saving.serialize_keras_object(again)) == config
    with pytest.raises(ValueError, match="Received: padding="):
        PeriodicPad3D((1, 2))


def test_config_round_trip_and_keras_reload(velocity_net, tmp_path):
    x = random_box((1, 8, 8, 8, 8), seed=3)
    expected = velocity_net.predict(x, verbose=0)
    rebuilt = keras.Model.from_config(json.loads(json.dumps(velocity_net.get_config())))
    rebuilt.set_weights(velocity_net.get_weights())
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), expected, atol=1e-6)
    path = tmp_path / "velocity.keras"
    velocity_net.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    assert [x.name for x in reloaded.layers] == [x.name for x in velocity_net.layers]


def test_recombine_inverts_decompose_including_zero_vectors():
    v = random_box((4, 6, 6, 6, 3), seed=4) * 300  # km/s
    v[0, 0, 0, 0] = 0
    v[1, 2, 3] = 0
    magnitude, direction = decompose(v)
    magnitude, direction = (keras.ops.convert_to_numpy(t) for t in (magnitude, direction))
    assert magnitude.shape == (4, 6, 6, 6, 1) and direction.shape == v.shape
    np.testing.assert_allclose(magnitude[..., 0], np.linalg.norm(v, axis=-1), rtol=1e-6)
    norms = np.linalg.norm(direction, axis=-1)
    np.testing.assert_allclose(norms[magnitude[..., 0] > 0], 1, rtol=1e-6)
    assert np.all(direction[v == 0] == 0) and np.isfinite(direction).all()
    back = keras.ops.convert_to_numpy(recombine(magnitude, direction))
    np.testing.assert_allclose(back, v, rtol=1e-6, atol=1e-4)  # 1e-4 km/s of 300 km/s
    assert np.all(back[1, 2, 3] == 0)
    stacked = np.concatenate([direction, magnitude], axis=-1)  # a stage-two output
    back = keras.ops.convert_to_numpy(Recombine()(stacked))
    np.testing.assert_allclose(back, v, rtol=1e-6, atol=1e-4)


def test_unit_vector_is_finite_at_zero():
    vectors = np.array([[0, 0, 0], [3, 0, 4], [0, -2, 0]], "float32")
    out = keras.ops.convert_to_numpy(unit_vector(vectors))
    np.testing.assert_allclose(out, [[0, 0, 0], [0.6, 0, 0.8], [0, -1, 0]], atol=1e-7)

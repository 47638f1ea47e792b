"""Linear-theory input channels from the whole box, context windows, and the residual U-net."""
import dataclasses
import json

import keras
import numpy as np
import pytest

from data_prep.make_shards import make_shards
from velnet.data.datasets import ShardDataset, load_split, read_split_arrays
from velnet.data.inputs import InputSpec, box_inputs
from velnet.data.manifest import read_manifest
from velnet.data.tiling import OH_ELEMENTS, extract, oh_transform
from velnet.data.windows import InputWindows
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, load_fields, save_fields
from velnet.networks.unet3d import (
    ChannelSlice,
    physical_model,
    unet3d,
    unet_config,
    unet_from_config,
)
from velnet.physics.classical import ClassicalEstimator, absolute_kedges
from velnet.physics.cosmology import WU2021
from velnet.physics.linear import linear_momentum, linear_velocity
from velnet.prediction.predict import predict_box, predict_file
from velnet.tasks import TARGETS
from velnet.training.train import load_model, train

VELOCITY = TARGETS["velocity"]
NMESH, BOX, R = 24, 48.0, 2.0
"""Test boxes: 24^3 cells of 2 Mpc/h, linear theory smoothed with a 2 Mpc/h Gaussian."""
TILES = dict(tile=4, margin=2)
"""8^3 input windows around 4^3 targets, for the tiny U-net trimmed to n_valid = 2."""


def density_field(seed):
    """A log-normal rho/rho_mean at z = 0 in the Wu et al. 2021 cosmology."""
    rng = np.random.default_rng(seed)
    value = np.exp(0.5 * rng.standard_normal((NMESH,) * 3)).astype(np.float32)
    return Field(value, "density", BOX, 0.0, WU2021)


def write_box(path, seed, local=150.0):
    """A fields file whose velocity is linear theory (R) plus `local` km/s x grad ln(1 + density).

    The extra term is what a network seeing 8^3 windows can learn; with `local=0` the
    velocity is exactly the linear-theory input.
    """
    density = density_field(seed)
    ln = np.log1p(density.value)
    grad = np.stack([np.roll(ln, -1, a) - np.roll(ln, 1, a) for a in range(3)], -1)
    velocity = density.with_value((linear_velocity(density, R).value + local * grad).astype(np.float32),
                                  "velocity")
    save_fields(path, [density, velocity, linear_momentum(density, velocity)])
    return path, density


@pytest.mark.parametrize("target", ["velocity", "momentum"])
def test_linear_channels_come_from_the_whole_box(tmp_path, target):
    path, density = write_box(tmp_path / "box.h5", seed=0)
    manifest = make_shards([path], tmp_path / "ds", target=target, split="train",
                           inputs=InputSpec(linear=True, smoothing=R), **TILES)
    assert manifest.input_shape == [8, 8, 8, 4] and manifest.input_vector_slices == [[1, 4]]
    stored = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert stored["input_spec"] == {"linear": True, "smoothing": R} == manifest.input_spec.to_dict()
    assert InputSpec.from_dict(stored) == manifest.input_spec
    assert manifest.provenance["config"]["input_spec"] == stored["input_spec"]
    scale = manifest.normalisation["target_scale"]

    x, _, origins, _ = read_split_arrays(read_manifest(tmp_path / "ds"), "train")
    linear = linear_velocity(density, R)
    if target == "momentum":
        linear = linear_momentum(density, linear)
    whole = linear.value / scale
    np.testing.assert_array_equal(x[..., 0], extract(np.log1p(density.value), origins, 8, -2))
    np.testing.assert_allclose(x[..., 1:], extract(whole, origins, 8, -2), rtol=1e-6, atol=1e-6 * np.abs(whole).max())

    # linear theory of each 8^3 window alone (as if periodic) is a different field
    windows = extract(density.value, origins, 8, -2)
    alone = np.stack([linear_velocity(Field(w, "density", 16.0, 0.0, WU2021), R).value for w in windows])
    if target == "momentum":
        alone = alone * windows[..., None]
    diff = np.sqrt(np.mean((alone / scale - x[..., 1:]) ** 2))
    assert diff > 0.3 * np.sqrt(np.mean(x[..., 1:] ** 2))


def test_default_inputs_are_unchanged(tmp_path):
    path, _ = write_box(tmp_path / "box.h5", seed=0)
    manifest = make_shards([path], tmp_path / "ds", split="train", **TILES)
    assert manifest.input_shape == [8, 8, 8, 1] and manifest.input_vector_slices == []
    assert manifest.input_spec == InputSpec() and manifest.input_spec.to_dict() == {"linear": False}
    assert "input_spec" not in manifest.provenance["config"]  # old datasets still match
    assert InputSpec.from_dict({}) == InputSpec()
    with pytest.raises(VelnetInputError, match="--linear-input"):
        InputSpec(smoothing=2.0)
    with pytest.raises(VelnetInputError, match="smoothing=-1"):
        InputSpec(True, -1.0)
    with pytest.raises(VelnetInputError, match="model.keras.*input_spec"):
        InputSpec.from_dict({"input_spec": {"linear": True, "R": 2}}, "model.keras")


def test_linear_theory_is_equivariant_under_oh():
    """Rotating (ln rho, v_L) as scalar + vector gives the inputs of the rotated box."""
    density = density_field(1)
    spec = InputSpec(True, R)
    inputs = box_inputs({"density": density}, spec, VELOCITY, 300.0)
    for element in range(0, 48, 5):
        rotated = density.with_value(oh_transform(density.value[..., None], element)[..., 0])
        np.testing.assert_allclose(box_inputs({"density": rotated}, spec, VELOCITY, 300.0),
                                   oh_transform(inputs, element, [[1, 4]]), rtol=0, atol=1e-5,
                                   err_msg=f"element {OH_ELEMENTS[element]}")


def test_oh_augmentation_keeps_density_linear_theory_and_target_consistent(tmp_path):
    pytest.importorskip("tensorflow")
    path, _ = write_box(tmp_path / "box.h5", seed=2, local=0.0)  # velocity = v_L exactly
    manifest = make_shards([path], tmp_path / "ds", split="train", inputs=InputSpec(True, R), **TILES)
    xs, ys, _, _ = read_split_arrays(manifest, "train")
    np.testing.assert_array_equal(xs[:, 2:6, 2:6, 2:6, 1:], ys)
    lookup = {oh_transform(a[..., :1], k).tobytes(): (i, k) for i, a in enumerate(xs) for k in range(48)}
    py = ShardDataset(manifest, "train", batch_size=64, augment=True)
    tf_data = load_split(manifest, "train", batch_size=64, augment=True)
    for batches in ([tuple(map(np.asarray, b)) for b in tf_data], [py[i] for i in range(len(py))]):
        elements = set()
        for a, b in ((a, b) for x, y in batches for a, b in zip(x, y)):
            i, k = lookup[a[..., :1].tobytes()]
            np.testing.assert_array_equal(a, oh_transform(xs[i], k, [[1, 4]]))
            np.testing.assert_array_equal(b, oh_transform(ys[i], k, [[0, 3]]))
            np.testing.assert_array_equal(a[2:6, 2:6, 2:6, 1:], b)  # still v_L of the same tile
            elements.add(k)
        assert len(elements) > 40  # of 48, over 216 tiles


def tiny_residual(channels=4, **overrides):
    return unet_config("tiny-residual", input_shape=[8, 8, 8, channels], n_valid=2, **overrides)


def test_residual_model_config_round_trips_and_reloads(tmp_path):
    config = tiny_residual()
    assert config["residual_channels"] == [1, 4]
    model = unet_from_config(json.loads(json.dumps(config)))
    assert model.layers[-1].name == "residual_add"
    assert {"residual_crop", "residual_channels"} <= {layer.name for layer in model.layers}
    clone = keras.Model.from_config(model.get_config())
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 8, 4)).astype("float32")
    np.testing.assert_array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))
    assert keras.saving.serialize_keras_object(ChannelSlice(1, 4))["registered_name"] == "velnet>ChannelSlice"

    km_s = physical_model(config, model.get_weights(), 250.0, {"target_name": "velocity"})
    km_s.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")  # no custom_objects: the layers are registered
    big = np.random.default_rng(1).standard_normal((1, 16, 12, 20, 4)).astype("float32")
    assert reloaded.predict(big, verbose=0).shape == (1, 12, 8, 16, 3)
    np.testing.assert_array_equal(reloaded.predict(big, verbose=0), km_s.predict(big, verbose=0))
    np.testing.assert_allclose(km_s.predict(x, verbose=0), 250.0 * model.predict(x, verbose=0), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kwargs", [
    dict(input_shape=(32, 32, 32, 1), residual_channels=(1, 4)),   # no such input channels
    dict(input_shape=(32, 32, 32, 4), residual_channels=(1, 3)),   # not out_channels wide
    dict(input_shape=(32, 32, 32, 4), residual_channels=4),
])
def test_bad_residual_channels_are_refused(kwargs):
    with pytest.raises(ValueError, match="Received: residual_channels="):
        unet3d(**kwargs)


def classical_base():
    """A classical estimator (linear theory + Bernardeau, weights varying with |k|) for 2 Mpc/h cells."""
    kedges = absolute_kedges(BOX / NMESH, 8)
    weights = np.stack([np.linspace(1.0, 0.4, 8), np.linspace(0.0, 0.5, 8)], axis=1)
    return ClassicalEstimator([{"name": "linear", "smoothing": 0.0}, {"name": "bernardeau", "smoothing": 0.0}],
                              kedges, weights, BOX / NMESH, np.full(8, 100.0))


@pytest.mark.parametrize("target", ["velocity", "momentum"])
@pytest.mark.parametrize("base", [None, "classical"])
def test_residual_model_with_zero_network_gives_its_base(tmp_path, target, base):
    """A residual U-net whose output layer is zero returns linear theory, or the classical
    estimator it was given as base (for momentum, (rho/rho_mean) times it)."""
    density = density_field(3)
    scale = 321.0
    config = tiny_residual()
    network = unet_from_config(config)
    layer = network.get_layer("output")
    layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    spec = InputSpec(True, R) if base is None else InputSpec(True, 0.0, base=classical_base())
    metadata = {"input_spec": spec.to_dict(), "target_name": target, "input_name": "ln_density",
                "input_shape": [8, 8, 8, 4], "target_shape": [4, 4, 4, 3], "input_vector_slices": [[1, 4]],
                "target_vector_slices": [[0, 3]], "cosmology": WU2021.to_dict(), "redshift": 0.0,
                "normalisation": {"target_scale": scale}, "tile": {"input": 8, "target": 4, "margin": 2},
                "box_size": BOX, "nmesh": NMESH, "model_config": config}
    physical_model(config, network.get_weights(), scale, metadata).save(tmp_path / "model.keras")
    model, metadata = load_model(tmp_path / "model.keras")
    expected = linear_velocity(density, R) if base is None else classical_base().velocity(density)
    if target == "momentum":
        expected = linear_momentum(density, expected)
    for tile in (None, 4):  # the largest tile that fits (24), and the training tile
        predicted = predict_box(model, metadata, density, tile=tile, batch_size=72)
        assert predicted.name == target
        np.testing.assert_allclose(predicted.value, expected.value, rtol=1e-5, atol=1e-4)

    if target == "velocity":  # a velocity model alone also gives (rho/rho_mean) v
        save_fields(tmp_path / "box.h5", [density])
        predict_file([tmp_path / "model.keras"], tmp_path / "box.h5", tmp_path / "pred.h5")
        written = load_fields(tmp_path / "pred.h5", ["velocity", "momentum"])
        np.testing.assert_allclose(written["momentum"].value, density.value[..., None] * written["velocity"].value,
                                   rtol=1e-6)

    plain = dataclasses.replace(metadata, input_spec=InputSpec())
    with pytest.raises(VelnetInputError, match="1 input channel.*takes 4"):
        predict_box(model, plain, density)


def test_a_classical_base_replaces_the_linear_channels_in_prep(tmp_path):
    path, density = write_box(tmp_path / "box.h5", seed=4)
    manifest = make_shards([path], tmp_path / "ds", fractions=(0.5, 0.25, 0.25),
                           inputs=InputSpec(True, base=classical_base()), **TILES)
    assert manifest.input_spec.base == classical_base().to_dict()
    inputs = box_inputs({"density": density}, manifest.input_spec, VELOCITY, manifest.target_scale)
    np.testing.assert_allclose(inputs[..., 1:4] * manifest.target_scale,
                               classical_base().velocity(density).value, rtol=1e-5, atol=1e-3)
    with pytest.raises(VelnetInputError, match="no --smoothing"):
        InputSpec(True, R, base=classical_base())
    with pytest.raises(VelnetInputError, match="--linear-input"):
        InputSpec(False, base=classical_base())


def test_residual_model_on_a_one_channel_dataset_is_refused(tmp_path):
    path, _ = write_box(tmp_path / "box.h5", seed=0)
    make_shards([path], tmp_path / "ds", fractions=(0.5, 0.25, 0.25), **TILES)
    with pytest.raises(VelnetInputError, match=r"manifest.json.*linear_input=True \(velnet prep --linear-input\)"):
        train(tmp_path / "ds", tmp_path / "run", {"preset": "tiny-residual", "n_valid": 2}, epochs=1)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("linear_input, preset, context", [
    (False, "tiny", 0),             # Wu et al. 2021: ln(1 + delta) alone
    (True, "tiny", 0),              # ln(1 + delta) and v_L in, v out
    (True, "tiny-residual", 0),     # ln(1 + delta) and v_L in, v - v_L learnt
    (False, "tiny", 2),             # ln(1 + delta) and a context window twice as wide
    (True, "tiny-residual", 3),     # all three
])
def test_each_variant_runs_from_fields_to_a_whole_box(tmp_path, linear_input, preset, context):
    files = [write_box(tmp_path / f"box{i}.h5", seed=10 + i)[0] for i in range(2)]
    smoothing = R if linear_input else 0.0
    manifest = make_shards(files, tmp_path / "ds", fractions=(0.5, 0.25, 0.25), tiles_per_shard=64,
                           inputs=InputSpec(linear_input, smoothing, context=context), **TILES)
    path = train(tmp_path / "ds", tmp_path / "run", {"preset": preset, "n_valid": 2}, epochs=1,
                 batch_size=16, learning_rate=1e-3, steps_per_epoch=4, validation_steps=2)
    model, metadata = load_model(path)
    assert metadata.input_spec == manifest.input_spec and metadata.task == "wu2021"
    assert model.input_shape[-1] == (4 if linear_input else 1) + bool(context)

    density = density_field(10)
    whole = predict_box(model, metadata, density)
    assert whole.value.shape == (NMESH, NMESH, NMESH, 3) and np.all(np.isfinite(whole.value))
    # whole-box prediction at the training tile builds the inputs exactly as the shards hold them
    at_tiles = predict_box(model, metadata, density, tile=4, batch_size=72)
    x, _, origins, boxes = read_split_arrays(manifest, "val")
    x, origins = x[boxes == 0], origins[boxes == 0]
    np.testing.assert_allclose(extract(at_tiles.value, origins, 4), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-3)


def brute_force_context(density, centre, size, factor):
    """The context window at one centre, block by block with explicit periodic indices."""
    nmesh = density.shape[0]
    out = np.empty((size,) * 3)
    for block in np.ndindex(size, size, size):
        start = np.asarray(centre) + factor * (np.asarray(block) - size // 2)
        cells = [(start[a] + np.arange(factor)) % nmesh for a in range(3)]
        out[block] = np.log1p(density[np.ix_(*cells)].mean())
    return out


@pytest.mark.parametrize("factor", [2, 3])
def test_context_windows_are_block_means_around_the_centre(factor):
    density = density_field(4).value
    centres = np.array([[0, 0, 0], [5, 11, 23], [13, 2, 7], [22, 22, 1]])  # several block offsets
    windows = InputWindows(None, density, InputSpec(context=factor))
    for _ in range(2):  # the second time from the coarse boxes made the first
        context = windows.context(centres, 8)
        assert context.shape == (4, 8, 8, 8) and context.dtype == np.float32
        for window, centre in zip(context, centres):
            np.testing.assert_allclose(window, brute_force_context(density, centre, 8, factor), rtol=1e-5)
    with pytest.raises(VelnetInputError, match="factor 5 does not divide the 24"):
        InputWindows(None, density, InputSpec(context=5))


def test_context_window_flips_with_its_tile():
    """Reflecting the box about a window's centre reflects both windows: Oh augmentation holds."""
    density = density_field(5)
    spec = InputSpec(context=3)
    origin, size, margin = np.array([[6, 10, 14]]), 8, 2
    centre = origin[0] - margin + size // 2
    x = InputWindows(box_inputs({"density": density}, spec, VELOCITY, 1.0), density.value, spec)(origin, size, margin)
    assert x.shape == (1, 8, 8, 8, 2)
    index = (2 * centre[0] - 1 - np.arange(NMESH)) % NMESH  # cell i <-> cell 2c - 1 - i along x
    flipped = density.with_value(density.value[index])
    y = InputWindows(box_inputs({"density": flipped}, spec, VELOCITY, 1.0), flipped.value, spec)(origin, size, margin)
    np.testing.assert_allclose(y, x[:, ::-1], rtol=1e-6)


def test_context_shards_verify_and_record_their_spec(tmp_path):
    path, density = write_box(tmp_path / "box.h5", seed=6)
    manifest = make_shards([path], tmp_path / "ds", split="train", inputs=InputSpec(context=2), **TILES)
    assert manifest.input_spec.to_dict() == {"linear": False, "context": 2}
    assert manifest.input_shape == [8, 8, 8, 2] and "channel 1:" in manifest.normalisation["input_transform"]
    from data_prep.make_shards import verify_shards
    assert verify_shards(tmp_path / "ds") == {"train": 216}
    x, _, origins, _ = read_split_arrays(manifest, "train")
    windows = InputWindows(None, density.value, manifest.input_spec)
    np.testing.assert_array_equal(x[..., 1], windows.context(origins + 2, 8))
    with pytest.raises(VelnetInputError, match="context factor 5 does not divide"):
        make_shards([path], tmp_path / "bad", split="train", inputs=InputSpec(context=5), **TILES)
    with pytest.raises(VelnetInputError, match="context must be a coarsening factor"):
        InputSpec(context=1)

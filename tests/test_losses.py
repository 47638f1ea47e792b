"""The eq. 6 loss: a hand-computed case, zero on identical fields, serialization, gradients."""
import json
import math

import keras
import numpy as np
import pytest

from velnet.networks.halo_unets import decompose
from velnet.networks.losses import MagnitudeDirectionLoss

# Five voxels: true vector, predicted direction (not normalised), predicted magnitude, and the
# eq. 6 value 1/4 (|v| - |v_true|)^2 + 3/4 (1 - cos phi) worked out by hand.
CASES = [
    ((3, 0, 0), (0, 2, 0), 1.0, 0.25 * 4 + 0.75 * 1),              # |v| off by 2, at right angles
    ((0, 0, 2), (0, 0, 1), 2.0, 0.0),                              # exact
    ((1, 1, 0), (1, 0, 0), 0.0, 0.25 * 2 + 0.75 * (1 - 1 / math.sqrt(2))),  # 45 degrees
    ((0, 0, 0), (1, 0, 0), 0.5, 0.25 * 0.25),                      # true zero: no direction term
    ((-1, 0, 0), (1, 0, 0), 1.0, 0.75 * 2),                        # opposite
]


def case_arrays():
    """y_true (1, 5, 1, 1, 3), y_pred (1, 5, 1, 1, 4) and the per-voxel values (5,)."""
    true = np.array([c[0] for c in CASES], "float32").reshape(1, 5, 1, 1, 3)
    pred = np.array([[*c[1], c[2]] for c in CASES], "float32").reshape(1, 5, 1, 1, 4)
    return true, pred, np.array([c[3] for c in CASES])


def value(loss, y_true, y_pred, **kwargs):
    return float(keras.ops.convert_to_numpy(loss(y_true, y_pred, **kwargs)))


def test_hand_computed_case():
    true, pred, expected = case_arrays()
    assert value(MagnitudeDirectionLoss(), true, pred) == pytest.approx(expected.mean(), rel=1e-6)
    per_voxel = MagnitudeDirectionLoss(reduction="none")(true, pred)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(per_voxel).ravel(), expected,
                               rtol=1e-6, atol=1e-7)
    weights = np.array([1, 0, 0, 1, 0], "float32").reshape(1, 5, 1, 1)
    weighted = MagnitudeDirectionLoss(reduction="mean_with_sample_weight")
    assert value(weighted, true, pred, sample_weight=weights) == pytest.approx(
        (expected[0] + expected[3]) / 2, rel=1e-6)


def test_weights_select_the_terms():
    true, pred, _ = case_arrays()
    magnitudes = np.linalg.norm(true, axis=-1)
    mse = np.mean((pred[..., 3] - magnitudes) ** 2)
    assert value(MagnitudeDirectionLoss(1, 0), true, pred) == pytest.approx(mse, rel=1e-6)
    one_minus_cos = np.mean([1, 0, 1 - 1 / math.sqrt(2), 0, 2])
    assert value(MagnitudeDirectionLoss(0, 1), true, pred) == pytest.approx(one_minus_cos, rel=1e-6)


def test_zero_for_identical_fields_including_zero_vectors():
    v = np.random.default_rng(0).standard_normal((2, 6, 6, 6, 3)).astype("float32")
    v[0, :2] = 0
    magnitude, direction = (keras.ops.convert_to_numpy(t) for t in decompose(v))
    pred = np.concatenate([direction, magnitude], axis=-1)
    assert abs(value(MagnitudeDirectionLoss(), v, pred)) < 1e-6
    swapped = pred[..., [1, 0, 2, 3]]  # wrong directions cost
    assert value(MagnitudeDirectionLoss(), v, swapped) > 0.1


def test_serialization_round_trip():
    loss = MagnitudeDirectionLoss(magnitude_weight=0.5, direction_weight=2.0, name="eq6")
    config = keras.saving.serialize_keras_object(loss)
    again = keras.saving.deserialize_keras_object(json.loads(json.dumps(config)))
    assert isinstance(again, MagnitudeDirectionLoss)
    assert (again.magnitude_weight, again.direction_weight, again.name) == (0.5, 2.0, "eq6")
    assert keras.saving.serialize_keras_object(again) == config
    true, pred, _ = case_arrays()
    assert value(again, true, pred) == pytest.approx(value(loss, true, pred))
    defaults = MagnitudeDirectionLoss.from_config(MagnitudeDirectionLoss().get_config())
    assert (defaults.magnitude_weight, defaults.direction_weight) == (0.25, 0.75)


@pytest.mark.parametrize("kwargs", [dict(magnitude_weight=-1), dict(direction_weight=float("nan"))])
def test_bad_weights_raise(kwargs):
    with pytest.raises(ValueError, match="Received: "):
        MagnitudeDirectionLoss(**kwargs)


def test_gradients_stay_finite_at_zero_true_and_predicted_vectors():
    """A 1^3 convolution starting at zero predicts zero directions; a quarter of y is zero."""
    model = keras.Sequential([keras.Input((None, None, None, 8)),
                              keras.layers.Conv3D(4, 1, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=MagnitudeDirectionLoss())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 4, 4, 8)).astype("float32")
    y = rng.standard_normal((2, 4, 4, 4, 3)).astype("float32")
    y[:, :1] = 0
    losses = [model.train_on_batch(x, y) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(np.isfinite(w).all() for w in model.get_weights())

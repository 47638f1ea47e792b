"""Losses of the 2024 halo paper: eq. 6, magnitude and direction of a vector field."""
import math

import keras
from keras import ops

from velnet.networks.halo_unets import DIRECTION, EPSILON, MAGNITUDE, unit_vector


@keras.saving.register_keras_serializable("velnet")
class MagnitudeDirectionLoss(keras.losses.Loss):
    """Eq. 6 of the 2024 halo paper: `1/4 (|v| - |v_true|)^2 + 3/4 (1 - cos phi)` per voxel.

    `cos phi` is the cosine of the angle between the predicted direction and the true
    vector. The paper weighs the terms by their channel counts (1 for |v|, 3 for the
    direction), 1/4 and 3/4, and averages over the N voxels; the default reduction,
    "sum_over_batch_size", averages the per-voxel values over the batch and all voxels.

    Where the true vector is zero (norm below `velnet.networks.halo_unets.EPSILON`) it has no
    direction, and the direction term is 0 there (its gradient would be zero anyway). The
    predicted direction is normalised before the cosine is taken, so it need not be a unit
    vector.

    Args:
        magnitude_weight: weight of the squared magnitude error (eq. 6: 1/4).
        direction_weight: weight of `1 - cos phi` (eq. 6: 3/4).
        reduction: a `keras.losses.Loss` reduction.
        name: loss name.
        dtype: dtype of the computation (default: Keras's float type).

    Call arguments:
        y_true: `(B, nx, ny, nz, 3)`: the true vector field (normalised units).
        y_pred: `(B, nx, ny, nz, 4)`: a stage-two output, unit direction in channels 0-2
            and magnitude in channel 3 (see `velnet.networks.halo_unets`).

    Raises:
        ValueError: for negative or non-finite weights.
    """

    def __init__(self, magnitude_weight=0.25, direction_weight=0.75,
                 reduction="sum_over_batch_size", name="magnitude_direction", dtype=None):
        for key, value in dict(magnitude_weight=magnitude_weight,
                               direction_weight=direction_weight).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"`{key}` must be a finite number >= 0. Received: {key}={value!r}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.magnitude_weight = float(magnitude_weight)
        self.direction_weight = float(direction_weight)

    def call(self, y_true, y_pred):
        true_magnitude = ops.sqrt(ops.sum(ops.square(y_true), axis=-1))
        cos_phi = ops.sum(unit_vector(y_true) * unit_vector(y_pred[..., DIRECTION]), axis=-1)
        direction_term = ops.where(true_magnitude >= EPSILON, 1 - cos_phi, ops.zeros_like(cos_phi))
        magnitude_term = ops.square(y_pred[..., MAGNITUDE] - true_magnitude)
        return self.magnitude_weight * magnitude_term + self.direction_weight * direction_term

    def get_config(self):
        return {**super().get_config(), "magnitude_weight": self.magnitude_weight,
                "direction_weight": self.direction_weight}

"""The U-nets of the 2024 halo paper (section 2.3, Fig. 2, Table 1) and their vector head.

Stage one maps the redshift-space halo number density (4 mass-bin channels) to the
real-space dark-matter density (1 channel): `halo_unet(4, 1, ...)`. Stage two maps 8
channels (the 4 halo channels, the stage-one density and the 3 components of the linear
velocity) to the velocity or momentum as a magnitude and a direction: `halo_velocity_unet`.

Layout of `halo_unet` (n^3 input; every convolution is followed by BatchNormalization and
ReLU, except the output; N1, N2, N3 and the dropout rate are arguments, tuned by Optuna in
the paper):

    init:     conv N1, init_kernel^3                                  n^3
    down 1:   conv N1 3^3 (skip 1), conv N2 3^3 stride 2              (n/2)^3
    down 2:   conv N2 3^3 (skip 2), conv N3 3^3 stride 2              (n/4)^3
    bottom:   conv N3 3^3
    up 2:     trans N2 2^3 stride 2, concat skip 2, conv N2 3^3       (n/2)^3
    up 1:     trans N1 2^3 stride 2, concat skip 1                    n^3
    final:    conv N1 3^3, Dropout, BatchNormalization, ReLU          (the paper's order)
    output:   conv n_out 1^3, linear                                  n^3 x n_out

What Fig. 2 leaves unstated (the figure is not in the text we have) and what we chose:
the init kernel (default 7^3: "a sufficiently large receptive field"), the number of
convolutions per block (one plain and one stride-2 per down block, one after each
concatenation), the transposed-convolution kernel (2^3 with stride 2: each coarse cell
feeds exactly 2^3 fine cells, so no padding is needed and edges are exact), the output
kernel (1^3), the default widths, and the padding. The paper's sub-box edges are "less
accurate"; here every convolution pads its input periodically (`PeriodicPad3D`) and
convolves 'valid', so a periodic box is treated the same everywhere: the network commutes
with periodic shifts by multiples of the total stride 4. The network is fully
convolutional: any spatial size divisible by 4 (and at least init_kernel // 2) works, so
it trains on 128^3 sub-boxes and predicts 256^3 boxes in one pass.

Stage two (section 2.3: "two structurally similar neural networks ... conclude with an
output layer comprising 1+3 channels"; Table 1: magnitude 8 -> 1, direction 8 -> 3):
`halo_velocity_unet` holds two `halo_unet` layouts on the same input, one for the magnitude
(softplus of its output, so |v| >= 0) and one for the direction (normalised to a unit
vector), and concatenates them into 4 channels in the paper's order: channels 0-2 the
direction, channel 3 the magnitude (`DIRECTION`, `MAGNITUDE`). Trained together on the
eq. 6 loss (`velnet.networks.losses.MagnitudeDirectionLoss`), each sub-network gets the gradient
of its own term only, so (with Adam) this is the same as training them separately.

Residual variants (`residual_channels`, not in the paper): the input channels that hold a
whole-box estimate of the target (in normalised target units, `velnet.data.inputs`) are added
to the output, so the network learns the correction to it. Stage one adds the linear
real-space density to its output. In stage two both U-nets output a 3-vector correction
to the linear velocity (or momentum) of eq. 2-3: the direction is the unit vector of the
direction U-net's sum, the magnitude the norm of the magnitude U-net's sum, so that where
the corrections vanish (the scales a sub-box cannot see) the output is linear theory.
"""
import keras
from keras import layers, ops

from velnet.networks.unet3d import OUTPUT_LAYER, ChannelSlice, ToPhysical

PRESETS = {
    # the defaults of `halo_unet` (the paper tuned N1-N3 with Optuna and does not state them)
    "halo2024": dict(n1=32, n2=64, n3=128, dropout=0.1, init_kernel=7),
    # a quarter of the widths and a 5^3 init kernel: trains on 2 cores in minutes
    "halo-tiny": dict(n1=8, n2=16, n3=32, dropout=0.1, init_kernel=5),
    # both, as residuals over the dataset's whole-box estimate of the target ("base":
    # `velnet.networks.builders.network_config` puts in its channels)
    "halo2024-residual": dict(n1=32, n2=64, n3=128, dropout=0.1, init_kernel=7, residual_channels="base"),
    "halo-tiny-residual": dict(n1=8, n2=16, n3=32, dropout=0.1, init_kernel=5, residual_channels="base"),
}
"""Widths, dropout and init kernel of both halo builders, by preset name."""
DIRECTION = slice(0, 3)
"""Channels of the unit direction in a stage-two output."""
MAGNITUDE = 3
"""Channel of the magnitude in a stage-two output."""
TOTAL_STRIDE = 4
"""Spatial sizes must be divisible by this (two stride-2 levels)."""
EPSILON = 1e-7
"""Vector norms below this count as zero in `unit_vector`."""


@keras.saving.register_keras_serializable("velnet")
class PeriodicPad3D(layers.Layer):
    """Pad the three spatial axes of a channels-last 5D tensor periodically (wrap around).

    Cell i of the output along an axis padded by p is cell (i - p) mod n of the input.
    Each padding must not exceed the size of its axis.

    Args:
        padding: int, or 3 ints: cells added on both sides of axes 1, 2, 3.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        padding = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        if len(padding) != 3 or not all(isinstance(p, int) and p >= 0 for p in padding):
            raise ValueError(
                f"`padding` must be an int >= 0 or three of them. Received: padding={padding}")
        self.padding = padding

    def call(self, inputs):
        x = inputs
        for axis, p in enumerate(self.padding, start=1):
            if p:
                head = (slice(None),) * axis
                x = ops.concatenate([x[head + (slice(-p, None),)], x, x[head + (slice(None, p),)]],
                                    axis=axis)
        return x

    def compute_output_shape(self, input_shape):
        spatial = [None if n is None else n + 2 * p for n, p in zip(input_shape[1:4], self.padding)]
        return (input_shape[0], *spatial, input_shape[4])

    def get_config(self):
        return {**super().get_config(), "padding": list(self.padding)}


@keras.saving.register_keras_serializable("velnet")
class UnitVector(layers.Layer):
    """Normalise the channels to a unit vector; zero vectors stay zero (see `unit_vector`)."""

    def call(self, inputs):
        return unit_vector(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable("velnet")
class Norm(layers.Layer):
    """The norm of the vectors (last axis), keeping that axis: `(..., 3)` to `(..., 1)`.

    Computed as v . unit_vector(v), so its gradient is finite at zero.
    """

    def call(self, inputs):
        return ops.sum(inputs * unit_vector(inputs), axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


@keras.saving.register_keras_serializable("velnet")
class Recombine(layers.Layer):
    """Turn a stage-two output (direction in channels 0-2, magnitude in 3) into the 3-vector."""

    def call(self, inputs):
        return recombine(inputs[..., MAGNITUDE:MAGNITUDE + 1], inputs[..., DIRECTION])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def unit_vector(vector, epsilon=EPSILON):
    """Divide vectors (last axis) by their norm; vectors shorter than `epsilon` become zero.

    Finite with a finite gradient everywhere, zero included.

    Args:
        vector: `(..., 3)` array or tensor.
        epsilon: norm below which a vector counts as zero.

    Returns:
        Tensor of the same shape: unit vectors, or (near) zero where the norm is below
        `epsilon` (there `vector / epsilon`).
    """
    vector = ops.convert_to_tensor(vector)
    square = ops.sum(ops.square(vector), axis=-1, keepdims=True)
    return vector * ops.rsqrt(ops.maximum(square, epsilon ** 2))


def decompose(vector):
    """Split a vector field into magnitude and unit direction (zero direction where it is zero).

    Args:
        vector: `(..., 3)` array or tensor (km/s, or normalised units).

    Returns:
        `(magnitude (..., 1), direction (..., 3))` tensors, same units for the magnitude.
    """
    vector = ops.convert_to_tensor(vector)
    return ops.sqrt(ops.sum(ops.square(vector), axis=-1, keepdims=True)), unit_vector(vector)


def recombine(magnitude, direction):
    """The vector of a magnitude and a direction: `magnitude * direction`.

    Args:
        magnitude: `(..., 1)` array or tensor.
        direction: `(..., 3)` unit vectors (or zero).

    Returns:
        `(..., 3)` tensor, in the units of `magnitude`; `keras.ops.convert_to_numpy` turns
        it into a numpy array.
    """
    return ops.convert_to_tensor(magnitude) * ops.convert_to_tensor(direction)


def conv_bn_relu(x, filters, kernel_size, name, strides=1):
    """Periodic padding, 'valid' convolution, BatchNormalization, ReLU.

    For stride 1 and an odd kernel the output has the input's size; for stride 2 and a
    3^3 kernel, half of it (even sizes).

    Args:
        x: channels-last 5D tensor.
        filters: output channels.
        kernel_size: odd kernel size.
        name: prefix of the layer names (`{name}_pad`, `_conv`, `_bn`, `_relu`).
        strides: 1 or 2.

    Returns:
        The activated tensor.
    """
    x = _periodic_conv(x, filters, kernel_size, name, strides)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _periodic_conv(x, filters, kernel_size, name, strides=1):
    """`PeriodicPad3D(kernel_size // 2)` then a 'valid' Conv3D named `{name}_conv`."""
    if kernel_size > 1:
        x = PeriodicPad3D(kernel_size // 2, name=f"{name}_pad")(x)
    return layers.Conv3D(filters, kernel_size, strides=strides, padding="valid",
                         name=f"{name}_conv")(x)


def _up(x, filters, name):
    """Transposed convolution 2^3, stride 2 (doubles each size exactly), BN, ReLU."""
    x = layers.Conv3DTranspose(filters, 2, strides=2, padding="valid", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _validate(input_channels, output_channels, n1, n2, n3, dropout, init_kernel, residual_channels=None,
              base_size=None):
    """Raise ValueError ending in "Received: ..." for arguments `halo_unet` cannot take
    (`residual_channels` must span `base_size` input channels, default `output_channels`)."""
    for key, value in dict(input_channels=input_channels, output_channels=output_channels,
                           n1=n1, n2=n2, n3=n3).items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"`{key}` must be a positive integer. Received: {key}={value!r}")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"`dropout` must be a rate in [0, 1). Received: dropout={dropout!r}")
    if not (isinstance(init_kernel, int) and init_kernel > 0 and init_kernel % 2):
        raise ValueError(
            f"`init_kernel` must be an odd positive integer. Received: init_kernel={init_kernel!r}")
    if residual_channels is not None:
        span = list(residual_channels) if isinstance(residual_channels, (list, tuple)) else []
        size = base_size or output_channels
        if not (len(span) == 2 and all(isinstance(c, int) for c in span) and 0 <= span[0]
                and span[1] - span[0] == size and span[1] <= input_channels):
            raise ValueError(f"`residual_channels` must be [start, stop) of {size} of the {input_channels} input "
                             f"channels. Received: residual_channels={residual_channels!r}")


def _trunk(inputs, output_channels, n1, n2, n3, dropout, init_kernel, prefix=""):
    """The Fig. 2 layers from `inputs` to the linear output, layer names starting with `prefix`."""
    x = conv_bn_relu(inputs, n1, init_kernel, f"{prefix}init")
    skip1 = conv_bn_relu(x, n1, 3, f"{prefix}down1")
    x = conv_bn_relu(skip1, n2, 3, f"{prefix}down1_stride", strides=2)
    skip2 = conv_bn_relu(x, n2, 3, f"{prefix}down2")
    x = conv_bn_relu(skip2, n3, 3, f"{prefix}down2_stride", strides=2)
    x = conv_bn_relu(x, n3, 3, f"{prefix}bottom")
    x = _up(x, n2, f"{prefix}up2_trans")
    x = layers.Concatenate(name=f"{prefix}up2_concat")([skip2, x])
    x = conv_bn_relu(x, n2, 3, f"{prefix}up2")
    x = _up(x, n1, f"{prefix}up1_trans")
    x = layers.Concatenate(name=f"{prefix}up1_concat")([skip1, x])
    x = _periodic_conv(x, n1, 3, f"{prefix}final")
    x = layers.Dropout(dropout, name=f"{prefix}final_dropout")(x)
    x = layers.BatchNormalization(name=f"{prefix}final_bn")(x)
    x = layers.ReLU(name=f"{prefix}final_relu")(x)
    return layers.Conv3D(output_channels, 1, dtype="float32", name=f"{prefix}output")(x)


def _residual(inputs, outputs, residual_channels, name):
    """`outputs` plus the input channels `residual_channels` (a layer named `{name}_add`)."""
    base = ChannelSlice(*residual_channels, dtype="float32", name=f"{name}_channels")(inputs)
    return layers.Add(dtype="float32", name=f"{name}_add")([outputs, base])


def halo_unet(input_channels=4, output_channels=1, n1=32, n2=64, n3=128, dropout=0.1,
              init_kernel=7, residual_channels=None, name="halo_unet"):
    """Build the U-net of Fig. 2 of the 2024 halo paper, with periodic padding.

    Args:
        input_channels: channels of the input (Table 1: 4 halo mass bins for stage one, 8
            for stage two).
        output_channels: channels of the linear output (1 for the density).
        n1: channels at full resolution (N1 in Fig. 2).
        n2: channels at half resolution (N2).
        n3: channels at quarter resolution (N3).
        dropout: dropout rate of the final block, between its convolution and its
            BatchNormalization.
        init_kernel: odd kernel size of the "init" convolution (large receptive field).
        residual_channels: None, or `[start, stop)` of `output_channels` input channels
            (a whole-box estimate of the target, normalised) added to the output.
        name: model name.

    Returns:
        A functional `keras.Model` mapping `(B, n, n, n, input_channels)` to
        `(B, n, n, n, output_channels)` for any n divisible by 4 (and >= init_kernel // 2;
        spatial axes may differ), in the units the targets were normalised to.

    Raises:
        ValueError: for arguments the architecture cannot take.

    Example:
        >>> model = halo_unet(4, 1, n1=4, n2=8, n3=16)
        >>> model.output_shape
        (None, None, None, None, 1)
    """
    _validate(input_channels, output_channels, n1, n2, n3, dropout, init_kernel, residual_channels)
    inputs = keras.Input(shape=(None, None, None, input_channels), name="inputs")
    outputs = _trunk(inputs, output_channels, n1, n2, n3, dropout, init_kernel)
    if residual_channels is not None:
        outputs = _residual(inputs, outputs, residual_channels, "residual")
    return keras.Model(inputs, outputs, name=name)


def halo_velocity_unet(input_channels=8, n1=32, n2=64, n3=128, dropout=0.1, init_kernel=7,
                       residual_channels=None, name="halo_velocity_unet"):
    """Build the stage-two network: a magnitude U-net (8 -> 1) and a direction U-net (8 -> 3).

    Both are `halo_unet` layouts with the same widths on the same input (Table 1); the
    magnitude is the softplus of its U-net's output (>= 0), the direction its U-net's
    output divided by its norm (`unit_vector`).

    Args:
        input_channels: channels of the input (Table 1: 8).
        n1, n2, n3, dropout, init_kernel: as for `halo_unet`, for both U-nets.
        residual_channels: None, or `[start, stop)` of the 3 input channels of the linear
            velocity (or momentum), normalised: both U-nets then output a 3-vector added to
            it, the direction U-net's sum giving the direction, the magnitude U-net's sum
            its norm as the magnitude.
        name: model name.

    Returns:
        A functional `keras.Model` mapping `(B, n, n, n, input_channels)` to
        `(B, n, n, n, 4)`: unit direction in channels 0-2, magnitude in channel 3 (in the
        normalised units of the targets); `Recombine` turns it into the vector.

    Raises:
        ValueError: for arguments the architecture cannot take.
    """
    _validate(input_channels, 1, n1, n2, n3, dropout, init_kernel, residual_channels, base_size=3)
    inputs = keras.Input(shape=(None, None, None, input_channels), name="inputs")
    widths = dict(n1=n1, n2=n2, n3=n3, dropout=dropout, init_kernel=init_kernel)
    if residual_channels is None:
        magnitude = _trunk(inputs, 1, prefix="magnitude_", **widths)
        magnitude = layers.Activation("softplus", dtype="float32", name="magnitude")(magnitude)
        direction = _trunk(inputs, 3, prefix="direction_", **widths)
    else:
        magnitude = _trunk(inputs, 3, prefix="magnitude_", **widths)
        magnitude = _residual(inputs, magnitude, residual_channels, "magnitude_residual")
        magnitude = Norm(dtype="float32", name="magnitude")(magnitude)
        direction = _trunk(inputs, 3, prefix="direction_", **widths)
        direction = _residual(inputs, direction, residual_channels, "direction_residual")
    direction = UnitVector(dtype="float32", name="direction")(direction)
    outputs = layers.Concatenate(dtype="float32", name="direction_magnitude")(
        [direction, magnitude])
    return keras.Model(inputs, outputs, name=name)


def physical_halo_model(network, scale, metadata, vector=False):
    """The network with outputs in physical units, ending in a `ToPhysical` layer "to_physical".

    Args:
        network: a trained `halo_unet` or (`vector`) `halo_velocity_unet`.
        scale: physical units per normalised unit (the training target scale).
        metadata: JSON-serialisable dict stored in the "to_physical" layer.
        vector: the network is a `halo_velocity_unet`: its direction and magnitude are
            turned into 3-vectors (`Recombine`).

    Returns:
        A functional `keras.Model` sharing the network's layers: `(B, n, n, n, C_in)` to
        `(B, n, n, n, 1)` density or `(B, n, n, n, 3)` vectors, for any n divisible by 4.
    """
    x = network.outputs[0]
    if vector:
        x = Recombine(dtype="float32", name="recombine")(x)
    outputs = ToPhysical(scale, metadata, dtype="float32", name=OUTPUT_LAYER)(x)
    return keras.Model(network.inputs[0], outputs, name=network.name)

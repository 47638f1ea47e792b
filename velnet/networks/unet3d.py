"""The Wu et al. 2021 3D U-net (density -> velocity or momentum) and its km/s output layer.

The layout follows section 3 of the paper (papers/wu2021-velocity-from-density-unet.txt):
every 3^3 convolution (plain or transposed) is followed by BatchNormalization and ReLU,
except the last, linear one.

    32^3 input
    level 1: 2 x conv 128 'same', conv 128 stride 2            -> 16^3   (skip 1 before the stride)
    level 2: 2 x conv 256 'same', conv 256 stride 2            ->  8^3   (skip 2 before the stride)
    bottom:  2 x conv 512 'same'
    up 2:    transposed conv 256 stride 2 -> 16^3, concat skip 2, conv 256 'same'
    up 1:    transposed conv 128 stride 2 -> 32^3, concat skip 1
    6 x conv 128 'valid'                                        -> 20^3
    transposed conv 3 stride 1 'same', linear                   -> 20^3 x 3

Upsampling (`upsampling`). "same" (the presets without "-crop", and the shipped models):
'same' transposed convolutions of stride 2 double the size exactly and line the coarse cells
up with the skip's (a coarse cell sits on the centre of the fine cells it was computed
from), so no cropping layer is needed. "crop" follows the text to the letter: "each
deconvolution is followed by a cropping layer ... we crop the both side with the same pixel":
a 'valid' transposed convolution of 3^3 filters, stride 2, output padding 1, gives
2n + 2 cells, Cropping3D(1) takes one from each side, then BatchNormalization and ReLU:

    up 2:    transposed conv 256 -> 18^3, crop -> 16^3, concat skip 2, conv 256 'same'
    up 1:    transposed conv 128 -> 34^3, crop -> 32^3, concat skip 1

The parameters are the same; the upsampled features sit one fine cell lower on each axis
than the skip's (the following 3^3 convolutions can learn the shift). Either way the
network is fully convolutional: any spatial size n with n % 2**(len(widths) - 1) == 0 and
n > 2 * n_valid gives an output of n - 2 * n_valid.

Residual variant (`residual_channels`): with the linear-theory target in input channels
1-3 (see `velnet.data.inputs`), the output is the network's output plus those channels cropped
to the output region, so the network learns only the correction to linear theory.

Parameter count: the text layout ("wu2021-text", "wu2021-text-crop") has 27,016,195 parameters in Keras
(including the BatchNormalization moving statistics), not the 48,690,307 the paper states.
No layout consistent with the text reproduces 48,690,307: with every width the text states
held fixed, no choice of the unstated details (width and number of the valid convolutions,
transposed-convolution kernel 2-5, BatchNormalization after the transposed convolutions or
not, biases or not, moving statistics counted or not, extra convolutions after either
concatenation, final kernel 1 or 3) gives that number.
"""
import inspect
import json

import keras
from keras import layers

PRESETS = {
    # Section 3 of Wu et al. 2021: 27,016,195 parameters; 'same' transposed convolutions.
    "wu2021-text": dict(widths=(128, 256, 512), width_multiplier=1.0, n_valid=6),
    # The same layout at 1/8 of the widths (16, 32, 64): about 0.43 M parameters, trains on a laptop.
    "tiny": dict(widths=(128, 256, 512), width_multiplier=1 / 8, n_valid=6),
    # The two as the text has them to the letter: a Cropping3D after each transposed convolution.
    "wu2021-text-crop": dict(widths=(128, 256, 512), width_multiplier=1.0, n_valid=6,
                             upsampling="crop"),
    "tiny-crop": dict(widths=(128, 256, 512), width_multiplier=1 / 8, n_valid=6, upsampling="crop"),
    # "wu2021-text" and "tiny", adding the linear-theory input channels 1-3 to the output (needs
    # a dataset made with linear_input=True).
    "wu2021-text-residual": dict(widths=(128, 256, 512), width_multiplier=1.0, n_valid=6,
                                 residual_channels=(1, 4)),
    "tiny-residual": dict(widths=(128, 256, 512), width_multiplier=1 / 8, n_valid=6,
                          residual_channels=(1, 4)),
}
OUTPUT_LAYER = "to_physical"


def conv_block(x, filters, name, strides=1, padding="same", transpose=False, crop=0):
    """3^3 convolution (or transposed convolution), BatchNormalization, ReLU.

    Args:
        x: channels-last 5D tensor.
        filters: number of output channels.
        name: prefix of the layer names (`{name}_conv`, `{name}_crop`, `{name}_bn`, `{name}_relu`).
        strides: convolution stride.
        padding: "same" or "valid".
        transpose: use Conv3DTranspose instead of Conv3D.
        crop: with `transpose`, a 'valid' transposed convolution with output padding
            `strides + 2 crop - 3` (so that it gives `strides` n + 2 crop cells), then
            Cropping3D of `crop` cells on every side: exactly `strides` n cells.

    Returns:
        The activated tensor.
    """
    if crop:
        x = layers.Conv3DTranspose(filters, 3, strides=strides, padding="valid",
                                   output_padding=strides + 2 * crop - 3, name=f"{name}_conv")(x)
        x = layers.Cropping3D(crop, name=f"{name}_crop")(x)
    else:
        conv = layers.Conv3DTranspose if transpose else layers.Conv3D
        x = conv(filters, 3, strides=strides, padding=padding, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def scaled_widths(widths, width_multiplier):
    """Return `widths` times `width_multiplier`, rounded, at least 1 each."""
    return tuple(max(1, round(w * width_multiplier)) for w in widths)


UPSAMPLING = ("same", "crop")


def _validate(input_shape, out_channels, widths, width_multiplier, n_valid, residual_channels,
              upsampling):
    """Raise ValueError ending in "Received: ..." for arguments the U-net cannot take."""
    if upsampling not in UPSAMPLING:
        raise ValueError(
            f"`upsampling` must be one of {UPSAMPLING}. Received: upsampling={upsampling!r}"
        )
    if not (isinstance(n_valid, int) and n_valid >= 0):
        raise ValueError(f"`n_valid` must be an integer >= 0. Received: n_valid={n_valid}")
    if len(widths) < 2 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(
            "`widths` must hold at least two positive integers (encoder levels, then the "
            f"bottom). Received: widths={widths}"
        )
    if not width_multiplier > 0:
        raise ValueError(
            f"`width_multiplier` must be > 0. Received: width_multiplier={width_multiplier}"
        )
    if not (isinstance(out_channels, int) and out_channels > 0):
        raise ValueError(
            f"`out_channels` must be a positive integer. Received: out_channels={out_channels}"
        )
    if len(input_shape) != 4 or not (isinstance(input_shape[-1], int) and input_shape[-1] > 0):
        raise ValueError(
            "`input_shape` must be (nx, ny, nz, channels) with a positive channel count. "
            f"Received: input_shape={input_shape}"
        )
    if residual_channels is not None:
        span = list(residual_channels) if isinstance(residual_channels, (list, tuple)) else []
        if not (len(span) == 2 and all(isinstance(c, int) for c in span)
                and 0 <= span[0] and span[1] - span[0] == out_channels and span[1] <= input_shape[-1]):
            raise ValueError(
                f"`residual_channels` must be [start, stop) of {out_channels} input channels (the "
                f"linear-theory target) within the {input_shape[-1]} input channel(s). "
                f"Received: residual_channels={residual_channels}, input_shape={input_shape}"
            )
    factor = 2 ** (len(widths) - 1)
    for n in input_shape[:3]:
        if n is not None and (n % factor or n <= 2 * n_valid):
            raise ValueError(
                f"Each spatial size must be None or divisible by {factor} and larger than "
                f"2 * n_valid = {2 * n_valid}. Received: input_shape={input_shape}"
            )


def unet3d(
    input_shape=(32, 32, 32, 1),
    out_channels=3,
    widths=(128, 256, 512),
    width_multiplier=1.0,
    n_valid=6,
    residual_channels=None,
    upsampling="same",
    name="velnet_unet",
):
    """Build the Wu et al. 2021 U-net: ln(1 + rho/rho_mean) tiles to velocity or momentum tiles.

    Args:
        input_shape: (nx, ny, nz, channels); spatial sizes may be None (any valid size at
            call time). Each size must be divisible by 2**(len(widths) - 1) and exceed
            2 * n_valid.
        out_channels: channels of the output (3 for a velocity or momentum vector).
        widths: filters per encoder level, then at the bottom (the paper: 128, 256, 512).
        width_multiplier: factor applied to every width (1/8 for a laptop-sized model).
        n_valid: number of unpadded convolutions at full resolution; each trims one voxel
            from every face, so the output is n - 2 * n_valid voxels wide.
        residual_channels: None, or `(start, stop)`: input channels (the linear-theory
            target, in normalised units) added to the output after cropping n_valid cells
            from every face; `stop - start` must equal `out_channels`.
        upsampling: "same" ('same' transposed convolutions, skips aligned) or "crop" (the
            text's 'valid' transposed convolution and Cropping3D of one cell a side).
        name: model name.

    Returns:
        A functional `keras.Model` with a linear output in normalised units, shape
        (batch, nx - 2 n_valid, ny - 2 n_valid, nz - 2 n_valid, out_channels).

    Raises:
        ValueError: for arguments the architecture cannot take.

    Example:
        >>> model = unet3d(input_shape=(32, 32, 32, 1), width_multiplier=1 / 8)
        >>> model.output_shape
        (None, 20, 20, 20, 3)
    """
    input_shape = tuple(input_shape)
    widths = tuple(widths)
    _validate(input_shape, out_channels, widths, width_multiplier, n_valid, residual_channels,
              upsampling)
    *levels, bottom = scaled_widths(widths, width_multiplier)

    inputs = keras.Input(shape=input_shape, name="ln_density")
    x = inputs
    skips = []
    for i, w in enumerate(levels, start=1):
        x = conv_block(x, w, f"enc{i}_conv1")
        x = conv_block(x, w, f"enc{i}_conv2")
        skips.append(x)
        x = conv_block(x, w, f"enc{i}_down", strides=2)
    x = conv_block(x, bottom, "bottom_conv1")
    x = conv_block(x, bottom, "bottom_conv2")
    for i in range(len(levels), 0, -1):
        w = levels[i - 1]
        x = conv_block(x, w, f"dec{i}_up", strides=2, transpose=True, crop=int(upsampling == "crop"))
        x = layers.Concatenate(name=f"dec{i}_concat")([skips[i - 1], x])
        if i > 1:
            x = conv_block(x, w, f"dec{i}_conv")
    for j in range(1, n_valid + 1):
        x = conv_block(x, levels[0], f"valid{j}", padding="valid")
    outputs = layers.Conv3DTranspose(
        out_channels, 3, strides=1, padding="same", dtype="float32", name="output"
    )(x)
    if residual_channels is not None:
        base = layers.Cropping3D(n_valid, dtype="float32", name="residual_crop")(inputs)
        base = ChannelSlice(*residual_channels, dtype="float32", name="residual_channels")(base)
        outputs = layers.Add(dtype="float32", name="residual_add")([outputs, base])
    return keras.Model(inputs, outputs, name=name)


def unet_config(preset="wu2021-text", **overrides):
    """Return the builder keyword arguments of a preset, with overrides, as a JSON-ready dict.

    Args:
        preset: a key of `PRESETS`.
        **overrides: any `unet3d` argument.

    Returns:
        A dict of every `unet3d` argument (JSON types) that `unet_from_config` turns back
        into the model.

    Raises:
        ValueError: for an unknown preset or argument.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset; expected one of {sorted(PRESETS)}. Received: preset={preset}")
    return builder_config(unet3d, {**PRESETS[preset], **overrides})


def builder_config(builder, config):
    """Every argument of a network builder (defaults filled in, tuples as lists) for `config`.

    Raises:
        ValueError: for keys the builder does not take.
    """
    defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown {builder.__name__} config keys; expected some of {sorted(defaults)}. Received: {unknown}"
        )
    return json.loads(json.dumps({**defaults, **config}))


def unet_from_config(config):
    """Build the U-net from a dict of `unet3d` keyword arguments (e.g. from `unet_config`).

    Raises:
        ValueError: for unknown keys or arguments the architecture cannot take.
    """
    return unet3d(**builder_config(unet3d, config))


@keras.saving.register_keras_serializable("velnet")
class ChannelSlice(layers.Layer):
    """Keep channels `start` to `stop - 1` of a channels-last tensor.

    Args:
        start: first channel kept.
        stop: one past the last channel kept.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs):
        return inputs[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable("velnet")
class ToPhysical(layers.Layer):
    """Multiply normalised network outputs by the target scale, giving km/s.

    The layer also carries the metadata a prediction needs (task, target, tile shapes,
    normalisation, cosmology, input spec, builder config: `velnet.networks.builders.ModelMetadata`
    as a dict), so a saved `.keras` file is self-describing.

    Args:
        scale: target units (km/s) per normalised unit (the shards' target scale).
        metadata: JSON-serialisable dict stored with the layer.
        **kwargs: `keras.layers.Layer` arguments (name, dtype).
    """

    def __init__(self, scale, metadata=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self._metadata_json = json.dumps(metadata or {})

    @property
    def metadata(self):
        """A fresh copy of the stored metadata dict."""
        return json.loads(self._metadata_json)

    def call(self, inputs):
        return inputs * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "metadata": self.metadata}


def physical_model(config, weights, scale, metadata):
    """Build the km/s-output U-net for any valid tile size from its config and weights.

    Args:
        config: `unet3d` keyword arguments of the trained network.
        weights: the trained network's `get_weights()`.
        scale: km/s per normalised unit.
        metadata: JSON-serialisable dict (see `ToPhysical`).

    Returns:
        A functional model with spatial input sizes None (any size divisible by
        2**(len(widths) - 1) and larger than 2 * n_valid), ending in a `ToPhysical` layer
        named "to_physical".
    """
    channels = config["input_shape"][-1]
    network = unet_from_config({**config, "input_shape": [None, None, None, channels]})
    network.set_weights(weights)
    outputs = ToPhysical(scale, metadata, name=OUTPUT_LAYER)(network.outputs[0])
    return keras.Model(network.inputs, outputs, name=network.name)

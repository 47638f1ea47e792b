"""The network of a task: its config, its layers, its loss, its physical-unit model and metadata.

`BUILDERS` is the one table of network builders: each row carries the builder, its presets,
the arguments a dataset's tiles fix, the wrapper that gives the trained network physical
outputs, its hyperparameter search space and its stride (spatial sizes must be multiples of
it). `LOSSES` names the training losses.

A model config is a preset name of the task's builder, or a dict of builder arguments with
an optional "preset" key (default: the task's full-size preset) that the other keys
override; the dataset fixes the shapes (`network_config`, the one parser of both papers'
configs), and `residual_channels="base"` stands for its whole-box estimate of the target
(`velnet.data.inputs.InputSpec.base_channels`). A trained model ends in a `ToPhysical` layer
that outputs physical units and carries its `ModelMetadata`, so `velnet predict` needs nothing
else.
"""
import dataclasses
import json
from dataclasses import dataclass

import keras

from velnet.data.inputs import SPEC_KEY, InputSpec
from velnet.errors import VelnetInputError
from velnet.networks import halo_unets, unet3d
from velnet.networks.losses import MagnitudeDirectionLoss
from velnet.tasks import LEGACY_TASK, TileData, get_task

WIDTH_MULTIPLIERS = (1 / 8, 1 / 4, 1 / 2, 1.0)
"""Choices of the Wu et al. U-net's width multiplier in a search (a preset's value is added)."""
HALO_WIDTHS = {"n1": (4, 8, 16, 32), "n2": (8, 16, 32, 64), "n3": (16, 32, 64, 128)}
"""Choices of the halo U-nets' widths N1-N3 in a search (a preset's value is added)."""
DROPOUT_RANGE = (0.0, 0.5, 0.1)
"""min, max and step of the halo U-nets' dropout rate in a search."""


@dataclass(frozen=True)
class Builder:
    """A network builder and what the pipeline needs to know of it.

    Attributes:
        build: the builder, a function of keyword arguments returning a `keras.Model`.
        presets: preset name -> builder arguments.
        shapes: `f(manifest) -> dict` of the arguments a dataset's tiles fix (channels, shapes).
        physical: `f(config, network, scale, metadata) -> keras.Model`: the trained network
            (normalised outputs) as a model with physical outputs for any valid size, ending in
            a `velnet.networks.unet3d.ToPhysical` layer that carries `metadata` (a dict).
        search: `f(hp, config) -> dict`: declares the builder's hyperparameters in a
            keras-tuner `HyperParameters` (defaults from the builder config `config`) and
            returns their values by builder argument.
        stride: `f(config) -> int`: spatial sizes the network takes are multiples of it.
    """

    build: object
    presets: dict
    shapes: object
    physical: object
    search: object
    stride: object


def _wu_physical(config, network, scale, metadata):
    return unet3d.physical_model(config, network.get_weights(), scale, metadata)


def _halo_physical(config, network, scale, metadata):
    return halo_unets.physical_halo_model(network, scale, metadata)


def _halo_vector_physical(config, network, scale, metadata):
    return halo_unets.physical_halo_model(network, scale, metadata, vector=True)


def _wu_search(hp, config):
    """The Wu et al. U-net's width multiplier."""
    width = float(config["width_multiplier"])
    return {"width_multiplier": hp.Choice("width_multiplier", sorted({*WIDTH_MULTIPLIERS, width}), default=width)}


def _halo_search(hp, config):
    """The halo paper's N1-N3 and dropout rate."""
    values = {name: hp.Choice(name, sorted({*choices, config[name]}), default=config[name])
              for name, choices in HALO_WIDTHS.items()}
    low, high, step = DROPOUT_RANGE
    values["dropout"] = hp.Float("dropout", low, high, step=step, default=config["dropout"])
    return values


def _wu_stride(config):
    return 2 ** (len(unet3d.builder_config(unet3d.unet3d, config)["widths"]) - 1)


def _halo_stride(config):
    return halo_unets.TOTAL_STRIDE


BUILDERS = {
    "unet3d": Builder(unet3d.unet3d, unet3d.PRESETS,
                      lambda m: {"input_shape": m.input_shape, "out_channels": m.target_shape[-1]},
                      _wu_physical, _wu_search, _wu_stride),
    "halo_unet": Builder(halo_unets.halo_unet, halo_unets.PRESETS,
                         lambda m: {"input_channels": m.input_shape[-1], "output_channels": m.target_shape[-1]},
                         _halo_physical, _halo_search, _halo_stride),
    "halo_velocity_unet": Builder(halo_unets.halo_velocity_unet, halo_unets.PRESETS,
                                  lambda m: {"input_channels": m.input_shape[-1]},
                                  _halo_vector_physical, _halo_search, _halo_stride),
}
"""Each task's network builder, by name."""
LOSSES = {"mse": keras.losses.MeanSquaredError, "magnitude_direction": MagnitudeDirectionLoss}
"""Training losses by name: MSE (Wu et al.; eq. 5 of the halo paper) and eq. 6."""
BASE = "base"
"""`residual_channels` value that stands for the dataset's whole-box estimate of the target."""


def network_config(model_config, manifest):
    """The builder arguments of a model config on a dataset, as a JSON-ready dict.

    Args:
        model_config: a preset name, or a dict of builder arguments with an optional
            "preset" key (default: the task's `preset`).
        manifest: the dataset's `Manifest` (task, tile shapes, input channels).

    Returns:
        Every argument of the task's builder, its input and output channels (and, for the
        Wu U-net, tile shape) from the dataset; `residual_channels` "base" resolved to the
        dataset's channels.

    Raises:
        VelnetInputError: naming the manifest: an unknown preset or argument, shapes that
            differ from the dataset's, or a residual model without a whole-box vector input.
    """
    task = get_task(manifest.task, manifest.path)
    builder = BUILDERS[task.network]
    requested = {"preset": model_config} if isinstance(model_config, str) else dict(model_config)
    preset = requested.pop("preset", task.preset)
    if preset not in builder.presets:
        raise VelnetInputError(manifest.path, f"Unknown preset for the {task.name} task; expected one of "
                                              f"{sorted(builder.presets)}. Received: preset={preset!r}")
    shapes = builder.shapes(manifest)
    for key, value in shapes.items():
        if key in requested and json.loads(json.dumps(requested[key])) != value:
            raise VelnetInputError(manifest.path, f"model {key}={requested[key]} differs from the dataset's {value}")
    try:
        config = unet3d.builder_config(builder.build, {**builder.presets[preset], **requested, **shapes})
    except ValueError as err:
        raise VelnetInputError(manifest.path, str(err)) from None
    base = manifest.input_spec.base_channels
    if config.get("residual_channels") == BASE and base:
        config["residual_channels"] = base
    residual = config.get("residual_channels")
    if residual is not None and list(residual) != base:
        held = f"channels {base}" if base else "no such channels"
        raise VelnetInputError(
            manifest.path, f"the residual model adds input channels {residual} (the whole-box estimate of the "
                           f"target: linear theory or a classical estimate) to its output, but the dataset's inputs "
                           f"hold {held}: make the dataset with linear_input=True (velnet prep --linear-input), or "
                           "use a model without residual_channels")
    return config


def build_network(model_config, manifest):
    """The builder config and the training network (normalised outputs) of a model config on a dataset.

    Raises:
        VelnetInputError: naming the manifest, for a config that does not fit the dataset's
            tiles (see `network_config`).
    """
    config = network_config(model_config, manifest)
    try:
        network = BUILDERS[get_task(manifest.task).network].build(**config)
    except ValueError as err:
        raise VelnetInputError(manifest.path, f"the network cannot take these tiles: {err}") from None
    spatial = list(network.compute_output_shape((None, *manifest.input_shape))[1:-1])
    if spatial != manifest.target_shape[:-1]:
        raise VelnetInputError(
            manifest.path, f"the network maps {manifest.input_shape[:-1]} input cells to {spatial} output cells but "
                           f"the targets are {manifest.target_shape[:-1]}: n_valid must equal the tile margin "
                           f"{manifest.tile['margin']}. Received: n_valid={config.get('n_valid')}")
    return config, network


def task_loss(task):
    """The training loss of a task (`LOSSES`)."""
    return LOSSES[task.loss]()


def physical_network(task, config, network, scale, metadata):
    """The trained network with physical outputs for any tile size, ending in `ToPhysical`.

    Args:
        task: the `Task`.
        config: the builder config of the network.
        network: the trained network.
        scale: target units per normalised unit.
        metadata: the `ModelMetadata` stored in the model.
    """
    return BUILDERS[task.network].physical(config, network, scale, metadata.to_dict())


@dataclass(frozen=True, kw_only=True)
class ModelMetadata(TileData):
    """What a trained model knows of its data, stored in its `ToPhysical` layer: the `TileData`
    of its training set (models saved before tasks existed are wu2021 models) and model_config,
    the builder arguments."""

    model_config: dict

    @property
    def cell_size(self):
        """The training cells' size, Mpc/h."""
        return self.box_size / self.nmesh

    @property
    def stride(self):
        """Spatial sizes the network takes are multiples of this (`Builder.stride`)."""
        return BUILDERS[get_task(self.task).network].stride(self.model_config)

    @classmethod
    def of(cls, manifest, model_config):
        """The metadata of a network trained on a dataset with a builder config."""
        return cls(model_config=model_config,
                   **{f.name: getattr(manifest, f.name) for f in dataclasses.fields(TileData)})

    def to_dict(self):
        """The JSON-ready dict stored in the model."""
        out = dataclasses.asdict(self)
        out[SPEC_KEY] = self.input_spec.to_dict()
        return out

    @classmethod
    def from_dict(cls, metadata, path=None):
        """The typed metadata of a model's stored dict.

        Raises:
            VelnetInputError: naming `path`: missing keys, an unknown task or input spec.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        missing = sorted({f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
                         - set(metadata))
        if missing:
            raise VelnetInputError(path, f"model metadata lacks {missing}: not a model saved by `velnet train`")
        get_task(metadata.get("task", LEGACY_TASK), path)
        return cls(**{**{k: v for k, v in metadata.items() if k in known},
                      SPEC_KEY: InputSpec.from_dict(metadata, path)})

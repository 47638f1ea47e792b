"""What a network learns, as data: the tasks of both papers.

A `Task` names its targets, its network builder and loss, whether the network is periodic
(whole boxes, no margins) or cuts tiles with margins, and the input channels it takes by
default (`inputs`). Its normalisation is the same for every task: targets and input fields
are divided by the power of two nearest their rms over the training tiles, so normalising
and undoing it are exact. A shard manifest and a trained model name their task; `velnet
prep`, `train`, `tune` and `predict` run every task through the same code.

    wu2021          Wu et al. 2021: ln(1 + rho/rho_mean) in 32^3 tiles -> velocity or momentum
                    on the central 20^3 (`velnet.networks.unet3d.unet3d`, MSE)
    halo-density    the 2024 halo paper's stage one: the redshift-space halo channels (and,
                    with `linear`, the linear real-space density of the whole box) -> the
                    real-space density, whole periodic boxes (`halo_unet`, eq. 5)
    halo-velocity   its stage two: halo channels, stage one's density and the linear
                    velocity (or momentum) of eq. 2-3 -> abs(v) and direction, recombined
                    into the velocity or momentum (`halo_velocity_unet`, eq. 6)
"""
from dataclasses import dataclass

from velnet.data.inputs import InputSpec
from velnet.errors import VelnetInputError

HALO_CHANNEL_PREFIX = "halos_s_"
"""Halo fields files name their redshift-space halo channels halos_s_0, halos_s_1, ..."""
LINEAR_FIELDS = {"velocity": "linear_velocity_s", "momentum": "linear_momentum_s"}
"""The halo fields file's linear inputs of eq. 2-3, by stage-two target."""
LINEAR_DENSITY = "linear_density_s"
"""The halo fields file's linear real-space density from the redshift-space halos
(`velnet.physics.rsd.linear_density`)."""
UNITS = {"velocity": "km/s", "momentum": "km/s", "density": "rho/rho_mean"}
"""Units of each target."""


@dataclass(frozen=True)
class Task:
    """One kind of network of one paper.

    Attributes:
        name: key of `TASKS`.
        targets: fields it may predict (the first is the default).
        network: builder of `velnet.networks.builders.BUILDERS`.
        loss: "mse" or "magnitude_direction" (eq. 6).
        periodic: the network pads periodically and predicts whole boxes in one pass
            (tiles without margins); otherwise tiles with `margin` cells of context.
        tile: default target tile side, cells.
        margin: default input margin, cells (0 for periodic networks).
        preset: builder preset of a model config that names none (full size).
        laptop_preset: the command line's default preset (small enough for a laptop).
    """

    name: str
    targets: tuple
    network: str
    loss: str
    periodic: bool
    tile: int
    margin: int
    preset: str
    laptop_preset: str

    def inputs(self, target, field_names=(), density_model=None, linear=False, base=None, **wu_options):
        """The default input channels of this task.

        Args:
            target: the target.
            field_names: the fields a box's file holds (the halo channels are found there).
            density_model: the stage-one model (halo-velocity).
            linear: add a linear estimate of the target from the whole box (the residual
                presets' base): wu2021 linear theory of the density, halo-density the
                file's `LINEAR_DENSITY`. halo-velocity has eq. 2-3's unless `base` is given.
            base: a classical reference whose estimate of the target replaces the linear one:
                wu2021 a `ClassicalEstimator` (implies `linear`), the halo tasks a
                `HaloFilter` or `Reconstruction` of the box's halo channels.
            **wu_options: `InputSpec` options of the wu2021 task (smoothing, context).

        Raises:
            VelnetInputError: options this task does not take, or no halo channels.
        """
        if density_model and self.name != "halo-velocity":
            raise VelnetInputError(None, f"a density model is an input of the halo-velocity task, not of {self.name}")
        if self.name == "wu2021":
            return InputSpec(linear=linear or base is not None, base=base, **wu_options)
        if wu_options and any(wu_options.values()):
            raise VelnetInputError(None, f"{sorted(k for k, v in wu_options.items() if v)} are inputs of the wu2021 "
                                         f"task, not of {self.name}")
        if linear and self.name != "halo-density":
            raise VelnetInputError(None, f"the {self.name} task's whole-box input is always eq. 2-3's linear "
                                         f"{target}; a linear input is an option of wu2021 and halo-density")
        halos = sorted((n for n in field_names if n.startswith(HALO_CHANNEL_PREFIX)),
                       key=lambda n: int(n[len(HALO_CHANNEL_PREFIX):]))
        if not halos:
            raise VelnetInputError(None, f"the {self.name} task reads the halo channels {HALO_CHANNEL_PREFIX}0.. of a "
                                         f"halo fields file (velnet halo-fields); the file holds {sorted(field_names)}")
        reference = {"model": base, "target": target} if base is not None else None
        if self.name == "halo-density":
            return InputSpec(fields=halos, density=None, scalar_field=LINEAR_DENSITY if linear and not base else None,
                             reference=reference)
        if not density_model:
            raise VelnetInputError(None, "the halo-velocity task takes stage one's density: give the trained "
                                         "halo-density model (velnet prep --density-model)")
        return InputSpec(fields=halos, density="model", density_model=str(density_model),
                         vector_field=None if base else LINEAR_FIELDS[target], reference=reference)

    def check(self, target, margin):
        """Raise VelnetInputError unless the task predicts `target` with tiles of this margin."""
        if target not in self.targets:
            raise VelnetInputError(None, f"the {self.name} task predicts {self.targets}. Received: target={target!r}")
        if self.periodic and margin:
            raise VelnetInputError(None, f"the {self.name} network pads its tiles periodically: their margin must be "
                                         f"0. Received: margin={margin}")


TASKS = {
    "wu2021": Task("wu2021", ("velocity", "momentum"), "unet3d", "mse", False, 20, 6, "wu2021-text", "tiny"),
    "halo-density": Task("halo-density", ("density",), "halo_unet", "mse", True, 32, 0, "halo2024", "halo-tiny"),
    "halo-velocity": Task("halo-velocity", ("velocity", "momentum"), "halo_velocity_unet", "magnitude_direction",
                          True, 32, 0, "halo2024", "halo-tiny"),
}


def get_task(name, path=None):
    """The `Task` called `name`.

    Raises:
        VelnetInputError: naming `path` (the manifest or model that names it), for an unknown task.
    """
    if name not in TASKS:
        raise VelnetInputError(path, f"task must be one of {sorted(TASKS)}. Received: task={name!r}")
    return TASKS[name]


@dataclass(frozen=True, kw_only=True)
class TileData:
    """What the tiles of a dataset hold, as its network sees them: the part of a shard manifest a
    trained model keeps (`velnet.data.manifest.Manifest`, `velnet.networks.builders.ModelMetadata`).

    Attributes:
        task: the `TASKS` name (datasets and models made before tasks existed: wu2021).
        input_name, target_name: what the inputs and the target are.
        input_shape, target_shape: one tile's `(n, n, n, channels)`.
        input_vector_slices, target_vector_slices: `[start, stop)` of their 3-vectors.
        input_spec: the `InputSpec` of the input channels.
        tile: {input, target, margin} cells (and subfield).
        normalisation: input_transform, target_scale (target units per stored unit),
            target_units, undo.
        cosmology: the boxes' cosmology as a dict.
        box_size: Mpc/h. nmesh: cells per side. redshift: z.
    """

    task: str = "wu2021"
    input_name: str
    target_name: str
    input_shape: list
    target_shape: list
    input_vector_slices: list
    target_vector_slices: list
    input_spec: InputSpec = InputSpec()
    tile: dict
    normalisation: dict
    cosmology: dict
    box_size: float
    nmesh: int
    redshift: float

    @property
    def target_scale(self):
        """Target units per stored (normalised) unit."""
        return self.normalisation["target_scale"]

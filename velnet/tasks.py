"""What a network learns, as data: the targets, the tasks of both papers and their input recipes.

`TARGETS` is the one table of the fields a network predicts: scalar or vector, units, how it
follows from a velocity field (its linear-theory estimate; how `velnet predict` forms it
when no model predicts it) and its normalisation. `TASKS` is the one table of tasks: each
names its targets, its network builder (`velnet.networks.builders.BUILDERS`) and loss, its
tiles, its presets and its input `Recipe`. A shard manifest and a trained model name their
task; `velnet prep`, `train`, `tune`, `predict` and `evaluate` run every task through the
same code, so a new task is a row here and a builder row (and, for new statistics, a report
row of `velnet.evaluation.REPORTS`), and nothing else.

    wu2021          Wu et al. 2021: ln(1 + rho/rho_mean) in 32^3 tiles -> velocity or momentum
                    on the central 20^3 (`velnet.networks.unet3d.unet3d`, MSE)
    halo-density    the 2024 halo paper's stage one: the redshift-space halo channels (and,
                    with `linear`, the linear real-space density of the whole box) -> the
                    real-space density, whole periodic boxes (`halo_unet`, eq. 5)
    halo-velocity   its stage two: halo channels, stage one's predicted density (a field of
                    the box's predictions file) and the linear velocity (or momentum) of
                    eq. 2-3 -> abs(v) and direction, recombined into the vector (eq. 6)
"""
from dataclasses import dataclass, field

from velnet.data.inputs import DENSITY_FIELD, PREDICTED_DENSITY, InputSpec
from velnet.errors import VelnetInputError
from velnet.fields.field import UNITS
from velnet.physics.linear import momentum_of

VELOCITY, DENSITY = "velocity", DENSITY_FIELD
"""The targets other targets are formed from: v, and rho/rho_mean."""
LEGACY_TASK = DEFAULT_TASK = "wu2021"
"""The task of datasets and models made before tasks existed, and the default one."""
NORMALISATIONS = ("rms", "std")
"""How a target's scale is taken over the training tiles: the power of two nearest the rms of
its components, or nearest their standard deviation (for fields with a large mean)."""


def _itself(density, velocity):
    """The velocity, as the velocity's own estimate."""
    return velocity


@dataclass(frozen=True)
class Target:
    """A field a network predicts.

    Attributes:
        name: its name in fields files.
        vector: a 3-vector `(N, N, N, 3)`, else a scalar `(N, N, N)`.
        units: its units.
        of_velocity: None, or `f(density, velocity) -> array` of this target from the arrays of
            a velocity (km/s, `(..., 3)`) and the density (rho/rho_mean) on the same cells, cell
            by cell (so a few x-planes at a time do): the target's linear-theory input channels
            apply it to linear theory (or a classical estimate), and `velnet predict` to the
            predicted velocity when no model predicts this target.
        normalisation: one of `NORMALISATIONS`.
    """

    name: str
    vector: bool
    units: str
    of_velocity: object = None
    normalisation: str = "rms"

    def formed(self, density, velocity):
        """This target's `Field` from a velocity `Field` (km/s) and a density `Field` (`of_velocity`)."""
        return velocity.with_value(self.of_velocity(density.value, velocity.value), self.name)

    @property
    def components(self):
        """3 for a vector, 1 for a scalar."""
        return 3 if self.vector else 1


TARGETS = {
    VELOCITY: Target(VELOCITY, True, UNITS[VELOCITY], _itself),
    "momentum": Target("momentum", True, UNITS["momentum"], momentum_of),
    DENSITY: Target(DENSITY, False, UNITS[DENSITY]),
}
"""Every target, by name."""


def get_target(name):
    """The `Target` called `name`; VelnetInputError for an unknown one."""
    if name not in TARGETS:
        raise VelnetInputError(None, f"target must be one of {sorted(TARGETS)}. Received: target={name!r}")
    return TARGETS[name]


@dataclass(frozen=True)
class Recipe:
    """How a task's input channels are made from a box's fields: an `InputSpec` per target.

    Attributes:
        field_prefix: the box's scalar fields whose names are this prefix and a number (the
            halo paper's "halos_s_0".."halos_s_3"), in the order of the number, are the first
            channels; None: none.
        density: "ln" (ln(1 + rho/rho_mean) of the box's density), "predicted" (a stage-one
            model's rho/rho_mean, the field `PREDICTED_DENSITY` of the box's predictions
            file, `velnet prep --predicted`) or None.
        estimates: target -> the box's field holding a whole-box estimate of it (eq. 2-3's
            linear velocity); empty: linear theory from the density is the estimate.
        always: the estimate is always an input; otherwise only when asked for (`linear`).
        options: `InputSpec` options a user may set: "linear" (the estimate), "base" (a
            classical reference whose estimate replaces it: for linear theory a
            `velnet.physics.classical.ClassicalEstimator`, for a field of the box a halo filter
            or reconstruction, `velnet.physics.references`), and, for linear theory,
            "smoothing" and "context".
    """

    field_prefix: str = None
    density: str = "ln"
    estimates: dict = field(default_factory=dict)
    always: bool = False
    options: tuple = ("linear", "smoothing", "base", "context")

    def spec(self, task, target, field_names=(), linear=False, base=None, **options):
        """The `InputSpec` of `task`'s inputs for `target`, from the names of a box's fields.

        Raises:
            VelnetInputError: an option the recipe does not take, or fields the box lacks.
        """
        asked = sorted(k for k, v in {"linear": linear, "base": base, **options}.items() if v)
        refused = [k for k in asked if k not in self.options]
        if refused:
            raise VelnetInputError(None, f"the {task} task takes no {refused} input option(s); its options: "
                                         f"{list(self.options)}")
        fields = self._fields(task, field_names)
        if self.density == "predicted" and PREDICTED_DENSITY not in field_names:
            raise VelnetInputError(None, f"the {task} task reads a stage-one density predicted for each box: predict "
                                         "it with `velnet predict BOX DENSITY_MODEL --out P.h5` and give the "
                                         "predictions files to `velnet prep --predicted`")
        wanted = self.always or linear or base is not None
        estimate = self.estimates.get(target) if wanted else None
        if self.estimates and wanted and estimate is None:
            raise VelnetInputError(None, f"the {task} task has no whole-box estimate of {target!r}")
        reference = None
        if self.estimates and base is not None:  # a halo reference's estimate replaces the file's
            reference, estimate = {"model": base, "target": target}, None
        vector = get_target(target).vector
        return InputSpec(linear=(bool(linear) or base is not None) and not self.estimates,
                         base=None if self.estimates else base, fields=fields, density=self.density,
                         vector_field=estimate if vector else None, scalar_field=None if vector else estimate,
                         reference=reference, **options)

    def _fields(self, task, field_names):
        """The box's fields named `field_prefix` and a number, in the order of the number."""
        if self.field_prefix is None:
            return ()
        prefix = self.field_prefix
        fields = sorted((n for n in field_names if n.startswith(prefix) and n[len(prefix):].isdigit()),
                        key=lambda n: int(n[len(prefix):]))
        if not fields:
            raise VelnetInputError(None, f"the {task} task reads the fields {prefix}0, {prefix}1, ... (velnet "
                                         f"halo-fields files); the box holds {sorted(field_names)}")
        return tuple(fields)


@dataclass(frozen=True)
class Task:
    """One kind of network of one paper.

    Attributes:
        name: key of `TASKS`.
        targets: names of the `TARGETS` it may predict (the first is the default).
        network: builder of `velnet.networks.builders.BUILDERS`.
        loss: loss of `velnet.networks.builders.LOSSES`: "mse" or "magnitude_direction" (eq. 6).
        periodic: the network pads periodically and predicts whole boxes in one pass
            (tiles without margins); otherwise tiles with `margin` cells of context.
        tile: default target tile side, cells.
        margin: default input margin, cells (0 for periodic networks).
        preset: builder preset of a model config that names none (full size).
        laptop_preset: the command line's default preset (small enough for a laptop).
        recipe: its input channels (`Recipe`).
        reference: the classical reference `velnet baseline` fits for it by default
            (`velnet.api.REFERENCE_METHODS`): "estimator" (the matter's velocity from its
            density) or "filter" (the halo filter of the redshift-space halo channels).
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
    recipe: Recipe = Recipe()
    reference: str = "estimator"

    def inputs(self, target, field_names=(), linear=False, **options):
        """The input channels of this task for `target` (see `Recipe.spec`)."""
        return self.recipe.spec(self.name, target, field_names, linear, **options)

    def check(self, target, margin):
        """Raise VelnetInputError unless the task predicts `target` with tiles of this margin."""
        if target not in self.targets:
            raise VelnetInputError(None, f"the {self.name} task predicts {self.targets}. Received: target={target!r}")
        if self.periodic and margin:
            raise VelnetInputError(None, f"the {self.name} network pads its tiles periodically: their margin must be "
                                         f"0. Received: margin={margin}")


HALO_PREFIX = "halos_s_"
"""Halo fields files name their redshift-space halo channels halos_s_0, halos_s_1, ..."""

TASKS = {
    "wu2021": Task("wu2021", (VELOCITY, "momentum"), "unet3d", "mse", False, 20, 6, "wu2021-text", "tiny"),
    "halo-density": Task("halo-density", (DENSITY,), "halo_unet", "mse", True, 32, 0, "halo2024", "halo-tiny",
                         Recipe(HALO_PREFIX, None, {DENSITY: "linear_density_s"}, options=("linear", "base")),
                         reference="filter"),
    "halo-velocity": Task("halo-velocity", (VELOCITY, "momentum"), "halo_velocity_unet", "magnitude_direction",
                          True, 32, 0, "halo2024", "halo-tiny",
                          Recipe(HALO_PREFIX, "predicted",
                                 {VELOCITY: "linear_velocity_s", "momentum": "linear_momentum_s"}, True,
                                 ("base",)),
                          reference="filter"),
}
"""Every task, by name."""


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
        task: the `TASKS` name (datasets and models made before tasks existed: `LEGACY_TASK`).
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

    task: str = LEGACY_TASK
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

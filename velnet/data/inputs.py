"""The network's input channels of a whole box, shared by shard writing and prediction.

An `InputSpec` lists them, in this order:

1. `fields`: scalar fields of the box's fields file, each divided by `field_scale` (the 2024
   halo paper's redshift-space halo channels "halos_s_0" .. "halos_s_3");
2. the density: ln(1 + rho/rho_mean) of the file's "density" (`density="ln"`, Wu et al.
   2021, eq. 1), or rho/rho_mean predicted from the whole box by a stage-one model, read from
   the box's predictions file as the field `PREDICTED_DENSITY` (`density="predicted"`: the
   2024 paper's stage two sees stage one's prediction; `density_model` names the model, which
   `velnet predict` runs where a box has no such field), or none;
3. a 3-vector from the whole box, divided by the dataset's target scale so that it is in the
   normalised units of the target: the linear-theory target computed from the file's
   density (`linear`: the target's `of_velocity` of v_L (`velnet.tasks.TARGETS`): velocity
   v_L, or momentum (rho/rho_mean) v_L, with a Gaussian of
   radius `smoothing` Mpc/h, or the velocity of the fitted classical estimator `base`, a
   `velnet.physics.classical.ClassicalEstimator` as a dict), or a vector field of the file
   (`vector_field`: the 2024 paper's linear velocity or momentum of eq. 2-3); or, for a
   scalar target, a scalar field of the file (`scalar_field`: the linear real-space density
   from the redshift-space halos, "linear_density_s"), divided by the target scale too; or the
   target as a classical halo reference predicts it from the box's halo channels (`reference`:
   a `velnet.physics.halo_filter.HaloFilter` or `velnet.physics.reconstruction.Reconstruction`
   as a dict, and the target it gives: a scalar for the density, a 3-vector otherwise). A
   32^3 window is smaller than the bulk flows that carry most of the velocity variance and
   the large-scale density modes; an estimate of the target from the whole box brings them
   in, and a residual network adds it back to its output (`base_channels` is that
   network's base);
4. the context window (`context` = f): ln(1 + rho/rho_mean) averaged over f^3 blocks, in a
   window of the input tile's shape centred on the same point, so an s^3 input of 2 Mpc/h
   cells also sees s f cells around its target. It is not a field of the box but of each
   window, so it is added when windows are cut (`velnet.data.windows.InputWindows`), after
   the per-cell channels of `box_inputs`; the Oh symmetries act on it as on the density, since
   both windows share their centre.

The spec is stored, as `InputSpec.to_dict` writes it, in the shard manifest and in the
trained model's metadata under `SPEC_KEY`; manifests and models without it have
ln(1 + rho/rho_mean) alone.

A box's fields come from its fields file and, for predicted channels, from its predictions
file (`velnet predict`), whose fields join the box with the prefix `PREDICTED`
(`velnet.data.boxes.load_box`).
"""
import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_density
from velnet.physics.classical import ClassicalEstimator
from velnet.physics.linear import linear_velocity

SPEC_KEY = "input_spec"
DENSITY_CHANNELS = ("ln", "predicted", None)
"""What the density channel holds: ln(1 + rho/rho_mean), a model's prediction, or nothing."""
LEGACY_DENSITY = {"model": "predicted"}
"""Density channels of specs stored by earlier versions, and their names now."""
DENSITY_FIELD = "density"
"""The box's field of rho/rho_mean, which the "ln" density channel, linear theory and the context read."""
PREDICTED = "predicted_"
"""Prefix of the fields a box's predictions file adds to the box (`velnet.data.boxes.load_box`)."""
PREDICTED_DENSITY = PREDICTED + DENSITY_FIELD
"""The field of a stage-one model's rho/rho_mean, the channel of `density="predicted"`."""


@dataclass(frozen=True)
class InputSpec:
    """The input channels of a network, as data (see the module docstring).

    Attributes:
        linear: channels of the linear-theory target from the file's density.
        smoothing: Gaussian radius of that linear theory, Mpc/h (0: none).
        base: a `ClassicalEstimator` dict whose velocity replaces linear theory (needs
            `linear` and no smoothing).
        context: coarsening factor f of the context window (0: none; else an integer >= 2).
        fields: names of scalar fields of the fields file, the first channels.
        field_scale: what those fields are divided by (None until a dataset fixes it).
        density: "ln", "predicted" or None (see `DENSITY_CHANNELS`).
        density_model: path of the model whose prediction is the "predicted" density channel
            (where known: `velnet predict` runs it on boxes that lack `PREDICTED_DENSITY`).
        vector_field: name of a vector field of the file, instead of `linear`.
        scalar_field: name of a scalar field of the file estimating a scalar target over
            the whole box, instead of a vector.
        reference: {"model": a halo reference dict, "target": the field of its prediction}:
            the classical halo reference's estimate of the target from the box's halo channels.

    Raises:
        VelnetInputError: a combination that does not make a set of channels (the message
            says which, without a file; `from_dict` adds the file).
    """

    linear: bool = False
    smoothing: float = 0.0
    base: dict = None
    context: int = 0
    fields: tuple = ()
    field_scale: float = None
    density: str = "ln"
    density_model: str = None
    vector_field: str = None
    scalar_field: str = None
    reference: dict = None

    def __post_init__(self):
        smoothing = float(self.smoothing or 0.0)
        object.__setattr__(self, "smoothing", smoothing)
        object.__setattr__(self, "fields", tuple(self.fields))
        if not (math.isfinite(smoothing) and smoothing >= 0):
            raise VelnetInputError(None, f"smoothing must be a radius >= 0 Mpc/h. Received: smoothing={smoothing}")
        if smoothing and not self.linear:
            raise VelnetInputError(None, "smoothing applies to the linear-theory input only: ask for that input too "
                                         f"(velnet prep --linear-input). Received: smoothing={smoothing}")
        if self.context not in (0, None) and not (float(self.context).is_integer() and int(self.context) >= 2):
            raise VelnetInputError(None, "context must be a coarsening factor, an integer >= 2 (0: none). "
                                         f"Received: context={self.context}")
        object.__setattr__(self, "context", int(self.context or 0))
        if self.base is not None:
            if not self.linear or smoothing:
                raise VelnetInputError(None, "a classical base replaces the linear-theory input: ask for that input "
                                             "(velnet prep --linear-input) with no --smoothing")
            base = self.base if isinstance(self.base, ClassicalEstimator) else ClassicalEstimator.from_dict(self.base)
            object.__setattr__(self, "base", base.to_dict())
        if self.density not in DENSITY_CHANNELS:
            raise VelnetInputError(None, f"density must be one of {DENSITY_CHANNELS}. "
                                         f"Received: density={self.density!r}")
        if self.density_model and self.density != "predicted":
            raise VelnetInputError(None, "a density model makes the predicted density channel only: "
                                         f"density='predicted'. Received: density={self.density!r}, "
                                         f"density_model={self.density_model!r}")
        if sum(map(bool, (self.linear, self.vector_field, self.scalar_field, self.reference))) > 1:
            raise VelnetInputError(None, "one whole-box estimate of the target: linear theory, the field "
                                         f"{self.vector_field or self.scalar_field!r}, a classical halo reference, "
                                         "or none")
        if self.reference is not None:
            object.__setattr__(self, "reference", _checked_reference(self.reference))
        if (self.linear or self.context) and self.density != "ln":
            raise VelnetInputError(None, "linear theory and the context window are computed from the density: "
                                         "they need the ln(1 + rho/rho_mean) channel")
        if self.field_scale is not None and not (math.isfinite(self.field_scale) and self.field_scale > 0):
            raise VelnetInputError(None, f"field_scale must be > 0. Received: field_scale={self.field_scale}")
        if not self.channels:
            raise VelnetInputError(None, "the spec gives no input channel")

    @property
    def _scalar_base(self):
        """Whether the whole-box estimate is a scalar (a density)."""
        return bool(self.scalar_field) or bool(self.reference and self.reference["target"] == "density")

    @property
    def _vector_base(self):
        return bool(self.linear or self.vector_field or (self.reference and not self._scalar_base))

    @property
    def channels(self):
        """Number of input channels."""
        return (len(self.fields) + (self.density is not None) + 3 * self._vector_base + self._scalar_base
                + bool(self.context))

    @property
    def base_channels(self):
        """`[start, stop)` of the whole-box estimate of the target (a residual network's base), or None."""
        start = len(self.fields) + (self.density is not None)
        if self._scalar_base:
            return [start, start + 1]
        return [start, start + 3] if self._vector_base else None

    @property
    def vector_channels(self):
        """`[start, stop)` of the whole-box vector, or None."""
        return None if self._scalar_base else self.base_channels

    @property
    def vector_slices(self):
        """The channel ranges that hold 3-vectors (turned by the Oh augmentation)."""
        return [self.vector_channels] if self.vector_channels else []

    def field_names(self):
        """The fields of a box's file these channels read (a density model reads its own too)."""
        names = list(self.fields)
        if self.density == "ln":
            names.append(DENSITY_FIELD)
        elif self.density == "predicted":
            names.append(PREDICTED_DENSITY)
        names += [name for name in (self.vector_field, self.scalar_field) if name]
        return names

    def describe(self, target):
        """The channels in words, for the manifest's normalisation record."""
        parts, channel = [], 0
        if self.fields:
            parts.append(f"channels 0-{len(self.fields) - 1}: {', '.join(self.fields)} / {self.field_scale:g}")
            channel = len(self.fields)
        if self.density == "ln":
            parts.append(f"channel {channel}: ln(1 + rho/rho_mean)")
        elif self.density == "predicted":
            parts.append(f"channel {channel}: rho/rho_mean predicted from the whole box "
                         f"({PREDICTED_DENSITY}, by {self.density_model or 'a stage-one model'})")
        if self.reference:
            origin = (f"{self.reference['target']} of the whole box from the classical halo reference "
                      f"({self.reference['model']['format']})")
            start, stop = self.base_channels
            parts.append(f"channels {start}-{stop - 1}: {origin} / target_scale")
        elif self.vector_channels:
            if self.vector_field:
                origin = f"the field {self.vector_field}"
            elif self.base:
                origin = (f"{target} of the whole box from the classical estimator "
                          f"({ClassicalEstimator.from_dict(self.base).label}, per-k weights)")
            else:
                origin = f"{target} of the whole box from linear theory (Gaussian R = {self.smoothing:g} Mpc/h)"
            start, stop = self.vector_channels
            parts.append(f"channels {start}-{stop - 1}: {origin} / target_scale")
        elif self.scalar_field:
            parts.append(f"channel {self.base_channels[0]}: the field {self.scalar_field} / target_scale")
        if self.context:
            parts.append(f"channel {self.channels - 1}: ln(1 + rho/rho_mean) of {self.context}^3-cell blocks in a "
                         "window of the input's shape with the same centre")
        return "; ".join(parts)

    def to_dict(self):
        """The stored form: {"linear": ...} and every other key that differs from its default."""
        out = {"linear": self.linear}
        if self.linear:
            out["smoothing"] = self.smoothing
        if self.base:
            out["base"] = self.base
        if self.context:
            out["context"] = self.context
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key in ("fields", "field_scale", "density", "density_model", "vector_field", "scalar_field", "reference"):
            value = getattr(self, key)
            if value != defaults[key]:
                out[key] = list(value) if key == "fields" else value
        return out

    @classmethod
    def from_dict(cls, mapping, path=None):
        """The spec stored under `SPEC_KEY` in a manifest or model metadata dict (the default if absent).

        Raises:
            VelnetInputError: naming `path`, for a malformed spec.
        """
        spec = mapping.get(SPEC_KEY, {"linear": False})
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(spec, dict) or set(spec) - known:
            raise VelnetInputError(path, f"{SPEC_KEY} must be a dict with keys among {sorted(known)}. "
                                         f"Received: {SPEC_KEY}={spec!r}")
        if spec.get("density") in LEGACY_DENSITY:
            spec = {**spec, "density": LEGACY_DENSITY[spec["density"]]}
        try:
            return cls(**spec)
        except VelnetInputError as err:
            raise VelnetInputError(path, err.problem) from None


def box_inputs(fields, spec, target, target_scale):
    """The per-cell input channels of a whole box (all but the context window).

    Args:
        fields: dict name -> `Field` of the box (`spec.field_names()`), with redshift and
            cosmology; scalars `(N, N, N)`, vectors `(N, N, N, 3)`.
        spec: an `InputSpec` (its field_scale set when it has fields).
        target: the `velnet.tasks.Target`: its `of_velocity` makes the linear-theory channels.
        target_scale: target units per normalised unit (the dataset's target scale).

    Returns:
        float32 `(N, N, N, C)`, C = `spec.channels` without the context window.

    Raises:
        VelnetInputError: a missing field, a density that is not rho/rho_mean (`check_density`),
            no linear theory for the target, a whole-box field of the wrong kind, or a
            non-positive scale.
    """
    missing = [name for name in spec.field_names() if name not in fields]
    if missing:
        raise VelnetInputError(None, f"the inputs need the fields {missing}; the box holds {sorted(fields)}")
    if DENSITY_FIELD in fields:
        check_density(fields[DENSITY_FIELD])
    if spec.base_channels and not target_scale > 0:
        raise VelnetInputError(None, f"target_scale must be > 0. Received: target_scale={target_scale}")
    estimate = _whole_box_estimate(fields, spec, target)  # first: making it takes the most memory
    names = spec.field_names()
    out = np.empty(fields[names[0]].value.shape[:3] + (spec.channels - bool(spec.context),), np.float32)
    for c, name in enumerate(spec.fields):
        _scaled(out[..., c], fields[name].value, spec.field_scale)
    c = len(spec.fields)
    if spec.density == "ln":
        np.log1p(fields[DENSITY_FIELD].value, out=out[..., c])  # ln_density's channel
    elif spec.density == "predicted":
        out[..., c] = fields[PREDICTED_DENSITY].value
    if estimate is not None:
        start, stop = spec.base_channels
        _scaled(out[..., start:stop], estimate if estimate.ndim == 4 else estimate[..., None], target_scale)
    return out


def _whole_box_estimate(fields, spec, target):
    """The whole-box estimate of the target (a vector or scalar array, target units), or None."""
    if spec.linear:
        if target.of_velocity is None:
            raise VelnetInputError(None, f"no linear theory for target {target.name!r}")
        density = fields[DENSITY_FIELD]
        velocity = (ClassicalEstimator.from_dict(spec.base).velocity(density) if spec.base
                    else linear_velocity(density, spec.smoothing))
        return target.of_velocity(density.value, velocity.value)
    if spec.reference:
        return reference_model(spec).predict(fields)[spec.reference["target"]].value
    for name, vector in ((spec.vector_field, True), (spec.scalar_field, False)):
        if name:
            if fields[name].is_vector != vector:
                raise VelnetInputError(None, f"the field {name!r} must be a {'vector' if vector else 'scalar'} "
                                             f"field. Received: shape {fields[name].value.shape}")
            return fields[name].value
    return None


def _scaled(out, value, scale):
    """out = value / scale in float64, cast to out's float32, a plane at a time."""
    for x in range(len(out)):
        out[x] = value[x].astype(np.float64) / scale


def _checked_reference(reference):
    """A spec's `reference` entry, checked: {"model": a halo reference dict, "target": what it gives}."""
    from velnet.physics.references import HALO_KINDS, from_dict

    if not isinstance(reference, dict) or set(reference) != {"model", "target"}:
        raise VelnetInputError(None, f"reference must be {{'model': ..., 'target': ...}}. Received: {reference!r}")
    if reference["target"] not in ("density", "velocity", "momentum"):
        raise VelnetInputError(None, "a halo reference gives the density, velocity or momentum. Received: "
                                     f"target={reference['target']!r}")
    model = reference["model"]
    model = model if isinstance(model, HALO_KINDS) else from_dict(model)
    if not isinstance(model, HALO_KINDS):
        raise VelnetInputError(None, "the reference of a halo task is a halo filter or reconstruction "
                                     "(velnet baseline --task halo-velocity)")
    return {"model": model.to_dict(), "target": reference["target"]}


def reference_model(spec):
    """The classical halo reference of a spec, as its class."""
    from velnet.physics.references import from_dict

    return from_dict(spec.reference["model"])

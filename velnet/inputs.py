"""The network's input channels of a whole box, shared by shard writing and prediction.

Channel 0 is always ln(1 + rho/rho_mean) (Wu et al. 2021, eq. 1). With the spec
{"linear": True, "smoothing": R}, channels 1-3 hold the linear-theory field of the
target (velocity v_L, or momentum (rho/rho_mean) v_L), computed from the whole periodic
box with a Gaussian of radius R Mpc/h and divided by the dataset's target scale, so they
are in the normalised units of the target. A 32^3 window is smaller than the bulk flows
that carry most of the velocity variance; v_L from the whole box brings them in.

The spec is stored in the shard manifest and in the trained model's metadata under
`SPEC_KEY`; manifests and models without it have ln(1 + rho/rho_mean) alone.
"""
import math

import numpy as np

from .errors import VelnetInputError
from .fields import ln_density
from .linear import linear_momentum, linear_velocity

SPEC_KEY = "input_spec"
DEFAULT_SPEC = {"linear": False}
LINEAR_CHANNELS = [1, 4]
"""Channel range [start, stop) of the linear-theory vector, when there is one."""


def input_spec(linear=False, smoothing=0.0):
    """A checked input spec: `{"linear": False}` or `{"linear": True, "smoothing": R}`.

    Args:
        linear: add the linear-theory field of the target as channels 1-3.
        smoothing: Gaussian radius R of the linear theory, Mpc/h (0: none); e.g. the
            radius `velnet baseline` fits on the training boxes.

    Raises:
        VelnetInputError: a negative or non-finite radius, or a radius without `linear`.
    """
    smoothing = float(smoothing or 0.0)
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise VelnetInputError(None, f"smoothing must be a radius >= 0 Mpc/h. Received: smoothing={smoothing}")
    if not linear:
        if smoothing:
            raise VelnetInputError(None, "smoothing applies to the linear-theory input only: ask for "
                                         "that input too (linear_input=True, velnet prep "
                                         f"--linear-input). Received: smoothing={smoothing}")
        return dict(DEFAULT_SPEC)
    return {"linear": True, "smoothing": smoothing}


def read_spec(mapping, path=None):
    """The checked input spec of a manifest or model metadata dict (the default if absent).

    Raises:
        VelnetInputError: naming `path`, for a malformed spec.
    """
    spec = mapping.get(SPEC_KEY, DEFAULT_SPEC)
    if not isinstance(spec, dict) or set(spec) - {"linear", "smoothing"}:
        raise VelnetInputError(path, f"{SPEC_KEY} must be a dict with keys linear and smoothing. "
                                     f"Received: {SPEC_KEY}={spec!r}")
    try:
        return input_spec(spec.get("linear", False), spec.get("smoothing", 0.0))
    except VelnetInputError as err:
        raise VelnetInputError(path, err.problem) from None


def input_layout(spec):
    """Channel count and vector channel ranges of the inputs a spec gives.

    Returns:
        `(channels, vector_slices)`: 1 and [] for ln(1 + rho/rho_mean) alone, 4 and
        [[1, 4]] with the linear-theory vector.
    """
    return (4, [list(LINEAR_CHANNELS)]) if spec["linear"] else (1, [])


def box_inputs(density, spec, target, target_scale):
    """The input channels of a whole box.

    Args:
        density: scalar `Field` of rho/rho_mean, `(N, N, N)`, with redshift and cosmology.
        spec: input spec (see `input_spec`).
        target: "velocity" or "momentum": which linear-theory field to add.
        target_scale: km/s per normalised unit (the dataset's target scale).

    Returns:
        float32 `(N, N, N, C)`: ln(1 + rho/rho_mean), then, with `spec["linear"]`, the
        linear-theory velocity or momentum (Gaussian radius `spec["smoothing"]`) computed
        on the whole periodic box, divided by `target_scale`.

    Raises:
        VelnetInputError: an unknown target or a non-positive scale.
    """
    channels = [ln_density(density).value[..., None]]
    if spec["linear"]:
        if target not in ("velocity", "momentum"):
            raise VelnetInputError(None, f"no linear theory for target {target!r}; "
                                         "it must be 'velocity' or 'momentum'")
        if not target_scale > 0:
            raise VelnetInputError(None, f"target_scale must be > 0 km/s. Received: target_scale={target_scale}")
        field = linear_velocity(density, spec["smoothing"])
        if target == "momentum":
            field = linear_momentum(density, field)
        channels.append((field.value.astype(np.float64) / target_scale).astype(np.float32))
    return np.concatenate(channels, axis=-1)

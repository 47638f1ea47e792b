"""The network's input channels of a whole box, shared by shard writing and prediction.

Channel 0 is always ln(1 + rho/rho_mean) (Wu et al. 2021, eq. 1). With the spec
{"linear": True, "smoothing": R}, channels 1-3 hold the linear-theory field of the
target (velocity v_L, or momentum (rho/rho_mean) v_L), computed from the whole periodic
box with a Gaussian of radius R Mpc/h and divided by the dataset's target scale, so they
are in the normalised units of the target. A 32^3 window is smaller than the bulk flows
that carry most of the velocity variance; v_L from the whole box brings them in.

With {"linear": True, "smoothing": 0, "base": E}, channels 1-3 hold instead the velocity of
the classical estimator E (a `velnet.classical.ClassicalEstimator` as a dict, fitted on
training boxes), or (rho/rho_mean) times it for momentum: the residual presets then learn
the correction to the best classical estimate.

With {"context": f} a last channel holds the context window (issue 8, variant 3): ln(1 +
rho/rho_mean) averaged over f^3 blocks, in a window of the input tile's shape centred on the
same point, so an s^3 input of 2 Mpc/h cells also sees s f cells (e.g. 32 x 8 = 256 Mpc/h
for f = 4) around its target. It is not a field of the box but of each window, so it is
added when windows are cut (`InputWindows`), after the per-cell channels of `box_inputs`.
The U-net takes it as one more channel; the Oh symmetries act on it as on the density,
since both windows share their centre.

The spec is stored in the shard manifest and in the trained model's metadata under
`SPEC_KEY`; manifests and models without it have ln(1 + rho/rho_mean) alone.
"""
import math

import numpy as np

from .classical import ClassicalEstimator
from .errors import VelnetInputError
from .fields import ln_density
from .linear import linear_momentum, linear_velocity
from .tiling import extract

SPEC_KEY = "input_spec"
DEFAULT_SPEC = {"linear": False}
LINEAR_CHANNELS = [1, 4]
"""Channel range [start, stop) of the linear-theory vector, when there is one."""


def input_spec(linear=False, smoothing=0.0, context=0, base=None):
    """A checked input spec: `{"linear": False}` or `{"linear": True, "smoothing": R}` (and
    `"base": E` for a classical estimator), with `"context": f` added when there is a
    context channel.

    Args:
        linear: add the linear-theory field of the target as channels 1-3.
        smoothing: Gaussian radius R of the linear theory, Mpc/h (0: none); e.g. the
            radius `velnet baseline` fits on the training boxes.
        context: coarsening factor f of the context window (0: no context channel).
        base: a `ClassicalEstimator` (or its dict) whose velocity replaces linear theory
            in channels 1-3; needs `linear` and no smoothing.

    Raises:
        VelnetInputError: a negative or non-finite radius, a radius without `linear`, a base
            without `linear` or with a radius, a malformed base, or a context factor that is
            not an integer >= 2 (or 0).
    """
    if context not in (0, None) and not (float(context).is_integer() and int(context) >= 2):
        raise VelnetInputError(None, f"context must be a coarsening factor, an integer >= 2 (0: none). "
                                     f"Received: context={context}")
    spec = _linear_spec(linear, smoothing)
    if base is not None:
        if not linear or spec["smoothing"]:
            raise VelnetInputError(None, "a classical base replaces the linear-theory input: ask for that input "
                                         "(velnet prep --linear-input) with no --smoothing")
        base = base if isinstance(base, ClassicalEstimator) else ClassicalEstimator.from_dict(base)
        spec["base"] = base.to_dict()
    if context:
        spec["context"] = int(context)
    return spec


def _linear_spec(linear, smoothing):
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
    if not isinstance(spec, dict) or set(spec) - {"linear", "smoothing", "context", "base"}:
        raise VelnetInputError(path, f"{SPEC_KEY} must be a dict with keys linear, smoothing, context and "
                                     f"base. Received: {SPEC_KEY}={spec!r}")
    try:
        return input_spec(spec.get("linear", False), spec.get("smoothing", 0.0), spec.get("context", 0),
                          spec.get("base"))
    except VelnetInputError as err:
        raise VelnetInputError(path, err.problem) from None


def input_layout(spec):
    """Channel count and vector channel ranges of the inputs a spec gives.

    Returns:
        `(channels, vector_slices)`: 1 and [] for ln(1 + rho/rho_mean) alone, 4 and
        [[1, 4]] with the linear-theory vector; one channel more with a context window.
    """
    channels, slices = (4, [list(LINEAR_CHANNELS)]) if spec["linear"] else (1, [])
    return channels + bool(spec.get("context")), slices


def box_inputs(density, spec, target, target_scale):
    """The input channels of a whole box.

    Args:
        density: scalar `Field` of rho/rho_mean, `(N, N, N)`, with redshift and cosmology.
        spec: input spec (see `input_spec`).
        target: "velocity" or "momentum": which linear-theory field to add.
        target_scale: km/s per normalised unit (the dataset's target scale).

    Returns:
        float32 `(N, N, N, C)`: ln(1 + rho/rho_mean), then, with `spec["linear"]`, the
        linear-theory velocity or momentum (Gaussian radius `spec["smoothing"]`, or the
        classical estimator `spec["base"]`) computed on the whole periodic box, divided by
        `target_scale`.

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
        field = (ClassicalEstimator.from_dict(spec["base"]).velocity(density) if spec.get("base")
                 else linear_velocity(density, spec["smoothing"]))
        if target == "momentum":
            field = linear_momentum(density, field)
        channels.append((field.value.astype(np.float64) / target_scale).astype(np.float32))
    return np.concatenate(channels, axis=-1)


def check_context(nmesh, factor):
    """Raise VelnetInputError unless the context factor (0: none) divides the mesh size."""
    if factor and nmesh % factor:
        raise VelnetInputError(None, f"context factor {factor} does not divide the {nmesh}^3 mesh. "
                                     f"Received: context={factor}, nmesh={nmesh}")


class InputWindows:
    """The network inputs of one box, cut into the windows of given tiles.

    Args:
        inputs: `(N, N, N, C)` per-cell channels of the box, from `box_inputs`.
        density: `(N, N, N)` rho/rho_mean of the same box (for the context channel).
        spec: input spec (see `input_spec`).

    Raises:
        VelnetInputError: a context factor that does not divide N.
    """

    def __init__(self, inputs, density, spec):
        self.inputs, self.density = inputs, np.asarray(density)
        self.factor = spec.get("context", 0)
        check_context(self.density.shape[0], self.factor)
        self._coarse = {}

    def __call__(self, origins, size, margin):
        """float32 `(n, size, size, size, C[+1])`: the periodic windows of the tiles whose
        target corners are `origins` `(n, 3)`, `margin` cells wider on each side (`size` =
        target + 2 margin, even); then, with a context factor, their context windows."""
        windows = extract(self.inputs, origins, size, -margin)
        if not self.factor:
            return windows
        centres = np.asarray(origins, np.int64) - margin + size // 2
        return np.concatenate([windows, self.context(centres, size)[..., None]], axis=-1)

    def context(self, centres, size):
        """Coarse windows of ln(1 + rho/rho_mean) centred on given cell corners.

        Window i holds ln(1 + mean rho/rho_mean) over f^3 blocks of cells (f the context
        factor), `size` blocks per side, centred on the corner `centres[i]` (periodic):
        block j covers cells `centres[i] + f (j - size // 2)` to f - 1 more on each axis.

        Args:
            centres: int `(n, 3)` window centres, as cell corners.
            size: blocks per side (even).

        Returns:
            float32 `(n, size, size, size)`.
        """
        centres = np.asarray(centres, np.int64)
        shifts = centres % self.factor
        out = np.empty((len(centres), size, size, size), np.float32)
        for shift in np.unique(shifts, axis=0):
            chosen = np.all(shifts == shift, axis=1)
            corners = (centres[chosen] - shift) // self.factor - size // 2
            out[chosen] = extract(self._coarse_box(tuple(shift)), corners, size)
        return out

    def _coarse_box(self, shift):
        """ln(1 + block mean of rho/rho_mean), blocks starting at cell `shift`; made once."""
        if shift not in self._coarse:
            n, f = self.density.shape[0] // self.factor, self.factor
            shifted = np.roll(self.density, [-s for s in shift], axis=(0, 1, 2)).astype(np.float64)
            self._coarse[shift] = np.log1p(shifted.reshape(n, f, n, f, n, f).mean(axis=(1, 3, 5))).astype(np.float32)
        return self._coarse[shift]

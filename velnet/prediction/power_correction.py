"""The power-preserving output: a gain per |k| that restores the power a minimum-variance field lacks.

A reconstruction fitted to the minimum squared error (least squares, MSE training) damps
every mode by its correlation with the truth, so its power falls short wherever r(k) < 1.
That field is the right one for kSZ stacking and velocity reconstruction; power spectra and
PDFs want a field with the true power. `PowerCorrection` multiplies the Fourier modes of a
predicted velocity by g(k) = sqrt(P_true / P_pred) of the velocity divergence theta_v,
summed over validation boxes, in absolute |k| bins: T(k) of theta_v becomes about 1, the
error grows (to sqrt(2 (1 - r)) of the truth's rms per mode at best). The speed |v| is a
non-linear function of the field whose small-scale power comes mostly from coupling with
the bulk flow: an isotropic gain moves it little, and where r(k) is low (k near 1 h/Mpc at
2 Mpc/h cells) matching theta_v leaves T(k) of |v| some 10-20 % high (docs/results-wu2021.md).

The correction of a model lives beside it (`correction_path`): `velnet calibrate` fits it,
`velnet predict --power-preserving` applies it.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.mesh import mesh_of
from velnet.files import declares_format, require_file, write_json
from velnet.physics.classical import absolute_kedges
from velnet.physics.linear import divergence

FORMAT = "velnet power correction"
MIN_MODES = 20
"""Bins with fewer validation modes (both k and -k counted) keep gain 1."""


def is_power_correction_file(path):
    """Whether `path` is named as a power correction (`*.power.json`) or declares itself one."""
    return str(path).endswith(".power.json") or declares_format(path, FORMAT)


def correction_path(model_path):
    """Where a model's power correction lives: `velocity.keras` -> `velocity.power.json`."""
    return Path(model_path).with_suffix(".power.json")


@dataclass
class PowerCorrection:
    """Gain per |k| bin for a model's velocity.

    Attributes:
        kedges: `(n_bins + 1,)` h/Mpc.
        gain: `(n_bins,)` factor on the Fourier modes of every velocity component.
        cell_size: Mpc/h of the validation boxes (and of the boxes it applies to).
        modes: `(n_bins,)` validation modes per bin.
        attrs: the model and the boxes it was fitted on.
    """

    kedges: np.ndarray
    gain: np.ndarray
    cell_size: float
    modes: np.ndarray
    attrs: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, predictions, truths, n_bins=64):
        """Gains from predicted and true velocities of validation boxes.

        Args:
            predictions: list of predicted velocity `Field`s (km/s).
            truths: list of the true velocity `Field`s, one per prediction, same cells.

        Raises:
            VelnetInputError: unequal or empty lists, or boxes of different cell sizes.
        """
        from velnet.statistics.spectra import power

        if not predictions or len(predictions) != len(truths):
            raise VelnetInputError(None, f"the power correction needs equally many predictions and truths, at "
                                         f"least one; received {len(predictions)} and {len(truths)}")
        cell = truths[0].cell_size
        kedges = absolute_kedges(cell, n_bins)
        pred_sum, true_sum, modes = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
        for pred, truth in zip(predictions, truths):
            if not np.isclose(truth.cell_size, cell, rtol=1e-3) or pred.value.shape != truth.value.shape:
                raise VelnetInputError(truth.attrs.get("path"), "validation boxes need equal cells, and each "
                                                               "prediction the mesh of its truth")
            p_pred = power(pred.with_value(divergence(pred), "theta_v"), kedges=kedges)
            p_true = power(truth.with_value(divergence(truth), "theta_v"), kedges=kedges)
            pred_sum += np.nan_to_num(p_pred["power"]) * p_pred["modes"]
            true_sum += np.nan_to_num(p_true["power"]) * p_true["modes"]
            modes += p_true["modes"]
        gain = np.ones(n_bins)
        ok = (modes >= MIN_MODES) & (pred_sum > 0)
        gain[ok] = np.sqrt(true_sum[ok] / pred_sum[ok])
        return cls(kedges, gain, float(cell), modes)

    def apply(self, velocity):
        """The power-preserving velocity: each component's modes times g(|k|) (this rank's planes under MPI).

        Raises:
            VelnetInputError: the cell size differs from the validation boxes'.
        """
        if not np.isclose(velocity.cell_size, self.cell_size, rtol=1e-3):
            raise VelnetInputError(velocity.attrs.get("path"),
                                   f"cell size {velocity.cell_size:.4g} Mpc/h differs from the "
                                   f"{self.cell_size:.4g} Mpc/h the power correction was fitted on")
        mesh = mesh_of(velocity)
        index, gain = mesh.bin_index(self.kedges), self.gain.astype(np.float32)
        value = np.empty_like(velocity.value, dtype=np.float32)
        for i in range(3):
            modes = mesh.rfft(velocity.value[..., i])
            for x in range(len(modes)):  # a plane at a time: no temporary the size of the box
                modes[x] *= gain[index[x]]
            mesh.irfft(modes, out=value[..., i])
        out = velocity.with_value(value)
        out.attrs = dict(velocity.attrs, output="power-preserving")
        return out

    def save(self, path):
        """Write JSON atomically; returns the path."""
        state = {"format": FORMAT, "cell_size": self.cell_size, "kedges": self.kedges.tolist(),
                 "gain": self.gain.tolist(), "modes": self.modes.tolist(), "attrs": self.attrs}
        return write_json(path, state)

    @classmethod
    def load(cls, path):
        """Read a file written by `save`; VelnetInputError naming the file if it is not one."""
        path = require_file(path, "power correction file (made by `velnet calibrate`)")
        try:
            state = json.loads(path.read_text())
            if state.get("format") != FORMAT:
                raise ValueError(f"format is {state.get('format')!r}")
            kedges, gain = np.asarray(state["kedges"], float), np.asarray(state["gain"], float)
            if gain.shape != (len(kedges) - 1,) or not np.all(np.isfinite(gain)):
                raise ValueError(f"{gain.shape} gains for {len(kedges) - 1} bins (or not finite)")
            return cls(kedges, gain, float(state["cell_size"]), np.asarray(state["modes"], float),
                       dict(state.get("attrs", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise VelnetInputError(path, f"not a velnet power correction file ({err})") from None

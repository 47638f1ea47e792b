"""Small fields files with learnable targets, shared by the training, tuning, multi-device and halo-task tests."""
import numpy as np

from velnet.fields.field import Field, save_fields
from velnet.physics.cosmology import HALO2024, WU2021


def gradient_boxes(root, seeds=(0, 1), nmesh=24, box_size=48.0):
    """Fields files whose velocity is 150 km/s x the central difference of ln(1 + density).

    The target is a gradient, a vector field, so the mapping stays learnable under the
    cube-symmetry augmentation.

    Returns:
        list of the fields file paths, one per seed.
    """
    files = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        density = np.exp(0.5 * rng.standard_normal((nmesh,) * 3)).astype(np.float32)
        d = np.log1p(density)
        velocity = 150 * np.stack([np.roll(d, -1, a) - np.roll(d, 1, a) for a in range(3)], -1)
        files.append(save_fields(root / f"box{seed}.h5", [
            Field(density, "density", box_size, 0.0, WU2021),
            Field(velocity.astype(np.float32), "velocity", box_size, 0.0, WU2021)]))
    return files


def smooth_box(n, seed):
    """A smooth periodic random scalar box with unit variance."""
    white = np.random.default_rng(seed).standard_normal((n,) * 3)
    k = np.fft.fftfreq(n)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    field = np.fft.ifftn(np.fft.fftn(white) * np.exp(-k2 * 80)).real
    return field / field.std()


def halo_boxes(root, seeds=(0, 1), nmesh=16, box_size=32.0):
    """Halo fields files (as `velnet halo-fields` writes them) whose targets are local functions of the halos.

    The density is exp(s / 2) of a smooth field s, the velocity 300 km/s times the central
    difference of s, the halo channels s, s^2, s shifted by a cell and a constant; the linear
    velocity and momentum are 0.8 times the targets, the linear density 1 + 0.8 (density - 1).

    Returns:
        list of the fields file paths, one per seed.
    """
    files = []
    for seed in seeds:
        s = smooth_box(nmesh, seed)
        density = np.exp(0.5 * s)
        velocity = 300 * np.stack([np.roll(s, -1, a) - np.roll(s, 1, a) for a in range(3)], -1)
        momentum = density[..., None] * velocity
        halos = [1 + 0.3 * s, 0.5 * s ** 2, 1 + 0.2 * np.roll(s, 1, 0), np.ones_like(s)]
        values = {**{f"halos_s_{j}": h for j, h in enumerate(halos)}, "density": density, "velocity": velocity,
                  "momentum": momentum, "linear_velocity_s": 0.8 * velocity, "linear_momentum_s": 0.8 * momentum,
                  "linear_density_s": 1 + 0.8 * (density - 1)}
        fields = [Field(v.astype(np.float32), k, box_size, 0.59, HALO2024) for k, v in values.items()]
        for field in fields[-3:]:
            field.attrs["beta"] = 2.0
        files.append(save_fields(root / f"halos{seed}.h5", fields, attrs={"weighting": "number"}))
    return files


def gaussian(n, seed, slope=-1.5, box=64.0):
    """A periodic Gaussian field with a power-law spectrum P ~ k^slope, unit variance, and its k grid.

    Returns:
        `(value (n, n, n), k^2 (n, n, n // 2 + 1), k_z (n // 2 + 1,))`, k in h/Mpc.
    """
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n, box / n) * 2 * np.pi
    kz = np.fft.rfftfreq(n, box / n) * 2 * np.pi
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kz[None, None, :] ** 2
    amplitude = np.where(k2 > 0, k2, 1.0) ** (slope / 4)
    modes = np.fft.rfftn(rng.standard_normal((n,) * 3)) * amplitude
    modes[0, 0, 0] = 0
    value = np.fft.irfftn(modes, s=(n,) * 3, axes=(0, 1, 2))
    return value / value.std(), k2, kz


def halo_field(value, name="density", box=64.0):
    """A `Field` of the 2024 halo paper's cosmology and redshift (z = 0.59)."""
    return Field(np.asarray(value, dtype=np.float32), name, box, 0.59, HALO2024)

"""Small fields files with a learnable target, shared by the training, tuning and multi-device tests."""
import numpy as np

from velnet.cosmology import WU2021
from velnet.fields import Field, save_fields


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

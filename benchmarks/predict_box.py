"""Whole-box prediction time against grid size: tile, infer and stitch with `predict_box`.

Times `velnet.prediction.predict.predict_box` on random lognormal density boxes of each grid size,
with a trained model (`--model`) or an untrained U-net of a preset at the paper's 2 Mpc/h
cells. The first call per grid size includes tracing and compilation for its tile shape
("cold"); the best of the later ones is "warm".

    python -m benchmarks.predict_box --preset wu2021-text --nmesh 64 128 256
    python -m benchmarks.predict_box --model runs/x/model.keras --nmesh 128 --batch-size 16
"""
import argparse
import time

import numpy as np

from benchmarks.environment import describe
from velnet.data.inputs import InputSpec
from velnet.data.tiling import tile_origins
from velnet.fields.field import Field
from velnet.networks.builders import ModelMetadata
from velnet.networks.unet3d import PRESETS, physical_model, unet_config, unet_from_config
from velnet.physics.cosmology import WU2021
from velnet.prediction.predict import predict_box
from velnet.prediction.tiles import inference_tile

CELL = 2.0
"""Mpc/h per cell of the untrained model's "training data" (Wu et al. 2021)."""


def untrained_model(preset, width_multiplier=None, tile=20, margin=6):
    """A km/s-output U-net of a preset with random weights, and metadata as `train` writes it.

    Returns:
        `(model, metadata)` as `velnet.training.train.load_model` returns them, for 2 Mpc/h cells
        and a target scale of 300 km/s.
    """
    linear = PRESETS[preset].get("residual_channels") is not None
    overrides = {} if width_multiplier is None else {"width_multiplier": width_multiplier}
    config = unet_config(preset, input_shape=[tile + 2 * margin] * 3 + [4 if linear else 1],
                         n_valid=margin, **overrides)
    spec = InputSpec(linear=linear)
    metadata = ModelMetadata(
        input_name="ln_density", target_name="velocity", input_shape=config["input_shape"],
        target_shape=[tile] * 3 + [3], input_vector_slices=spec.vector_slices, target_vector_slices=[[0, 3]],
        tile={"input": tile + 2 * margin, "target": tile, "margin": margin}, normalisation={"target_scale": 300.0},
        cosmology=WU2021.to_dict(), box_size=64 * CELL, nmesh=64, redshift=0.0, model_config=config,
        input_spec=spec)
    network = unet_from_config(config)
    return physical_model(config, network.get_weights(), 300.0, metadata.to_dict()), metadata


def density_box(nmesh, cell, seed=0):
    """A lognormal rho/rho_mean `Field` of `nmesh`^3 cells of `cell` Mpc/h (mean 1)."""
    g = np.random.default_rng(seed).standard_normal((nmesh,) * 3, dtype=np.float32)
    return Field(np.exp(0.5 * g - 0.125).astype(np.float32), "density", nmesh * cell, 0.0, WU2021)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a model.keras from `velnet train` (default: untrained --preset)")
    p.add_argument("--preset", default="wu2021-text", choices=sorted(PRESETS))
    p.add_argument("--width-multiplier", type=float, help="override the preset's width multiplier")
    p.add_argument("--nmesh", type=int, nargs="+", default=[64, 128, 256],
                   help="grid sizes per side (default 64 128 256; 256 is the paper's 512 Mpc/h box)")
    p.add_argument("--tile", type=int, help="target tile side for inference (default: the largest that fits)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per model call (default 4)")
    p.add_argument("--repeats", type=int, default=2, help="calls per grid size (default 2)")
    args = p.parse_args(argv)

    if args.model:
        from velnet.training.train import load_model
        model, metadata = load_model(args.model)
        source = args.model
    else:
        model, metadata = untrained_model(args.preset, args.width_multiplier)
        source = f"untrained {args.preset}, width multiplier {metadata.model_config['width_multiplier']:g}"
    cell = metadata.cell_size
    margin = metadata.tile["margin"]
    for line in describe():
        print(line)
    print(f"model: {source}, {model.count_params():,} parameters, {cell:g} Mpc/h cells, "
          f"margin {margin}, batch {args.batch_size}")
    print()
    print("| nmesh | box Mpc/h | tile | tiles | cold s | warm s | Mcells/s warm |")
    print("|---|---|---|---|---|---|---|")
    for nmesh in args.nmesh:
        density = density_box(nmesh, cell)
        tile = args.tile or inference_tile(nmesh, margin)
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predict_box(model, metadata, density, tile=tile, batch_size=args.batch_size)
            seconds.append(time.perf_counter() - start)
        warm = min(seconds[1:]) if len(seconds) > 1 else float("nan")
        print(f"| {nmesh} | {nmesh * cell:g} | {tile} | {len(tile_origins(nmesh, tile))} | "
              f"{seconds[0]:.3g} | {warm:.3g} | {nmesh ** 3 / warm / 1e6:.3g} |", flush=True)


if __name__ == "__main__":
    main()

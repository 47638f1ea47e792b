"""Training and inference samples/s of the Wu et al. 2021 U-net, Keras and plain PyTorch.

For each batch size and dtype policy, times `train_on_batch` (Adam, MSE) and
`predict_on_batch` on random 32^3 tiles after a few warm-up steps, on the current Keras
backend and its default device. When torch is importable, the same network written in
plain PyTorch (channels first; autocast for mixed bfloat16) is timed alongside, as a
reference. Both synchronise every step (Keras returns numpy values; torch calls `.item()`).

    python -m benchmarks.train_throughput --preset wu2021-text --steps 20
    KERAS_BACKEND=jax python -m benchmarks.train_throughput --preset tiny --steps 2
"""
import argparse
import time

import keras
import numpy as np

from benchmarks.environment import describe
from velnet.networks.unet3d import PRESETS, unet_config, unet_from_config
from velnet.training.train import jit_compile_setting

DTYPES = ("float32", "mixed_bfloat16")


def keras_rates(config, batch, dtype, steps, warmup, seed=0):
    """Training and inference samples/s of the Keras U-net of `config` under a dtype policy.

    Args:
        config: `unet3d` arguments (with a fixed `input_shape`).
        batch: tiles per step.
        dtype: Keras dtype policy, "float32" or "mixed_bfloat16".
        steps: timed steps.
        warmup: untimed steps first (tracing, compilation, autotuning).
        seed: seed of the weights and the random tiles.

    Returns:
        `(train samples/s, inference samples/s, parameter count)`.
    """
    keras.config.set_dtype_policy(dtype)
    try:
        keras.utils.set_random_seed(seed)
        model = unet_from_config(config)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse", jit_compile=jit_compile_setting())
        x, y = _tiles(config, batch, seed)
        train = _rate(lambda: model.train_on_batch(x, y), batch, steps, warmup)
        infer = _rate(lambda: model.predict_on_batch(x), batch, steps, warmup)
        return train, infer, model.count_params()
    finally:
        keras.config.set_dtype_policy("float32")


def torch_rates(config, batch, dtype, steps, warmup, seed=0):
    """The same as `keras_rates` for the plain PyTorch network (`torch_unet`), on CUDA if available."""
    import torch

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    model = torch_unet(config).to(device)
    x, y = (torch.from_numpy(np.moveaxis(a, -1, 1).copy()).to(device)
            for a in _tiles(config, batch, seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "mixed_bfloat16")

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def infer_step():
        with torch.no_grad(), autocast:
            return model(x).float().sum().item()

    model.train()
    train = _rate(train_step, batch, steps, warmup)
    model.eval()
    infer = _rate(infer_step, batch, steps, warmup)
    count = sum(p.numel() for p in model.parameters())
    count += sum(b.numel() for name, b in model.named_buffers() if "num_batches" not in name)
    return train, infer, count


def torch_unet(config):
    """The U-net of `velnet.networks.unet3d.unet3d` in plain PyTorch (channels first, same layers and sizes).

    Padding differs in one detail: stride-2 convolutions pad one cell on both sides, where
    Keras's 'same' pads one at the end only; shapes and parameter counts are equal.
    """
    import torch
    from torch import nn

    from velnet.networks.unet3d import scaled_widths

    *levels, bottom = scaled_widths(config["widths"], config["width_multiplier"])
    n_valid, residual = config["n_valid"], config["residual_channels"]

    def block(cin, cout, stride=1, padding=1, transpose=False):
        conv = (nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1) if transpose
                else nn.Conv3d(cin, cout, 3, stride=stride, padding=padding))
        return nn.Sequential(conv, nn.BatchNorm3d(cout), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            cin = config["input_shape"][-1]
            self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
            for w in levels:
                self.encoders.append(nn.Sequential(block(cin, w), block(w, w)))
                self.downs.append(block(w, w, stride=2))
                cin = w
            self.bottom = nn.Sequential(block(cin, bottom), block(bottom, bottom))
            self.ups, self.convs = nn.ModuleList(), nn.ModuleList()
            cin = bottom
            for i in range(len(levels), 0, -1):
                w = levels[i - 1]
                self.ups.append(block(cin, w, transpose=True))
                self.convs.append(block(2 * w, w) if i > 1 else nn.Identity())
                cin = w if i > 1 else 2 * w
            self.valid = nn.Sequential(*[block(cin if j == 0 else levels[0], levels[0], padding=0)
                                         for j in range(n_valid)])
            self.output = nn.ConvTranspose3d(levels[0] if n_valid else cin, config["out_channels"], 3,
                                             padding=1)

        def forward(self, inputs):
            x, skips = inputs, []
            for encoder, down in zip(self.encoders, self.downs):
                x = encoder(x)
                skips.append(x)
                x = down(x)
            x = self.bottom(x)
            for up, conv, skip in zip(self.ups, self.convs, reversed(skips)):
                x = conv(torch.cat([skip, up(x)], dim=1))
            out = self.output(self.valid(x))
            if residual is not None:
                crop = inputs[:, residual[0]:residual[1]]
                if n_valid:
                    crop = crop[:, :, n_valid:-n_valid, n_valid:-n_valid, n_valid:-n_valid]
                out = out + crop
            return out

    return UNet()


def _tiles(config, batch, seed):
    """Random float32 inputs and targets (channels last) of one batch for the U-net of `config`."""
    rng = np.random.default_rng(seed)
    *spatial, channels = config["input_shape"]
    output_shape = [n - 2 * config["n_valid"] for n in spatial] + [config["out_channels"]]
    return (rng.standard_normal((batch, *spatial, channels), dtype=np.float32),
            rng.standard_normal((batch, *output_shape), dtype=np.float32))


def _rate(step, batch, steps, warmup):
    """Samples per second of `steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="wu2021-text", choices=sorted(PRESETS),
                   help="U-net preset (default wu2021-text, the paper's widths)")
    p.add_argument("--width-multiplier", type=float, help="override the preset's width multiplier")
    p.add_argument("--tile", type=int, default=32, help="input tile side, cells (default 32)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[6, 32])
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    p.add_argument("--steps", type=int, default=20, help="timed steps per case (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    args = p.parse_args(argv)

    overrides = {} if args.width_multiplier is None else {"width_multiplier": args.width_multiplier}
    channels = 4 if PRESETS[args.preset].get("residual_channels") else 1
    config = unet_config(args.preset, input_shape=[args.tile] * 3 + [channels], **overrides)
    frameworks = [("keras", keras_rates)]
    if not args.no_torch:
        try:
            import torch  # noqa: F401
            frameworks.append(("torch", torch_rates))
        except ImportError:
            print("(torch is not importable: no PyTorch reference)")
    for line in describe():
        print(line)
    print(f"network: {args.preset}, width multiplier {config['width_multiplier']:g}, "
          f"{args.tile}^3 x {channels} inputs, {args.steps} timed steps after {args.warmup}")
    print()
    print("| framework | dtype | batch | train samples/s | inference samples/s | parameters |")
    print("|---|---|---|---|---|---|")
    for name, rates in frameworks:
        for dtype in args.dtypes:
            for batch in args.batch_sizes:
                train, infer, count = rates(config, batch, dtype, args.steps, args.warmup)
                print(f"| {name} | {dtype} | {batch} | {train:.4g} | {infer:.4g} | {count:,} |",
                      flush=True)


if __name__ == "__main__":
    main()

"""Training throughput on this machine per window size and Keras backend, in one run.

Runs `benchmarks.train_throughput` (float32, no PyTorch) for every backend and input window
in subprocesses (a backend is fixed per process) and prints samples/s and target cells/s,
the figure that matters for whole-box accuracy: a 32^3 window trains a 20^3 target, a 52^3
window (the same 6-cell margin) a 40^3 one, so a larger window spends less on margins.

    python -m benchmarks.cpu_windows                       # tiny-residual, tensorflow and jax, 32 and 52
    python -m benchmarks.cpu_windows --backends jax --tiles 32 --steps 5
"""
import argparse
import os
import re
import subprocess
import sys

from benchmarks.environment import describe


def rate(backend, preset, tile, batch, steps):
    """Training samples/s of one case, measured in a fresh process on `backend`."""
    command = [sys.executable, "-m", "benchmarks.train_throughput", "--preset", preset, "--tile", str(tile),
               "--batch-sizes", str(batch), "--dtypes", "float32", "--steps", str(steps), "--warmup", "2",
               "--no-torch"]
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    row = re.search(r"^\| keras \| float32 \| \d+ \| ([0-9.e+]+) \|", out, re.M)
    if not row:
        raise RuntimeError(f"no result in the output of {' '.join(command)}:\n{out}")
    return float(row.group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="tiny-residual", help="U-net preset (default tiny-residual)")
    p.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    p.add_argument("--tiles", type=int, nargs="+", default=[32, 52], help="input window sides, cells")
    p.add_argument("--margin", type=int, default=6, help="cells cropped from each side (6)")
    p.add_argument("--voxels-per-batch", type=int, default=200_000,
                   help="batch size = this / window volume, at least 1 (default 200000: 6 windows of 32^3)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case")
    args = p.parse_args(argv)
    for line in describe():
        print(line)
    print(f"\npreset {args.preset}, float32, {args.steps} timed steps per case\n")
    print("| backend | window | target | batch | train samples/s | target cells/s |")
    print("|---|---|---|---|---|---|")
    results = {}
    for backend in args.backends:
        for tile in args.tiles:
            batch = max(1, args.voxels_per_batch // tile**3)
            samples = rate(backend, args.preset, tile, batch, args.steps)
            cells = samples * (tile - 2 * args.margin) ** 3
            results[backend, tile] = cells
            print(f"| {backend} | {tile}^3 | {tile - 2 * args.margin}^3 | {batch} | {samples:.3g} | {cells:.3g} |",
                  flush=True)
    base = results[args.backends[0], args.tiles[0]]
    print(f"\ntarget cells/s relative to {args.backends[0]} at {args.tiles[0]}^3:")
    for (backend, tile), cells in results.items():
        print(f"  {backend} {tile}^3: {cells / base:.2f}")


if __name__ == "__main__":
    main()

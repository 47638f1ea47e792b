"""Cost of velnet's whole-box steps against mesh size, on one process and under `mpirun -n 2`.

For each mesh N^3 (2 Mpc/h cells, the shipped models' training cells) it makes a snapshot,
then runs, each as a user would and each in its own process (so one step's memory does not
inflate the next's), the commands

    velnet paint    snapshot -> truth.h5 (density, velocity, momentum)
    velnet predict  truth.h5 with the shipped classical estimator (classical-wu2021/velocity.json)
    velnet predict  truth.h5 with the shipped network (wu2021-tiny-residual-context-R6/velocity.keras)
    velnet evaluate truth.h5 against the network's prediction (with the shipped classical reference)

and prints their wall time (the process's, imports included) and each rank's peak resident
memory (VmHWM, read by the rank itself), per cell of the box.

The inputs are made cheaply, not by an N-body run (fastpm at 512^3 takes hours here): a
Gaussian random field with a power-law spectrum, made lognormal (rho/rho_mean = exp(g - s^2/2)),
and one particle per 8 cells on average Poisson-sampled from it, each placed uniformly in its
cell and moving with the linear-theory velocity of the field at its cell. The fields are
realistic in size and dtype, not in physics: the figures measure cost, not accuracy.

    python -m benchmarks.whole_box                          # 64 128 256 512, 1 and 2 ranks
    python -m benchmarks.whole_box --nmesh 64 128 --ranks 1 --steps classical network
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CELL = 2.0
"""Mpc/h per cell: the shipped models' training cells."""
PARTICLES_PER_CELL = 1 / 8
"""Mean particles per cell of the sampled snapshot."""
PRETRAINED = Path(__file__).resolve().parents[1] / "velnet" / "pretrained"
CLASSICAL = PRETRAINED / "classical-wu2021" / "velocity.json"
NETWORK = PRETRAINED / "wu2021-tiny-residual-context-R6" / "velocity.keras"
STEPS = ("paint", "classical", "network", "evaluate")
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def lognormal_density(nmesh, seed=0, slope=-1.5, sigma=1.0):
    """rho/rho_mean = exp(g - sigma^2 / 2) of a Gaussian field g with P(k) ~ k^slope, float32 `(N, N, N)`.

    Returns:
        `(density, delta_k)`: the density and the rfftn of density - 1 (complex64).
    """
    rng = np.random.default_rng(seed)
    modes = np.fft.rfftn(rng.standard_normal((nmesh,) * 3, dtype=np.float32))
    k2 = _k2(nmesh)
    modes *= np.where(k2 > 0, k2, 1.0) ** np.float32(slope / 4)
    modes[0, 0, 0] = 0
    del k2
    g = np.fft.irfftn(modes, s=(nmesh,) * 3, axes=(0, 1, 2))
    del modes
    g *= np.float32(sigma / g.std())
    g -= np.float32(sigma**2 / 2)
    density = np.exp(g, out=g)
    density /= density.mean()
    return density, np.fft.rfftn(density - np.float32(1))


def _k2(nmesh):
    """|k|^2 in units of the fundamental mode, on the rfftn grid, float32."""
    k = np.fft.fftfreq(nmesh, 1.0 / nmesh).astype(np.float32)
    kz = np.fft.rfftfreq(nmesh, 1.0 / nmesh).astype(np.float32)
    return k[:, None, None] ** 2 + k[None, :, None] ** 2 + kz[None, None, :] ** 2


def linear_velocity(delta_k, nmesh, box_size, cosmology):
    """v = i f a H k / k^2 delta(k) at z = 0, km/s, float32 `(N, N, N, 3)` (numpy's FFT, not velnet's)."""
    faH = cosmology.growth_rate(1.0) * cosmology.hubble(1.0)
    kf = 2 * np.pi / box_size
    k2 = _k2(nmesh) * kf
    scale = delta_k * (1j * faH / np.where(k2 > 0, k2, 1.0)).astype(np.complex64)
    del k2
    k = np.fft.fftfreq(nmesh, 1.0 / nmesh).astype(np.float32)
    axes = (k[:, None, None], k[None, :, None], np.fft.rfftfreq(nmesh, 1.0 / nmesh).astype(np.float32))
    out = np.empty((nmesh,) * 3 + (3,), np.float32)
    for i, ki in enumerate(axes):
        out[..., i] = np.fft.irfftn(scale * ki, s=(nmesh,) * 3, axes=(0, 1, 2))
    return out


def write_snapshot(path, nmesh, seed=0):
    """A FastPM-style BigFile snapshot of particles sampled from a lognormal field (module docstring).

    Returns:
        number of particles.
    """
    import bigfile

    from velnet.physics.cosmology import WU2021

    box = nmesh * CELL
    density, delta_k = lognormal_density(nmesh, seed)
    velocity = linear_velocity(delta_k, nmesh, box, WU2021)
    del delta_k
    rng = np.random.default_rng(seed + 1)
    positions, velocities = [], []
    for i in range(nmesh):  # plane by plane, to keep the temporaries small
        counts = rng.poisson(PARTICLES_PER_CELL * density[i]).ravel()
        cells = np.repeat(np.arange(nmesh * nmesh), counts)
        corner = np.stack([np.full(len(cells), i), cells // nmesh, cells % nmesh], -1)
        positions.append(((corner + rng.random((len(cells), 3))) * CELL).astype(np.float32))
        velocities.append(velocity[i].reshape(-1, 3)[cells])
    del density, velocity
    position, vel = np.concatenate(positions), np.concatenate(velocities)
    del positions, velocities
    with bigfile.File(str(path), create=True) as ff:
        with ff.create("Header") as block:
            header = {"BoxSize": box, "ScalingFactor": 1.0, "OmegaM": WU2021.Omega_m, "OmegaB": WU2021.Omega_b,
                      "HubbleParam": WU2021.h, "Sigma8": WU2021.sigma8, "SpectralIndex": WU2021.n_s}
            for key, value in header.items():
                block.attrs[key] = value
        ff.create_from_array("1/Position", position)
        ff.create_from_array("1/Velocity", vel)
    return len(position)


def command(step, nmesh, folder):
    """The `velnet` arguments of a step."""
    snapshot, truth = folder / "snapshot", folder / "truth.h5"
    return {
        "paint": ["paint", str(snapshot), "--nmesh", str(nmesh), "--out", str(truth)],
        "classical": ["predict", str(truth), str(CLASSICAL), "--out", str(folder / "classical.h5")],
        "network": ["predict", str(truth), str(NETWORK), "--out", str(folder / "network.h5")],
        "evaluate": ["evaluate", str(truth), str(folder / "network.h5"), "--names", "U-net",
                     "--out", str(folder / "report")],
    }[step]


def measure(step, nmesh, folder, ranks, timeout):
    """Run one step in a fresh process (under `mpirun -n ranks` for ranks > 1).

    Returns:
        dict: seconds (wall, process start to exit) and peak_rss (bytes, one per rank).

    Raises:
        RuntimeError: the step failed.
    """
    launch = [] if ranks == 1 else [shutil.which("mpirun") or "mpirun", "-n", str(ranks)]
    args = [*launch, sys.executable, "-m", "benchmarks.whole_box", "--worker", "--",
            *command(step, nmesh, folder)]
    start = time.perf_counter()
    done = subprocess.run(args, env=step_env(), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    peaks = [json.loads(line[len("RSS "):]) for line in done.stdout.splitlines() if line.startswith("RSS ")]
    if done.returncode or len(peaks) != ranks:
        raise RuntimeError(f"{step} {nmesh}^3 on {ranks} rank(s) failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss": [p["bytes"] for p in sorted(peaks, key=lambda p: p["rank"])]}


def step_env():
    """The environment of a step's process: Open MPI allowed as root and to oversubscribe the cores,
    TensorFlow quiet."""
    return {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def peak_rss():
    """This process's peak resident memory, bytes: VmHWM of /proc/self/status.

    Not `resource.getrusage`'s ru_maxrss: Linux keeps that across fork and exec, so a child
    of a large process reports its parent's peak.
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def worker(velnet_args):
    """Run `velnet <args>` in this process, then print this rank's peak resident memory."""
    from velnet.cli import main

    code = main(velnet_args)
    rank = next((int(os.environ[v]) for v in RANK_VARIABLES if v in os.environ), 0)
    peak = peak_rss()
    print("RSS " + json.dumps({"rank": rank, "bytes": peak}), flush=True)
    return code


def row(step, nmesh, ranks, result):
    cells = nmesh**3
    peak = max(result["peak_rss"])
    return (f"| {step} | {nmesh}^3 | {ranks} | {result['seconds']:.1f} | {result['seconds'] / cells * 1e9:.0f} | "
            f"{peak / 2**30:.2f} | {peak / cells:.0f} | {sum(result['peak_rss']) / cells:.0f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nmesh", type=int, nargs="+", default=[64, 128, 256, 512], help="meshes per side")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="MPI ranks (1: no mpirun)")
    p.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    p.add_argument("--workdir", help="folder for the boxes (default: a temporary one, removed at the end)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per step")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--snapshot", help=argparse.SUPPRESS)
    p.add_argument("velnet_args", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.velnet_args)
    if args.snapshot:
        return print(f"{write_snapshot(Path(args.snapshot), args.nmesh[0]):,} particles in {args.snapshot}")

    from benchmarks.environment import describe

    for line in describe():
        print(line)
    print(f"inputs: lognormal Gaussian random field, {PARTICLES_PER_CELL:g} particles per cell, {CELL:g} Mpc/h "
          "cells; wall time of the whole process (imports included); peak RSS per rank")
    print()
    print("| step | mesh | ranks | wall s | ns/cell | peak GB/rank | B/cell/rank | B/cell all ranks |")
    print("|---|---|---|---|---|---|---|---|")
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="velnet-whole-box-"))
    try:
        for nmesh in args.nmesh:
            folder = root / f"n{nmesh}"
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "snapshot").exists():  # in its own process, which frees its memory at exit
                subprocess.run([sys.executable, "-m", "benchmarks.whole_box", "--snapshot", str(folder / "snapshot"),
                                "--nmesh", str(nmesh)], check=True)
            for ranks in args.ranks:
                for step in args.steps:
                    print(row(step, nmesh, ranks, measure(step, nmesh, folder, ranks, args.timeout)), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

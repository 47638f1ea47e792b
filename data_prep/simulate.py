"""Dark-matter boxes with the `fastpm` particle-mesh code, written as BigFile snapshots.

Initial conditions are second-order LPT displacements of a particle grid, from a Gaussian
field with nbodykit's linear power spectrum (Eisenstein-Hu or CLASS transfer, normalised to
sigma8); then FastPM's leapfrog kick-drift-kick steps, linear in the scale factor, on a force
mesh `force_mesh` times finer than the particle grid. Runs alone or under `mpirun -n N`
(nbodykit's current MPI communicator); the same seed gives the same box on any number of
ranks.
"""
import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_mesh
from velnet.files import atomic_dir, atomic_file
from velnet.physics.cosmology import HALO2024, WU2021, Cosmology
from velnet.provenance import versions

from .readers import wrap_positions

log = logging.getLogger(__name__)

PRESETS = {
    "wu2021": {"cosmology": WU2021, "box_size": 512.0, "spacing": 1.0, "output_redshifts": (0.0,)},
    "halo2024": {"cosmology": HALO2024, "box_size": 1200.0, "spacing": 1200.0 / 2048,
                 "output_redshifts": (0.59,)},
}
"""Wu et al. 2021: 512 Mpc/h COLA boxes, 1 Mpc/h particle spacing, z = 0. The 2024 halo
paper: CosmicGrowth, 1200 Mpc/h with 2048^3 particles, z = 0.59."""

TRANSFERS = ("EisensteinHu", "NoWiggleEisensteinHu", "CLASS")
PACKAGES = ("velnet", "numpy", "nbodykit", "fastpm", "pmesh", "bigfile", "classylss", "mpi4py")


@dataclass
class SimulationConfig:
    """What to simulate.

    Attributes:
        box_size: side of the periodic box, Mpc/h.
        nparticles: particles per side (N^3 in all).
        cosmology: a velnet `Cosmology`.
        output_redshifts: output redshifts; stored sorted from high to low.
        seed: seed of the Gaussian initial field.
        force_mesh: force mesh per side, in units of nparticles (B).
        steps: leapfrog steps from z_start to the lowest output redshift.
        z_start: redshift of the 2LPT initial conditions.
        transfer: nbodykit transfer function, "EisensteinHu", "NoWiggleEisensteinHu" or
            "CLASS".
    """

    box_size: float
    nparticles: int
    cosmology: Cosmology
    output_redshifts: tuple = (0.0,)
    seed: int = 1
    force_mesh: int = 2
    steps: int = 10
    z_start: float = 9.0
    transfer: str = "EisensteinHu"

    def __post_init__(self):
        self.output_redshifts = tuple(sorted((float(z) for z in self.output_redshifts), reverse=True))
        checks = [
            (self.box_size > 0, "box_size must be positive"),
            (int(self.nparticles) == self.nparticles and self.nparticles >= 2,
             "nparticles must be an integer >= 2"),
            (int(self.force_mesh) == self.force_mesh and self.force_mesh >= 1,
             "force_mesh must be an integer >= 1"),
            (len(self.output_redshifts) >= 1 and min(self.output_redshifts) >= 0, "redshifts must be >= 0"),
            (len({snapshot_name(z) for z in self.output_redshifts}) == len(self.output_redshifts),
             "redshifts must differ in their first 3 decimals"),
            (self.z_start > max(self.output_redshifts, default=0), "z_start must exceed the redshifts"),
            (int(self.steps) == self.steps and self.steps >= len(self.output_redshifts),
             "steps must be an integer, at least one per output redshift"),
            (self.transfer in TRANSFERS, f"transfer must be one of {TRANSFERS}"),
        ]
        for ok, problem in checks:
            if not ok:
                raise VelnetInputError(None, f"{problem}. Received: {self}")
        self.nparticles, self.force_mesh, self.steps = map(
            int, (self.nparticles, self.force_mesh, self.steps))

    @classmethod
    def from_preset(cls, name, **overrides):
        """A paper's setup, with overrides.

        A `box_size` override keeps the preset's particle spacing unless `nparticles` (or
        `spacing`, Mpc/h) is given too.

        Args:
            name: "wu2021" or "halo2024".
            **overrides: any `SimulationConfig` field, or `spacing`.
        """
        if name not in PRESETS:
            raise VelnetInputError(None, f"unknown preset. Received: {name!r}; "
                                         f"known: {sorted(PRESETS)}")
        settings = {**PRESETS[name], **overrides}
        spacing = settings.pop("spacing")
        settings.setdefault("nparticles", round(settings["box_size"] / spacing))
        return cls(**settings)

    @property
    def spacing(self):
        """Mean particle separation, Mpc/h."""
        return self.box_size / self.nparticles

    def to_dict(self):
        return {**asdict(self), "cosmology": self.cosmology.to_dict(),
                "output_redshifts": list(self.output_redshifts)}

    @classmethod
    def from_dict(cls, d):
        return cls(**{**d, "cosmology": Cosmology.from_dict(d["cosmology"])})


def snapshot_name(redshift):
    """Folder name of the snapshot at `redshift`, e.g. `snapshot_z0.590`."""
    return f"snapshot_z{redshift:.3f}"


def nbodykit_cosmology(cosmology):
    """The nbodykit (CLASS) cosmology of a velnet `Cosmology`.

    Flat, massless neutrinos, A_s scaled to give `cosmology.sigma8`.
    """
    from nbodykit.cosmology import Cosmology as ClassCosmology

    base = ClassCosmology(h=cosmology.h, Omega0_b=cosmology.Omega_b,
                          Omega0_cdm=cosmology.Omega_cdm, n_s=cosmology.n_s, m_ncdm=[])
    return base.match(sigma8=cosmology.sigma8)


BYTES_PER_PARTICLE = 80
"""Memory a simulation takes per particle, and per cell of its force mesh (about; shared among MPI ranks)."""


def simulate(config, outdir):
    """Run the simulation; write one snapshot per output redshift and `config.json`.

    Each snapshot is a BigFile folder `outdir/snapshot_z{z:.3f}` with `1/Position` (Mpc/h,
    wrapped into the box, float32), `1/Velocity` (peculiar, km/s, float32), `1/ID` (the
    initial grid index) and a `Header` block with BoxSize, ScalingFactor, Redshift, OmegaM,
    OmegaB, HubbleParam, Sigma8, SpectralIndex, RSDFactor (Mpc/h per km/s), NC, Seed, so
    `read_particles` needs no other argument. Snapshots appear whole or not at all.
    `config.json` records the config, package versions, the time steps and timings.
    Collective under MPI; rank 0 writes the metadata.

    Args:
        config: a `SimulationConfig`.
        outdir: output folder (created if needed).

    Returns:
        The snapshot paths, from high to low redshift.

    Raises:
        VelnetInputError: more particles than the ranks' share of this machine's memory holds.
    """
    from fastpm.core import Solver, autostages, leapfrog
    from nbodykit import CurrentMPIComm
    from nbodykit.cosmology import LinearPower
    from pmesh.pm import ParticleMesh

    comm = CurrentMPIComm.get()
    check_mesh(config.nparticles, BYTES_PER_PARTICLE * (1 + config.force_mesh ** 3) / comm.size, name="particles")
    outdir = Path(outdir)
    clock = _Clock()
    cosmo = nbodykit_cosmology(config.cosmology)
    power = LinearPower(cosmo, redshift=0.0, transfer=config.transfer)
    pm = ParticleMesh(BoxSize=config.box_size, Nmesh=[config.nparticles] * 3, dtype="f8",
                      resampler="cic", comm=comm)
    solver = Solver(pm, cosmo, B=config.force_mesh)
    grid, ids = pm.generate_uniform_particle_grid(shift=0.0, return_id=True)
    linear = solver.linear(solver.whitenoise(config.seed), power)
    outputs = {1.0 / (1.0 + z): z for z in config.output_redshifts}
    stages = autostages(sorted(outputs), N=config.steps + 1, astart=1.0 / (1.0 + config.z_start))
    _info(comm, "fastpm: %d^3 particles, %g Mpc/h box, force mesh %d^3, %d ranks, "
          "%d steps from z=%g", config.nparticles, config.box_size,
          config.nparticles * config.force_mesh, comm.size, config.steps, config.z_start)
    state = solver.lpt(linear, grid, a=stages[0], order=2)
    clock.lap("initial_conditions")

    paths = []
    bar = tqdm(total=config.steps, desc="fastpm steps", unit="step", disable=comm.rank != 0)

    def monitor(action, ai, ac, af, state, event):
        if action == "F" and af > stages[0]:
            bar.set_postfix_str(f"z={1 / af - 1:.3f}")
            bar.update()
        a = state.a["S"]
        if action == "K" and state.synchronized and any(math.isclose(a, o) for o in outputs):
            clock.lap("steps")
            z = outputs[min(outputs, key=lambda o: abs(o - a))]
            paths.append(_write_snapshot(outdir / snapshot_name(z), state, ids, config, comm))
            clock.lap("write")
            _info(comm, "wrote %s", paths[-1])

    solver.nbody(state, leapfrog(stages), monitor=monitor)
    bar.close()
    if comm.rank == 0:
        record = {"config": config.to_dict(), "snapshots": [p.name for p in paths],
                  "stages": [float(a) for a in stages], "nranks": comm.size,
                  "versions": versions(PACKAGES), "timings_s": clock.timings()}
        with atomic_file(outdir / "config.json") as tmp:
            tmp.write_text(json.dumps(record, indent=2))
    comm.barrier()
    return paths


def _write_snapshot(path, state, ids, config, comm):
    """Write the particles of a synchronised FastPM state as a BigFile, atomically."""
    import bigfile

    a = float(state.a["S"])
    cosmo = config.cosmology
    header = {
        "BoxSize": config.box_size, "NC": config.nparticles, "ScalingFactor": a, "Time": a,
        "Redshift": 1.0 / a - 1.0, "OmegaM": cosmo.Omega_m, "OmegaB": cosmo.Omega_b,
        "HubbleParam": cosmo.h, "Sigma8": cosmo.sigma8, "SpectralIndex": cosmo.n_s,
        "RSDFactor": 1.0 / (a * float(cosmo.hubble(a))), "Seed": config.seed,
        "ForceMeshFactor": config.force_mesh, "Steps": config.steps, "ZStart": config.z_start,
        "Transfer": config.transfer, "PositionUnit": "Mpc/h", "VelocityUnit": "km/s",
    }
    position = wrap_positions(np.mod(state.X, config.box_size).astype(np.float32), config.box_size)
    velocity = state.V.astype(np.float32)  # P * 100 / a: peculiar velocity, km/s
    with _shared_atomic_dir(path, comm) as tmp:
        with bigfile.FileMPI(comm, str(tmp), create=True) as ff:
            with ff.create("Header") as block:
                for key, value in header.items():
                    block.attrs[key] = value
            ff.create_from_array("1/Position", position)
            ff.create_from_array("1/Velocity", velocity)
            ff.create_from_array("1/ID", ids.astype(np.int64))
    return path


@contextlib.contextmanager
def _shared_atomic_dir(path, comm):
    """`atomic_dir` for all ranks of `comm`: rank 0 owns the temporary folder, all write in it."""
    if comm.rank != 0:
        yield Path(comm.bcast(None))
        comm.barrier()
        return
    with atomic_dir(path) as tmp:
        comm.bcast(str(tmp))
        yield tmp
        comm.barrier()


def _info(comm, msg, *args):
    if comm.rank == 0:
        log.info(msg, *args)


@dataclass
class _Clock:
    """Wall-clock time spent in named phases, s."""

    start: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)
    phases: dict = field(default_factory=dict)

    def lap(self, name):
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now

    def since_start(self):
        return time.perf_counter() - self.start

    def timings(self):
        return {**{k: round(v, 3) for k, v in self.phases.items()},
                "total": round(self.since_start(), 3)}

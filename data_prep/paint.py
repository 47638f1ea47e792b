"""Particles to density, momentum and velocity fields on a mesh, by cloud-in-cell painting.

As in Wu et al. 2021 (section 2): plain CIC (no deconvolution of the window, no
interlacing) of the mass for the density and of the mass times velocity for the momentum;
the velocity is their ratio, and cells with no mass get the background velocity, the mean
momentum over the mean density (their footnote 5). Painting is nbodykit's
`CatalogSource.to_mesh(resampler="cic")` (`velnet.fields.painting.paint`), which divides by the mean
number of particles per cell, so the density has mean 1 and the momentum is (rho / rho_mean) v.
"""
import datetime

import numpy as np
from tqdm.auto import tqdm

from velnet.fields.checks import check_mesh
from velnet.fields.field import Field, made_by, save_fields
from velnet.fields.mesh import gather_planes, slab_bounds
from velnet.fields.painting import paint_planes
from velnet.files import check_output
from velnet.provenance import versions

from .readers import read_particles

FIELD_NAMES = ("density", "momentum", "velocity")
MADE_BY = "velnet paint"


def paint_fields(particles, nmesh, planes=False):
    """CIC density, momentum and velocity fields of a set of particles.

    Collective when `particles.comm` is set: every rank paints its share of the particles.

    Args:
        particles: `Particles` (positions Mpc/h, velocities km/s).
        nmesh: cells per side.
        planes: under MPI, give each rank its x-slab of the fields (`Field`s with `comm`)
            instead of the whole meshes.

    Returns:
        dict name -> `Field`: "density" `(N, N, N)`, rho/rho_mean with mean 1;
        "momentum" `(N, N, N, 3)`, (rho/rho_mean) v in km/s; "velocity" `(N, N, N, 3)`,
        momentum / density in km/s, the background velocity in empty cells.
    """
    comm = particles.comm if particles.comm is not None and particles.comm.size > 1 else None
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    start, _ = slab_bounds(nmesh, rank, size)
    box = particles.box_size
    with tqdm(total=4, desc=f"paint {nmesh}^3", unit="mesh", disable=rank != 0) as bar:
        density = paint_planes(particles.position, box, nmesh, comm=comm).astype(np.float32)
        bar.update()
        momentum = np.empty(density.shape + (3,), np.float32)
        for i in range(3):  # mass times each velocity component
            momentum[..., i] = paint_planes(particles.position, box, nmesh, value=particles.velocity[:, i], comm=comm)
            bar.update()
    totals = np.append(np.sum(momentum, axis=(0, 1, 2), dtype=np.float64), np.sum(density, dtype=np.float64))
    totals = totals if comm is None else comm.allreduce(totals)
    background = (totals[:3] / totals[3]).astype(np.float32)
    velocity = np.empty_like(momentum)
    for x in range(len(density)):  # a plane at a time: no temporaries the size of the box
        filled = density[x] > 0
        velocity[x] = np.where(filled[..., None], momentum[x] / np.where(filled, density[x], 1)[..., None], background)
    attrs = {"painter": "cic", "compensated": False, "nparticles": int(particles.total)}
    values = {"density": density, "momentum": momentum, "velocity": velocity}
    if comm is not None and not planes:
        values = {name: gather_planes(value, start, comm, 0, nmesh, nmesh) for name, value in values.items()}
        comm, start = None, 0
    return {name: Field(values[name], name, box, particles.redshift, particles.cosmology, dict(attrs), start, comm)
            for name in FIELD_NAMES}


def paint_snapshot(snapshot_path, nmesh, out_h5, overwrite=False, **reader_kwargs):
    """Read a snapshot, paint its fields and write them to one HDF5 fields file.

    Collective under MPI (the particles are split over nbodykit's current communicator, and
    each rank paints and writes its x-slab of the fields); the file appears atomically.

    Args:
        snapshot_path: a snapshot `read_particles` reads.
        nmesh: cells per side.
        out_h5: the fields file to write (`velnet.fields.field.save_fields` layout); an existing
            one is replaced only if `velnet paint` made it, or with `overwrite`.
        overwrite: replace an existing file at `out_h5` that `velnet paint` did not make.
        **reader_kwargs: passed to `read_particles` (format, box_size, cosmology, ...).

    Returns:
        `out_h5`.

    Raises:
        VelnetInputError: a bad snapshot or mesh size (`check_mesh`), or an `out_h5` that
            `check_output` refuses.
    """
    from nbodykit import CurrentMPIComm

    check_mesh(nmesh)
    check_output(out_h5, "a fields file", lambda path: made_by(path) == MADE_BY, inputs=[snapshot_path],
                 overwrite=overwrite)
    comm = reader_kwargs.pop("comm", None) or CurrentMPIComm.get()
    particles = read_particles(snapshot_path, comm=comm, **reader_kwargs)
    fields = paint_fields(particles, nmesh, planes=True)
    attrs = {"made_by": MADE_BY, "source": str(particles.path), "source_format": particles.format,
             "nparticles": int(particles.total),
             "painter": "nbodykit CIC, uncompensated", "versions": versions(),
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    save_fields(out_h5, [fields[name] for name in FIELD_NAMES], attrs=attrs)
    return out_h5

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
from velnet.fields.painting import paint
from velnet.files import check_output
from velnet.provenance import versions

from .readers import read_particles

FIELD_NAMES = ("density", "momentum", "velocity")
MADE_BY = "velnet paint"


def paint_fields(particles, nmesh):
    """CIC density, momentum and velocity fields of a set of particles.

    Collective when `particles.comm` is set: every rank paints its share and gets the full
    meshes back.

    Args:
        particles: `Particles` (positions Mpc/h, velocities km/s).
        nmesh: cells per side.

    Returns:
        dict name -> `Field`: "density" `(N, N, N)`, rho/rho_mean with mean 1;
        "momentum" `(N, N, N, 3)`, (rho/rho_mean) v in km/s; "velocity" `(N, N, N, 3)`,
        momentum / density in km/s, the background velocity in empty cells.
    """
    rank = 0 if particles.comm is None else particles.comm.rank
    with tqdm(total=4, desc=f"paint {nmesh}^3", unit="mesh", disable=rank != 0) as bar:
        meshes = []
        for value in (None, *particles.velocity.T):  # mass, then mass times each velocity component
            meshes.append(paint(particles.position, particles.box_size, nmesh, value=value, comm=particles.comm))
            bar.update()
    density, momentum = meshes[0], np.stack(meshes[1:], axis=-1)
    background = momentum.mean(axis=(0, 1, 2)) / density.mean()
    filled = density > 0
    velocity = np.where(filled[..., None],
                        momentum / np.where(filled, density, 1.0)[..., None], background)
    attrs = {"painter": "cic", "compensated": False, "nparticles": int(particles.total)}
    values = {"density": density, "momentum": momentum, "velocity": velocity}
    return {name: Field(values[name].astype(np.float32), name, particles.box_size,
                        particles.redshift, particles.cosmology, dict(attrs))
            for name in FIELD_NAMES}


def paint_snapshot(snapshot_path, nmesh, out_h5, overwrite=False, **reader_kwargs):
    """Read a snapshot, paint its fields and write them to one HDF5 fields file.

    Collective under MPI (the particles are split over nbodykit's current communicator);
    rank 0 writes the file, atomically.

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
    fields = paint_fields(particles, nmesh)
    attrs = {"made_by": MADE_BY, "source": str(particles.path), "source_format": particles.format,
             "nparticles": int(particles.total),  # collective: outside the rank-0 branch
             "painter": "nbodykit CIC, uncompensated", "versions": versions(),
             "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if comm.rank == 0:
        save_fields(out_h5, [fields[name] for name in FIELD_NAMES], attrs=attrs)
    comm.barrier()
    return out_h5


"""Particles onto a mesh and back: pmesh's cloud-in-cell (nbodykit's painter, without its catalogue),
the one painter velnet uses.

Plain CIC, as Wu et al. 2021 (section 2) and the 2024 halo paper paint: no deconvolution of
the window, no interlacing. Cell (i, j, k) holds the value at (i, j, k) * L / N, positions
wrap periodically. Under MPI the points are exchanged between ranks and painted into pmesh's
x-slabs of the box, velnet's layout (`velnet.fields.mesh`), so each rank can keep its own planes
(`paint_planes`). pmesh and mpi4py are imported inside the functions.
"""
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.checks import check_box_size, check_mesh
from velnet.fields.mesh import particle_mesh


def paint(position, box_size, nmesh, weight=None, value=None, comm=None):
    """CIC mesh of sum(weight value W) / (sum(weight) / N^3), as nbodykit's `to_mesh` paints.

    With unit weights and values this is rho / rho_mean of the points (mean 1).

    Args:
        position: `(M, 3)` positions, Mpc/h.
        box_size: side L of the periodic box, Mpc/h.
        nmesh: cells per side N.
        weight: `(M,)` weights (default 1): normalise by their sum.
        value: `(M,)` values painted with those weights (default 1), e.g. a velocity
            component for the momentum, or a 0/1 mask for one mass channel.
        comm: MPI communicator of the points (collective; every rank gets the whole mesh);
            default one rank.

    Returns:
        float64 array `(N, N, N)`.

    Raises:
        VelnetInputError: a mesh too small or too large for this machine, or a bad box size.
    """
    return _painted(position, box_size, nmesh, weight, value, comm).preview()


def paint_planes(position, box_size, nmesh, weight=None, value=None, comm=None):
    """`paint`, each rank keeping its own x-planes of the mesh (`velnet.fields.mesh.slab_bounds`).

    Returns:
        float64 array `(stop - start, N, N)`: the planes of this rank (all of them on one).
    """
    return _painted(position, box_size, nmesh, weight, value, comm).value


CHUNK = 1 << 22
"""Points painted at a time (each rank), as nbodykit does: the exchange between ranks holds one chunk."""


def _painted(position, box_size, nmesh, weight, value, comm):
    """The painted pmesh RealField, in the x-slabs of `particle_mesh`.

    pmesh's own CIC painter with nbodykit's chunked exchange between ranks and its normalisation,
    without nbodykit's catalogue (whose every paint runs a full garbage collection: most of the time
    of painting a small mesh in a process that holds Keras, and of the reconstruction's many paints).
    """
    check_mesh(nmesh)
    box_size = check_box_size(box_size)
    pm = particle_mesh(nmesh, box_size, comm, "f8")
    position = np.asarray(position, dtype=np.float64)
    weight = np.ones(len(position)) if weight is None else np.asarray(weight, dtype=np.float64)
    mass = weight if value is None else weight * np.asarray(value, dtype=np.float64)
    real = pm.create(type="real", value=0.0)
    chunks = pm.comm.allreduce(-(-len(position) // CHUNK))
    for i in range(chunks):
        part = slice(i * CHUNK, (i + 1) * CHUNK)
        layout = pm.decompose(position[part], smoothing=1.0)  # CIC reaches one cell over
        pm.paint(layout.exchange(position[part]), mass=layout.exchange(mass[part]), resampler="cic", hold=True,
                 out=real)
    total = pm.comm.allreduce(float(weight.sum()))
    if total == 0:
        raise VelnetInputError(None, "nothing to paint: the points' weights sum to zero")
    real[...] *= nmesh ** 3 / total
    return real


def readout(field, positions):
    """Values of a mesh field at arbitrary positions by cloud-in-cell interpolation (pmesh).

    The inverse of `paint`'s convention: cell (i, j, k) holds the value at
    (i, j, k) * L / N, and positions wrap periodically.

    Args:
        field: scalar or vector `Field`.
        positions: `(M, 3)` positions in Mpc/h.

    Returns:
        float64 array `(M,)` (scalar) or `(M, 3)` (vector).

    Raises:
        VelnetInputError: positions are not `(M, 3)` or not finite.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.all(np.isfinite(positions)):
        raise VelnetInputError(None, f"positions must be finite (M, 3). Received: shape {positions.shape}")
    mesh = particle_mesh(field.nmesh, field.box_size, None, "f8")
    components = [field.value[..., i] for i in range(3)] if field.is_vector else [field.value]
    out = []
    for component in components:
        real = mesh.create(type="real")
        real[...] = component
        out.append(real.readout(positions, resampler="cic"))
    return np.stack(out, axis=-1) if field.is_vector else out[0]

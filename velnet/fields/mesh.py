"""A box's periodic N^3 mesh, whole on one process or cut into x-slabs over MPI ranks, and its real FFTs.

On one process the whole mesh is here and its FFTs are numpy's, plane by plane (so a transform
holds the box about once, not several times over). Under MPI (a communicator of several
ranks) each rank holds the x-planes `[start, stop)` of the real mesh (blocks of ceil(N / ranks)
planes, the last ranks' shorter or empty) and its FFTs are pmesh's distributed ones (pfft),
with the ranks along one axis so that the real slabs are pmesh's own; a rank's Fourier block
holds every k_x, the k_y rows `[kstart, kstop)` and k_z from 0 to N/2.

Both normalise as pmesh does: `rfft(x) = numpy.fft.rfftn(x) / N^3`, `irfft` its inverse,
float32 in and out, complex64 modes. mpi4py and pmesh are imported only under MPI.
"""
import os
import sys
from functools import lru_cache

import numpy as np

LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")
"""Environment variables through which MPI launchers (Open MPI, MPICH / Intel MPI and Slurm's
PMI, PMIx, MVAPICH) tell a process how many ranks it runs with."""
MESSAGE_ELEMENTS = 2**26
"""Largest number of array elements sent in one MPI message (well below MPI's 2^31 limit)."""


def current_comm():
    """MPI.COMM_WORLD when this process is one of several MPI ranks, else None (no MPI import).

    Several ranks means mpi4py already in use with a world of two or more, or a launcher
    (mpirun, mpiexec, srun) that says so in its environment variables.
    """
    if "mpi4py.MPI" not in sys.modules and not any(int(os.environ.get(v, "1") or 1) > 1
                                                   for v in LAUNCHER_VARIABLES):
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD if MPI.COMM_WORLD.size > 1 else None


def slab_bounds(nmesh, rank, size):
    """x-planes `(start, stop)` of rank `rank` of `size`: blocks of ceil(N / size), as pmesh splits."""
    block = -(-nmesh // size)
    start = min(rank * block, nmesh)
    return start, min(start + block, nmesh)


def wavevectors(nmesh, box_size, rows=None, dtype=np.float64):
    """Wave-vector components (h/Mpc) of a real FFT, broadcastable to the rfftn grid.

    Args:
        nmesh: cells per side N.
        box_size: Mpc/h.
        rows: `(start, stop)` of the k_y rows held here (a rank's Fourier block); default all.
        dtype: of the arrays.

    Returns:
        `(full, odd, k2)`: the components (kx, ky, kz); the same with the Nyquist entries
        of each set to zero (for odd derivatives); and k2 = |k|^2 over the full components.
    """
    kf = 2 * np.pi / box_size
    start, stop = rows or (0, nmesh)
    freq = np.fft.fftfreq(nmesh, 1.0 / nmesh)
    full = [(freq[:, None, None] * kf).astype(dtype), (freq[None, start:stop, None] * kf).astype(dtype),
            (np.fft.rfftfreq(nmesh, 1.0 / nmesh)[None, None, :] * kf).astype(dtype)]
    k2 = full[0] ** 2 + full[1] ** 2 + full[2] ** 2
    odd = []
    for k in full:
        k = k.copy()
        if nmesh % 2 == 0:
            k[np.isclose(np.abs(k), np.pi * nmesh / box_size)] = 0.0
        odd.append(k)
    return full, odd, k2


class Mesh:
    """The mesh of an N^3 box of side L, on one process or in x-slabs over the ranks of `comm`.

    Args:
        nmesh: cells per side N.
        box_size: L, Mpc/h.
        comm: MPI communicator; None or a single rank: the whole mesh here.

    Attributes:
        start, stop: the x-planes of the real mesh held here.
        kstart, kstop: the k_y rows of the Fourier modes held here.
    """

    def __init__(self, nmesh, box_size, comm=None):
        self.nmesh, self.box_size = int(nmesh), float(box_size)
        self.comm = comm if comm is not None and comm.size > 1 else None
        rank, size = (self.comm.rank, self.comm.size) if self.comm else (0, 1)
        self.start, self.stop = slab_bounds(self.nmesh, rank, size)
        self.kstart, self.kstop = slab_bounds(self.nmesh, rank, size)
        self._pm = particle_mesh(self.nmesh, self.box_size, self.comm, "f4") if self.comm else None

    @property
    def shape(self):
        """Shape of the real planes held here, `(stop - start, N, N)`."""
        return (self.stop - self.start, self.nmesh, self.nmesh)

    @property
    def kshape(self):
        """Shape of the Fourier modes held here, `(N, kstop - kstart, N // 2 + 1)`."""
        return (self.nmesh, self.kstop - self.kstart, self.nmesh // 2 + 1)

    @property
    def holds_zero_mode(self):
        return self.kstart == 0 and self.kstop > 0

    def wavevectors(self):
        """`wavevectors` of the modes held here, float32."""
        return wavevectors(self.nmesh, self.box_size, (self.kstart, self.kstop), np.float32)

    def bin_index(self, kedges):
        """The bin of `kedges` (h/Mpc) of each mode held here by its |k| (taken in float64: modes
        lie on bin edges), int16 `kshape`, clipped to the bins."""
        _, _, k2 = wavevectors(self.nmesh, self.box_size, (self.kstart, self.kstop))
        index = np.empty(k2.shape, np.int16)
        for x in range(len(k2)):
            index[x] = np.clip(np.digitize(np.sqrt(k2[x]), kedges) - 1, 0, len(kedges) - 2)
        return index

    def rfft(self, real):
        """Fourier modes (complex64, `kshape`) of the real planes held here (`shape`); collective."""
        real = np.asarray(real, dtype=np.float32)
        if self._pm is None:
            return _rfft_planes(real)
        field = self._pm.create(type="real")
        field[...] = real
        return field.r2c().value

    def irfft(self, modes, out=None):
        """The real planes (float32, `shape`) of Fourier modes held here; `modes` is left as it is.

        Args:
            modes: complex `kshape` array.
            out: float32 array of `shape` (may be a strided view) to write into.
        """
        out = np.empty(self.shape, np.float32) if out is None else out
        if self._pm is None:
            return _irfft_planes(np.asarray(modes, dtype=np.complex64), out)
        field = self._pm.create(type="complex")
        field[...] = modes
        out[...] = field.c2r().value
        return out

    def sum(self, value):
        """`value` (a number or array) summed over the ranks."""
        return value if self.comm is None else self.comm.allreduce(value)


def particle_mesh(nmesh, box_size, comm=None, dtype="f8"):
    """pmesh's ParticleMesh of an N^3 box in the x-slab layout of `slab_bounds` over `comm`
    (None: this process alone), made once per mesh (its FFT plans take time)."""
    from mpi4py import MPI

    return _particle_mesh(int(nmesh), float(box_size), (comm or MPI.COMM_SELF).py2f(), dtype)


@lru_cache(maxsize=8)
def _particle_mesh(nmesh, box_size, handle, dtype):
    """`particle_mesh` of the communicator of (Fortran) handle `handle`."""
    from mpi4py import MPI
    from pmesh.pm import ParticleMesh

    comm = MPI.Comm.f2py(handle)
    pm = ParticleMesh(BoxSize=box_size, Nmesh=[nmesh] * 3, dtype=dtype, comm=comm, np=[comm.size, 1])
    start, stop = slab_bounds(nmesh, comm.rank, comm.size)
    layout = (pm.partition.local_i_start[0], pm.partition.local_ni[0], pm.partition.local_o_start[1],
              pm.partition.local_no[1])
    if layout != (start, stop - start, start, stop - start):
        raise RuntimeError(f"pmesh splits the {nmesh}^3 mesh as {layout}, not in x-slabs {start}..{stop}")
    return pm


def _rfft_planes(real):
    """numpy's rfftn / N^3, an x-plane then a y-row at a time."""
    n = real.shape[0]
    out = np.empty((n, n, n // 2 + 1), np.complex64)
    for i in range(n):
        out[i] = np.fft.rfft2(real[i], norm="forward")
    for j in range(n):
        out[:, j] = np.fft.fft(out[:, j], axis=0, norm="forward")
    return out


def _irfft_planes(modes, out):
    """The inverse of `_rfft_planes`, written into `out` (one copy of the modes on the way)."""
    n = modes.shape[0]
    rows = np.empty_like(modes)
    for j in range(n):
        rows[:, j] = np.fft.ifft(modes[:, j], axis=0, norm="forward")
    for i in range(n):
        out[i] = np.fft.irfft2(rows[i], s=(n, n), norm="forward")
    return out


def gather_planes(local, start, comm, first, count, nmesh):
    """x-planes `first .. first + count - 1` (modulo N) of an array cut into x-slabs over `comm`.

    Collective: every rank asks for its own planes (`count` may be 0) and gets them from the
    ranks that hold them (each rank's slab is `local`, its planes `start ..`).

    Args:
        local: `(stop - start, ...)` the planes held here.
        start: the first of them.
        comm: MPI communicator.
        first, count: the planes wanted here (count at most N).
        nmesh: N.

    Returns:
        array `(count, ...)` of `local`'s dtype.
    """
    local = np.ascontiguousarray(local)
    held = comm.allgather((int(start), len(local)))
    wanted = comm.allgather((int(first) % nmesh, int(count)))
    out = np.empty((count,) + local.shape[1:], local.dtype)
    requests = []
    for shift in range(comm.size):
        to, frm = (comm.rank + shift) % comm.size, (comm.rank - shift) % comm.size
        for a, b, p in _runs(wanted[to], held[comm.rank], nmesh):
            if to == comm.rank:
                out[p:p + b - a] = local[a:b]
            else:
                requests += [comm.Isend(local[i:j], dest=to) for i, j in _chunks(a, b, local)]
        if frm != comm.rank:
            for a, b, p in _runs(wanted[comm.rank], held[frm], nmesh):
                requests += [comm.Irecv(out[p + i - a:p + j - a], source=frm) for i, j in _chunks(a, b, local)]
    from mpi4py import MPI

    MPI.Request.Waitall(requests)
    return out


def _runs(wanted, held, nmesh):
    """Contiguous runs `(a, b, p)` of the wanted planes among the held ones: held-local planes
    a..b-1 are planes p.. of the wanted range."""
    (first, count), (start, n) = wanted, held
    out = []
    for lap in (0, nmesh):  # (first < N and count <= N: a wanted range reaches past N at most once)
        lo, hi = max(first, start + lap), min(first + count, start + n + lap)
        if lo < hi:
            out.append((lo - start - lap, hi - start - lap, lo - first))
    return out


def _chunks(a, b, local):
    """Plane ranges within a..b-1 of at most MESSAGE_ELEMENTS elements each."""
    per_plane = max(1, int(np.prod(local.shape[1:])))
    step = max(1, MESSAGE_ELEMENTS // per_plane)
    return [(i, min(i + step, b)) for i in range(a, b, step)]


def mesh_of(field):
    """The `Mesh` a `velnet.fields.field.Field` lives on (its slab's, under MPI)."""
    return Mesh(field.nmesh, field.box_size, field.comm)


def smoothed(field, radius):
    """A `Field`'s array Gaussian-smoothed at `radius` Mpc/h (times exp(-k^2 R^2 / 2)), float32, same shape."""
    mesh = mesh_of(field)
    _, _, k2 = mesh.wavevectors()
    kernel = np.exp(np.float32(-0.5 * radius**2) * k2)
    value = field.value
    if not field.is_vector:
        return mesh.irfft(mesh.rfft(value) * kernel)
    return np.stack([mesh.irfft(mesh.rfft(value[..., i]) * kernel) for i in range(3)], axis=-1)

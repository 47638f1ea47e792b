"""Friends-of-friends halos of a snapshot's particles, with nbodykit's `FOF`.

Linking length 0.2 of the mean particle separation, more than 20 particles, mass = number of
particles times the particle mass Omega_m rho_crit L^3 / N, centre-of-mass position and
velocity, periodic-aware. Units: positions Mpc/h, velocities km/s, masses Msun/h.
"""
import numpy as np

from velnet.errors import VelnetInputError
from velnet.physics.cosmology import RHO_CRIT

from .catalogs import HaloCatalog, save_halos
from .readers import read_particles, wrap_positions
from .subhalos import MODELS, mean_infall_count, with_subhalos


def particle_mass(cosmology, box_size, nparticles):
    """Mass of one simulation particle, Omega_m rho_crit L^3 / N, in Msun/h.

    Args:
        cosmology: a `Cosmology`.
        box_size: box side, Mpc/h.
        nparticles: total number of particles (N, not N per side).
    """
    return cosmology.Omega_m * RHO_CRIT * float(box_size) ** 3 / nparticles


def find_halos(particles, linking_length=0.2, nmin=20, subhalos=None, seed=0):
    """Friends-of-friends halos of a snapshot's particles, with nbodykit's `FOF`.

    Collective when `particles.comm` is set; every rank gets the whole catalogue.

    Args:
        particles: `data_prep.readers.Particles` (positions Mpc/h, velocities km/s).
        linking_length: in units of the mean particle separation L / N^(1/3).
        nmin: halos keep more than nmin particles (nbodykit's FOF drops groups of nmin or fewer).
        subhalos: None (hosts only), or a model of `data_prep.subhalos.MODELS`: each host becomes
            its central subhalo plus satellites heavier than nmin particles drawn onto its particles
            (`data_prep.subhalos.with_subhalos`), with the model's ranking mass.
        seed: the satellites' random seed.

    Returns:
        `HaloCatalog`, heaviest first: centre-of-mass positions (periodic) and velocities,
        mass = particles x `particle_mass` (with `subhalos`: the centrals' and satellites' masses).
    """
    from mpi4py import MPI
    from nbodykit.algorithms.fof import FOF
    from nbodykit.source.catalog import ArrayCatalog

    if subhalos is not None and subhalos not in MODELS:
        raise VelnetInputError(None, f"unknown subhalo model {subhalos!r}; known: {sorted(MODELS)}")
    comm = particles.comm or MPI.COMM_SELF
    box = float(particles.box_size)
    catalog = ArrayCatalog({"Position": particles.position, "Velocity": particles.velocity},
                           BoxSize=[box] * 3, comm=comm)
    fof = FOF(catalog, linking_length, nmin)
    features = fof.find_features()
    length, position, velocity = (np.asarray(features[name].compute())
                                  for name in ("Length", "CMPosition", "CMVelocity"))
    keep = length > 0  # row 0 collects the particles in no halo
    # a row's index is its halo's label; the rows are split over the ranks in order
    first_row = sum(comm.allgather(len(length))[:comm.rank])
    label = _gather(comm, first_row + np.flatnonzero(keep))
    length, position, velocity = (_gather(comm, x[keep]) for x in (length, position, velocity))
    mp = particle_mass(particles.cosmology, box, particles.total)
    order = np.argsort(-length, kind="stable")
    attrs = {"source": str(particles.path), "finder": "nbodykit FOF", "linking_length": float(linking_length),
             "nmin": int(nmin), "particle_mass": mp, "nparticles": int(particles.total)}
    mass, position = mp * length[order].astype(np.float64), wrap_positions(position[order].astype(np.float64), box)
    velocity = velocity[order].astype(np.float64)
    if subhalos is not None:
        hosts = np.flatnonzero(mean_infall_count(mass, nmin * mp) > 0)  # those that can hold a satellite
        members = dict(zip(hosts.tolist(), _members(comm, np.asarray(fof.labels), particles, label[order][hosts])))
        mass, position, velocity, host = with_subhalos(
            mass, position, velocity, members, nmin * mp, box, particles.cosmology, float(particles.redshift),
            np.random.default_rng(seed), MODELS[subhalos])
        attrs.update(subhalos=subhalos, subhalo_seed=int(seed), satellites=int(np.sum(host >= 0)))
    return HaloCatalog(position, velocity, mass, box, float(particles.redshift), particles.cosmology, attrs)


def _members(comm, labels, particles, host_labels):
    """The particles of some hosts, gathered to every rank (collective).

    Args:
        comm: the MPI communicator of the particles.
        labels: `(n,)` FOF label of each of this rank's particles (0: in no halo).
        particles: this rank's `Particles`.
        host_labels: `(H,)` the labels of the hosts wanted.

    Returns:
        list of H pairs (positions `(m, 3)` Mpc/h, velocities `(m, 3)` km/s), in the order of `host_labels`,
        each host's particles in their order in the snapshot (rank by rank).
    """
    inside = np.isin(labels, host_labels)
    labels, position, velocity = (_gather(comm, x) for x in (labels[inside], particles.position[inside],
                                                              particles.velocity[inside]))
    order = np.argsort(labels, kind="stable")
    found, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    at = dict(zip(found.tolist(), zip(starts.tolist(), counts.tolist())))
    out = []
    for host in host_labels.tolist():
        start, count = at[host]
        rows = order[start:start + count]
        out.append((position[rows], velocity[rows]))
    return out


def write_halos(snapshot_path, out_h5, linking_length=0.2, nmin=20, subhalos=None, seed=0, **reader_kwargs):
    """Read a snapshot, find its FOF halos and save them (`save_halos`), atomically.

    Collective under MPI (nbodykit's current communicator); rank 0 writes.

    Args:
        snapshot_path: a snapshot `read_particles` reads.
        out_h5: the halo catalogue file to write.
        linking_length, nmin, subhalos, seed: as `find_halos`.
        **reader_kwargs: passed to `read_particles` (format, box_size, cosmology, ...).

    Returns:
        The `HaloCatalog`.
    """
    from nbodykit import CurrentMPIComm

    comm = reader_kwargs.pop("comm", None) or CurrentMPIComm.get()
    catalog = find_halos(read_particles(snapshot_path, comm=comm, **reader_kwargs), linking_length, nmin,
                         subhalos, seed)
    if comm.rank == 0:
        save_halos(out_h5, catalog)
    comm.barrier()
    return catalog


def _gather(comm, array):
    """The concatenation of every rank's `array`, on every rank."""
    if comm.size == 1:
        return array
    return np.concatenate(comm.allgather(array))

"""The redshift-space halo fields of the 2024 halo paper: the inputs and targets of one snapshot.

The paper's input (section 2.2) is four channels of redshift-space halos, ranked by mass
and cut where the cumulative number density reaches 1e-4, 1e-3, 2e-3 and 3e-3 (h/Mpc)^3,
CIC-painted without ("number") or with ("mass") mass weighting (`paint_halo_channels`);
its targets are the real-space matter density, velocity and momentum; its extra inputs are
the linear velocity and momentum of delta_s / beta (`velnet.physics.rsd`). Beside them goes the
linear real-space matter density delta_s / (b + f mu^2) (`velnet.physics.rsd.linear_density`), the
whole-box base of a residual stage one. `halo_fields` makes all
of them for one snapshot, `write_halo_fields` writes them as one fields file.

Number densities reached. The paper's 3e-3 (h/Mpc)^3 needs halos down to about
1.5e12 Msun/h at z = 0.59 (its edges: log10 M = 15.01, 13.30, 12.56, 12.31, 12.17), so
20 particles must weigh no more than that. FastPM boxes (10 steps, force mesh 2) at
z = 0.59 in the HALO2024 cosmology gave, with at least 20 particles per halo:

- 2 Mpc/h particle spacing (256 Mpc/h with 128^3; 5.9e11 Msun/h a particle):
  n = 1.9e-4 (h/Mpc)^3, the first channel and a tenth of the second;
- 1 Mpc/h spacing (128 Mpc/h with 128^3; 7.4e10 Msun/h): n = 1.7e-3 (h/Mpc)^3, the
  first two channels and part of the third; edges log10 M = 14.6, 13.34, 12.46, 12.19;
  beta = 1.69 (number) and 2.72 (mass weighting) on a 64^3 mesh, against the paper's
  1.85 and 2.57;
- 0.67 Mpc/h spacing (128 Mpc/h with 192^3; 2.2e10 Msun/h): n = 5.7e-3 (h/Mpc)^3, all
  four channels (lowest edge log10 M = 12.0).
- 0.59 Mpc/h spacing, the halo2024 preset's (`velnet simulate --preset halo2024 --box 64`:
  109^3 particles, 1.5e10 Msun/h): n = 7.5e-3 (h/Mpc)^3, all four channels; edges log10 M =
  14.26, 13.41, 12.50, 12.18, 11.99; beta = 1.45 (number weighting, 32^3 mesh). It cost 48 s
  and 0.94 GB for fastpm and 15 s for FOF on 2 cores; the default experiment's volume (five
  128 Mpc/h boxes) at this spacing is 40 such boxes, about 40 min of simulation against 5.

So boxes coarser than about 0.8 Mpc/h per particle, such as velnet's quick test boxes
(2 Mpc/h), fall short of 3e-3: their channels hold all the halos there are (with a
warning), and the fields file records the number densities reached. To reach the
paper's, keep the preset's particle spacing of 1200/2048 = 0.59 Mpc/h (`velnet simulate
--preset halo2024 --box B` sets B / 0.59 particles per side; 128 Mpc/h is 218^3) and
paint at the paper's 2.35 Mpc/h mesh (nmesh = B / 2.35, 512 for 1200 Mpc/h); boxes of a
few hundred Mpc/h need MPI (`mpirun -n R velnet simulate ...`; `find_halos` and the
particle painting run on every rank's share of the particles).
"""
import json
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, los_axis, save_fields
from velnet.fields.painting import paint
from velnet.physics.rsd import (
    BIAS_KMAX,
    linear_bias,
    linear_density,
    linear_inputs,
    redshift_space_positions,
)

from .fof import find_halos
from .paint import paint_fields
from .readers import read_particles

log = logging.getLogger(__name__)

NUMBER_DENSITIES = (1e-4, 1e-3, 2e-3, 3e-3)
"""Cumulative halo number densities (h/Mpc)^3 closing the paper's four mass channels."""

WEIGHTINGS = ("number", "mass")
"""Painting schemes: "number" (without M_halo weighting) and "mass" (with M_halo weighting)."""


@dataclass
class MassBins:
    """Halos ranked by mass into channels closed at cumulative number densities.

    Attributes:
        channel: `(N,)` int, the channel of each halo (0 = heaviest), -1 beyond the last.
        edges: `(n + 1,)` masses, Msun/h: the heaviest halo's, then the lightest of each
            channel (the paper's log10 M = 15.01, 13.30, 12.56, 12.31, 12.17).
        counts: `(n,)` halos per channel.
        target: `(n,)` cumulative number densities asked for, (h/Mpc)^3.
        reached: `(n,)` cumulative number densities reached, (h/Mpc)^3.
    """

    channel: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    target: np.ndarray
    reached: np.ndarray

    def to_dict(self):
        """JSON-ready metadata (without the per-halo channels)."""
        return {"mass_edges_msun_h": [float(m) for m in self.edges], "halo_counts": [int(c) for c in self.counts],
                "number_densities_target": [float(n) for n in self.target],
                "number_densities_reached": [float(n) for n in self.reached]}


def mass_bins(mass, volume, number_densities=NUMBER_DENSITIES):
    """Channels of the N_j = round(n_j V) most massive halos (the paper's mass intervals).

    Halos are ranked by mass, heaviest first (equal masses keep catalogue order); channel j
    holds ranks N_{j-1} .. N_j - 1. A catalogue with fewer than N_n halos puts all of them
    in the channels, leaves the rest short or empty, and warns.

    Args:
        mass: `(N,)` halo masses, Msun/h.
        volume: box volume, (Mpc/h)^3.
        number_densities: increasing cumulative number densities, (h/Mpc)^3.

    Returns:
        `MassBins`.

    Raises:
        VelnetInputError: no halos, or densities not positive and increasing.
    """
    mass = np.asarray(mass, dtype=np.float64)
    target = np.asarray(number_densities, dtype=np.float64)
    if target.ndim != 1 or len(target) == 0 or target[0] <= 0 or np.any(np.diff(target) <= 0):
        raise VelnetInputError(None, f"number densities must be positive and increasing. "
                                     f"Received: {list(number_densities)}")
    if len(mass) == 0:
        raise VelnetInputError(None, "no halos to bin")
    wanted = np.round(target * volume).astype(np.int64)
    cumulative = np.minimum(wanted, len(mass))
    if cumulative[-1] < wanted[-1]:
        warnings.warn(f"the catalogue's {len(mass)} halos reach a number density of {len(mass) / volume:.3g} "
                      f"(h/Mpc)^3, short of {target[-1]:.3g}: the channels hold all halos and "
                      f"{int(np.sum(cumulative < wanted))} of {len(target)} fall short", stacklevel=2)
    order = np.argsort(-mass, kind="stable")
    channel = np.full(len(mass), -1, dtype=np.int64)
    starts = np.concatenate([[0], cumulative[:-1]])
    for j, (start, stop) in enumerate(zip(starts, cumulative)):
        channel[order[start:stop]] = j
    edges = np.concatenate([[mass[order[0]]], mass[order[np.maximum(cumulative, 1) - 1]]])
    return MassBins(channel, edges, cumulative - starts, target, cumulative / volume)


def paint_halo_channels(catalog, nmesh, los="z", weighting="number", number_densities=NUMBER_DENSITIES):
    """The paper's input: redshift-space halos of each mass channel, CIC-painted.

    Halos move to redshift space along `los` (`velnet.physics.rsd.redshift_space_positions`), are
    binned by `mass_bins`, and each channel is painted with plain CIC
    (`velnet.fields.painting.paint`) with weight 1 ("number", without mass weighting) or the halo mass
    ("mass", with mass weighting). Each channel is normalised by the mean weight per cell
    of all binned halos, W / N^3 (W: their number or total mass): channel j is
    rho_j / rho_mean, its mean is the channel's share of W, and the channels sum to
    1 + delta_s of all binned halos. Halos (or Msun/h) per cell = value * W / N^3; the
    metadata records W / N^3 as "mean_weight_per_cell".

    Args:
        catalog: `HaloCatalog`.
        nmesh: cells per side.
        los: line of sight, 0, 1, 2 or "x", "y", "z".
        weighting: "number" or "mass".
        number_densities: cumulative number densities closing the channels, (h/Mpc)^3.

    Returns:
        (fields, bins, meta): list of scalar `Field`s "halos_s_0".. (heaviest first),
        the `MassBins`, and a JSON-ready dict of metadata.

    Raises:
        VelnetInputError: unknown `weighting` or `los`, or see `mass_bins`.
    """
    if weighting not in WEIGHTINGS:
        raise VelnetInputError(None, f"weighting must be one of {WEIGHTINGS}. Received: {weighting!r}")
    axis = los_axis(los)
    bins = mass_bins(catalog.mass, catalog.volume, number_densities)
    s = redshift_space_positions(catalog.position, catalog.velocity, axis, catalog.box_size,
                                 catalog.redshift, catalog.cosmology)
    selected = bins.channel >= 0
    weight = catalog.mass[selected] if weighting == "mass" else np.ones(int(selected.sum()))
    mean_per_cell = float(weight.sum()) / nmesh**3
    unit = "Msun/h" if weighting == "mass" else "halos"
    fields = []
    for j in range(len(bins.counts)):
        value = paint(s[selected], catalog.box_size, nmesh, weight=weight, value=bins.channel[selected] == j)
        attrs = {"units": f"rho_{j} / rho_mean of all channels ({weighting}-weighted)", "channel": j,
                 "mass_min_msun_h": float(bins.edges[j + 1]), "mass_max_msun_h": float(bins.edges[j]),
                 "nhalos": int(bins.counts[j]), "painter": "cic", "compensated": False}
        fields.append(Field(value.astype(np.float32), f"halos_s_{j}", catalog.box_size, catalog.redshift,
                            catalog.cosmology, attrs))
    meta = {"los": "xyz"[axis], "los_axis": axis, "weighting": weighting,
            "halo_channels": [f.name for f in fields], "mean_weight_per_cell": mean_per_cell,
            "weight_unit": unit, **bins.to_dict()}
    return fields, bins, meta


def check_same_box(catalog, particles):
    """Raise unless a halo catalogue is of the particles' box, redshift and cosmology.

    Raises:
        VelnetInputError: naming the catalogue's file.
    """
    problems = []
    if not math.isclose(catalog.box_size, particles.box_size, rel_tol=1e-6):
        problems.append(f"box {catalog.box_size} vs {particles.box_size} Mpc/h")
    if not math.isclose(catalog.redshift, particles.redshift, rel_tol=1e-3, abs_tol=1e-3):
        problems.append(f"z={catalog.redshift:.4g} vs {particles.redshift:.4g}")
    a, b = catalog.cosmology.to_dict(), particles.cosmology.to_dict()
    if not all(math.isclose(a[k], b[k], rel_tol=1e-4) for k in a):
        problems.append(f"cosmology {a} vs {b}")
    if problems:
        raise VelnetInputError(catalog.attrs.get("source"),
                               f"halo catalogue is not of snapshot {particles.path}: {'; '.join(problems)}")


def halo_fields(particles, nmesh, catalog=None, los="z", weighting="number",
                number_densities=NUMBER_DENSITIES, kmax=BIAS_KMAX, linking_length=0.2, nmin=20):
    """All fields of the halo experiment for one snapshot.

    Collective when `particles.comm` is set (FOF and painting of the particles).

    Args:
        particles: `Particles` of the snapshot.
        nmesh: cells per side (the paper: 512 for 1200 Mpc/h, 2.35 Mpc/h cells).
        catalog: a `HaloCatalog` of the same box (`load_halos`, `read_catalog`); None finds
            FOF halos in the particles (`find_halos` with `linking_length`, `nmin`).
        los: line of sight of the redshift space, 0, 1, 2 or "x", "y", "z".
        weighting: "number" (without M_halo weighting) or "mass" (with it).
        number_densities: cumulative number densities of the channels, (h/Mpc)^3.
        kmax: upper k of the bias fit of eq. 4, h/Mpc.
        linking_length, nmin: FOF settings when `catalog` is None.

    Returns:
        (fields, attrs): dict name -> `Field`: "halos_s_0".."halos_s_3" (see
        `paint_halo_channels`), "density" (rho/rho_mean of the matter, real space),
        "velocity", "momentum" (km/s, `data_prep.paint.paint_fields`),
        "linear_velocity_s", "linear_momentum_s" (km/s, eq. 2-3 from the summed channels
        with beta of eq. 4), "linear_density_s" (rho/rho_mean, `velnet.physics.rsd.linear_density`
        of the summed channels along `los`); attrs: JSON-ready metadata (los, weighting, mass edges,
        target and reached number densities, counts, beta, the catalogue's provenance).

    Raises:
        VelnetInputError: the catalogue is not of this box, or bad settings.
    """
    los_axis(los)
    if catalog is None:
        catalog = find_halos(particles, linking_length, nmin)
    else:
        check_same_box(catalog, particles)
    channels, _, meta = paint_halo_channels(catalog, nmesh, los, weighting, number_densities)
    fields = {f.name: f for f in channels}
    fields.update(paint_fields(particles, nmesh))
    total = np.sum([f.value for f in channels], axis=0, dtype=np.float64)
    halos = Field(total, "halos_s", catalog.box_size, catalog.redshift, catalog.cosmology)
    beta = linear_bias(halos, fields["density"], kmax)
    fields.update(linear_inputs(halos, beta))
    fields["linear_density_s"] = linear_density(halos, beta, los)
    log.info("%d halos (n = %.3g (h/Mpc)^3), %s weighting: beta = %.3f", len(catalog),
             catalog.number_density, weighting, beta)
    attrs = {**meta, "beta": beta, "beta_kmax": float(kmax), "nhalos": len(catalog),
             "halo_number_density": catalog.number_density, "halo_catalog": _json_ready(catalog.attrs)}
    return fields, attrs


def _json_ready(attrs):
    return json.loads(json.dumps(attrs, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


TARGETS = ("density", "velocity", "momentum", "linear_velocity_s", "linear_momentum_s", "linear_density_s")
"""The fields after the halo channels in a halo fields file."""


def write_halo_fields(snapshot_path, out_h5, nmesh, catalog=None, los="z", weighting="number",
                      number_densities=NUMBER_DENSITIES, kmax=BIAS_KMAX, linking_length=0.2, nmin=20,
                      **reader_kwargs):
    """Read a snapshot, make its `halo_fields` and write them to one fields file, atomically.

    Collective under MPI (nbodykit's current communicator); rank 0 writes.

    Args:
        snapshot_path: a snapshot `read_particles` reads.
        out_h5: the fields file (`velnet.fields.field.save_fields` layout; the halo channels
            are the scalar fields "halos_s_0".."halos_s_3", heaviest first).
        nmesh, catalog, los, weighting, number_densities, kmax, linking_length, nmin:
            as `halo_fields`.
        **reader_kwargs: passed to `read_particles` (format, box_size, cosmology, ...).

    Returns:
        `out_h5`.
    """
    from nbodykit import CurrentMPIComm

    comm = reader_kwargs.pop("comm", None) or CurrentMPIComm.get()
    particles = read_particles(snapshot_path, comm=comm, **reader_kwargs)
    fields, attrs = halo_fields(particles, nmesh, catalog, los, weighting, number_densities, kmax,
                                linking_length, nmin)
    attrs.update(source=str(particles.path), source_format=particles.format, nparticles=int(particles.total))
    if comm.rank == 0:
        names = attrs["halo_channels"] + list(TARGETS)
        save_fields(out_h5, [fields[name] for name in names], attrs=attrs)
    comm.barrier()
    return out_h5

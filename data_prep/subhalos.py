"""Subhalos drawn onto FOF hosts: the 2024 paper's "halos and subhalos" from a simulation that resolves hosts only.

The paper's tracers are HBT+ subhalos of CosmicGrowth ranked by their bound mass: each host
counts as its central subhalo and each satellite as a tracer of its own. A PM simulation with a
force softening of a cell or two resolves hosts but no substructure, so velnet draws satellites
from the model of Han et al. (2016, MNRAS 457, 1208, "a unified model for the spatial and mass
distribution of subhaloes", fitted to HBT subhalos; the parameters as in its authors' SubGen):

- subhalos fall in with infall masses m_acc from dN/d ln m_acc = A M m_acc^-ALPHA (masses in
  1e10 Msun/h, A = 0.1 M^-0.02), m_acc up to PSI_ACC_MAX of the host mass M, a fraction
  SURVIVING of them surviving; at infall they trace the host's mass, so each sits on a random
  particle of its host, with that particle's velocity (its fingers of god are the host's);
- each keeps mu = m / m_acc of its infall mass, log-normal (SIGMA_MU in ln mu) about
  MU_STAR(M) (R / R200c)^BETA(M) at its distance R from the host's centre, below min(1, 4.2
  times that), so satellites near the centre are stripped most;
- the host's own tracer, its central, keeps M less its satellites' bound masses.

Tracers are ranked by these bound masses ("han16", as HBT+'s Nbound), or, as subhalo abundance
matching ranks them, by the mass at infall: each satellite its m_acc, each central its host's M
("han16-infall"). This is a model of the subhalos on the simulated hosts, not a subhalo finder's output (velnet
reads HBT+'s: `data_prep.hbt`). The host mass M is the FOF mass, taken for the model's M200c.
"""
import numpy as np

from .fof import RHO_CRIT

MODELS = {"han16": "bound", "han16-infall": "infall"}
"""The subhalo models velnet draws from (`velnet halos --subhalos`) -> the mass that ranks the tracers."""
SURVIVING = 0.55
ALPHA = 0.95
PSI_ACC_MAX = 0.1
SIGMA_MU = 1.1
MU_MAX_FACTOR = 4.2


def amplitude(mass):
    """A of the infall mass function for hosts of `mass` (Msun/h)."""
    return 0.1 * (mass / 1e10) ** -0.02


def mu_star(mass):
    """The median bound fraction at R = R200c for hosts of `mass` (Msun/h)."""
    return 0.5 * (mass / 1e10) ** -0.03


def beta(mass):
    """The slope of the median bound fraction with R / R200c for hosts of `mass` (Msun/h)."""
    return 1.7 * (mass / 1e10) ** -0.04


def mean_infall_count(mass, min_infall):
    """Mean number of surviving subhalos with infall mass in [min_infall, PSI_ACC_MAX M] (Msun/h; arrays)."""
    m, lo = np.asarray(mass, dtype=np.float64) / 1e10, np.asarray(min_infall, dtype=np.float64) / 1e10
    hi = PSI_ACC_MAX * m
    count = SURVIVING * amplitude(m * 1e10) * m * (lo ** -ALPHA - hi ** -ALPHA) / ALPHA
    return np.where(lo < hi, count, 0.0)


def draw_infall_masses(mass, min_infall, rng):
    """Infall masses (Msun/h) of one host's surviving subhalos above `min_infall` (Poisson count)."""
    count = rng.poisson(mean_infall_count(mass, min_infall))
    lo, hi = min_infall ** -ALPHA, (PSI_ACC_MAX * mass) ** -ALPHA
    return (lo + rng.uniform(size=count) * (hi - lo)) ** (-1 / ALPHA)


def draw_bound_fractions(mass, radius, rng):
    """mu = m / m_acc at distances `radius` (in R200c) from the centre of a host of `mass` (Msun/h)."""
    median = mu_star(mass) * np.maximum(radius, 1e-3) ** beta(mass)
    top = np.minimum(1.0, MU_MAX_FACTOR * median)
    mu = np.full(len(radius), np.inf)
    bad = np.ones(len(radius), bool)
    while bad.any():
        mu[bad] = median[bad] * np.exp(SIGMA_MU * rng.standard_normal(bad.sum()))
        bad = mu >= top
    return mu


def r200c(mass, cosmology, redshift):
    """Comoving R200c (Mpc/h) of hosts of `mass` (Msun/h) at `redshift`."""
    a = 1.0 / (1.0 + redshift)
    rho = 200 * RHO_CRIT * cosmology.efunc(a) ** 2
    return (3 * np.asarray(mass) / (4 * np.pi * rho)) ** (1 / 3) / a


def with_subhalos(mass, position, velocity, members, min_mass, box_size, cosmology, redshift, rng,
                  ranking="bound"):
    """Hosts as central subhalos plus satellites drawn onto their particles.

    Args:
        mass: `(H,)` host masses, Msun/h, heaviest first.
        position, velocity: `(H, 3)` host centres (Mpc/h, in [0, L)) and velocities (km/s).
        members: a list of H pairs (positions `(n, 3)`, velocities `(n, 3)`) of each host's particles.
        min_mass: lightest satellite kept (bound mass), Msun/h.
        box_size: L, Mpc/h (distances to the centre are periodic).
        cosmology, redshift: for R200c.
        rng: a numpy `Generator`.
        ranking: "bound" (satellites of bound mass >= min_mass, each central its host's mass less
            theirs) or "infall" (satellites of infall mass >= min_mass, at that mass; centrals at
            their host's mass).

    Returns:
        (mass, position, velocity, is_satellite) of centrals and satellites, heaviest first.
    """
    if ranking not in ("bound", "infall"):
        raise ValueError(f"ranking must be 'bound' or 'infall', not {ranking!r}")
    central = np.asarray(mass, dtype=np.float64).copy()
    radii = r200c(central, cosmology, redshift)
    sat_mass, sat_pos, sat_vel = [], [], []
    for host in np.flatnonzero(mean_infall_count(central, min_mass) > 0):
        infall = draw_infall_masses(mass[host], min_mass, rng)
        pos, vel = members[host]
        if not len(infall):
            continue
        pick = rng.integers(len(pos), size=len(infall))
        offset = pos[pick] - position[host]
        offset -= box_size * np.round(offset / box_size)
        if ranking == "infall":
            kept = infall
        else:
            kept = infall * draw_bound_fractions(mass[host], np.linalg.norm(offset, axis=1) / radii[host], rng)
            central[host] -= kept[kept >= min_mass].sum()
        keep = kept >= min_mass
        sat_mass.append(kept[keep])
        sat_pos.append(pos[pick[keep]])
        sat_vel.append(vel[pick[keep]])
    all_mass = np.concatenate([central, *sat_mass])
    order = np.argsort(-all_mass, kind="stable")
    is_satellite = np.arange(len(all_mass)) >= len(central)
    return (all_mass[order], np.concatenate([position, *sat_pos])[order],
            np.concatenate([velocity, *sat_vel])[order], is_satellite[order])

"""Subhalos drawn onto FOF hosts: the 2024 paper's "halos and subhalos" from a simulation that resolves hosts only.

The paper's tracers are HBT+ subhalos of CosmicGrowth ranked by their bound mass: each host
counts as its central subhalo and each satellite as a tracer of its own. A PM simulation with a
force softening of a cell or two resolves hosts but no substructure, so velnet draws satellites
from the model of Han et al. (2016, MNRAS 457, 1208, "a unified model for the spatial and mass
distribution of subhaloes", fitted to HBT subhalos; the parameters as in its authors' SubGen):

- subhalos fall in with infall masses m_acc from dN/d ln m_acc = A M m_acc^-ALPHA (masses in
  1e10 Msun/h, A = 0.1 M^-0.02), m_acc up to PSI_ACC_MAX of the host mass M, a fraction
  SURVIVING of them surviving; they trace the host's mass out to R_MAX R200c, so each sits on a
  random particle of its host within that radius, with that particle's velocity (its fingers of
  god are the host's);
- each keeps mu = m / m_acc of its infall mass, log-normal (SIGMA_MU in ln mu) about
  mu_star(M) (R / R200c)^beta(M) at its distance R from the host's centre, below min(1,
  MU_MAX_FACTOR times that), so satellites near the centre are stripped most; (R, mu) are drawn
  together, a pair outside the bound drawn again whole, as SubGen samples their joint density;
- the host's own tracer, its central, keeps M less its satellites' bound masses.

Tracers are ranked by these bound masses ("han16", as HBT+'s Nbound), or, as subhalo abundance
matching ranks them, by the mass at infall: each satellite its m_acc, each central its host's M
("han16-infall"). This is a model of the subhalos on the simulated hosts, not a subhalo finder's
output (velnet reads HBT+'s: `data_prep.hbt`). The host mass M is the FOF mass, taken for the model's M200c.
"""
import numpy as np

from velnet.physics.cosmology import RHO_CRIT

MODELS = {"han16": "bound", "han16-infall": "infall"}
"""The subhalo models velnet draws from (`velnet halos --subhalos`) -> the mass that ranks the tracers."""
SURVIVING = 0.55
ALPHA = 0.95
PSI_ACC_MAX = 0.1
SIGMA_MU = 1.1
MU_MAX_FACTOR = 4.2
R_MAX = 2.0
AMPLITUDE, MU_STAR, BETA = (0.1, -0.02), (0.5, -0.03), (1.7, -0.04)
"""(value at M = 1e10 Msun/h, power of M / 1e10) of A, mu_star and beta."""
PARAMETERS = {"surviving": SURVIVING, "alpha": ALPHA, "psi_acc_max": PSI_ACC_MAX, "sigma_mu": SIGMA_MU,
              "mu_max_factor": MU_MAX_FACTOR, "r_max": R_MAX, "amplitude": AMPLITUDE, "mu_star": MU_STAR,
              "beta": BETA, "version": 1}
"""Every number of the model, for the cache key of catalogues drawn with it (`data_prep.cache.halos_file`)."""


def amplitude(mass):
    """A of the infall mass function for hosts of `mass` (Msun/h)."""
    return AMPLITUDE[0] * (mass / 1e10) ** AMPLITUDE[1]


def mu_star(mass):
    """The median bound fraction at R = R200c for hosts of `mass` (Msun/h)."""
    return MU_STAR[0] * (mass / 1e10) ** MU_STAR[1]


def beta(mass):
    """The slope of the median bound fraction with R / R200c for hosts of `mass` (Msun/h)."""
    return BETA[0] * (mass / 1e10) ** BETA[1]


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


def median_bound_fraction(mass, radius):
    """The median mu = m / m_acc at `radius` (in R200c, array) in a host of `mass` (Msun/h)."""
    return mu_star(mass) * np.maximum(radius, 1e-3) ** beta(mass)


def draw_orbits(mass, radius, count, rng):
    """Where `count` satellites sit and how much of their infall mass they keep, drawn jointly.

    Args:
        mass: the host's mass, Msun/h.
        radius: `(n,)` distances of the host's particles from its centre, in R200c.
        count: satellites to place.
        rng: a numpy `Generator`.

    Returns:
        (particle indices into `radius`, mu): each satellite on a particle within R_MAX (any particle
        where none is), mu log-normal about `median_bound_fraction` there; a pair with mu at or above
        min(1, MU_MAX_FACTOR x the median) is drawn again whole.
    """
    inside = np.flatnonzero(radius <= R_MAX)
    candidates = inside if len(inside) else np.arange(len(radius))
    pick, mu = np.empty(count, np.int64), np.empty(count)
    todo = np.arange(count)
    while len(todo):
        p = candidates[rng.integers(len(candidates), size=len(todo))]
        median = median_bound_fraction(mass, radius[p])
        m = median * np.exp(SIGMA_MU * rng.standard_normal(len(todo)))
        ok = m < np.minimum(1.0, MU_MAX_FACTOR * median)
        pick[todo[ok]], mu[todo[ok]] = p[ok], m[ok]
        todo = todo[~ok]
    return pick, mu


def r200c(mass, cosmology, redshift):
    """Comoving R200c (Mpc/h) of hosts of `mass` (Msun/h) at `redshift`."""
    a = 1.0 / (1.0 + redshift)
    rho = 200 * RHO_CRIT * cosmology.efunc(a) ** 2
    return (3 * np.asarray(mass) / (4 * np.pi * rho)) ** (1 / 3) / a


def with_subhalos(mass, position, velocity, members, min_mass, box_size, cosmology, redshift, rng,
                  ranking="bound"):
    """Hosts as central subhalos plus satellites drawn onto their particles.

    Args:
        mass: `(H,)` host masses, Msun/h.
        position, velocity: `(H, 3)` host centres (Mpc/h, in [0, L)) and velocities (km/s).
        members: dict host index -> (positions `(n, 3)` Mpc/h, velocities `(n, 3)` km/s) of its particles,
            for the hosts that may hold satellites (those with `mean_infall_count(mass, min_mass) > 0`;
            the others draw none).
        min_mass: satellites are kept above this mass (bound or infall, as `ranking`), Msun/h.
        box_size: L, Mpc/h (distances to the centre are periodic).
        cosmology, redshift: for R200c.
        rng: a numpy `Generator`.
        ranking: "bound" (satellites of bound mass above min_mass, each central its host's mass less
            theirs) or "infall" (satellites of infall mass above min_mass, at that mass; centrals at
            their host's mass).

    Returns:
        (mass `(T,)`, position `(T, 3)`, velocity `(T, 3)`, host `(T,)`) of the T centrals and satellites,
        heaviest first; host: the index into the inputs of each tracer's host, -1 for a central.
    """
    if ranking not in ("bound", "infall"):
        raise ValueError(f"ranking must be 'bound' or 'infall', not {ranking!r}")
    central = np.asarray(mass, dtype=np.float64).copy()
    radii = r200c(central, cosmology, redshift)
    sat_mass, sat_pos, sat_vel, sat_host = [], [], [], []
    for host, (pos, vel) in members.items():
        infall = draw_infall_masses(mass[host], min_mass, rng)
        if not len(infall):
            continue
        offset = pos - position[host]
        offset -= box_size * np.round(offset / box_size)
        pick, mu = draw_orbits(mass[host], np.linalg.norm(offset, axis=1) / radii[host], len(infall), rng)
        kept = infall if ranking == "infall" else infall * mu
        keep = kept > min_mass
        if ranking == "bound":
            central[host] -= kept[keep].sum()
        sat_mass.append(kept[keep])
        sat_pos.append(pos[pick[keep]])
        sat_vel.append(vel[pick[keep]])
        sat_host.append(np.full(keep.sum(), host))
    all_mass = np.concatenate([central, *sat_mass])
    order = np.argsort(-all_mass, kind="stable")
    host = np.concatenate([np.full(len(central), -1), *sat_host])
    return (all_mass[order], np.concatenate([position, *sat_pos])[order],
            np.concatenate([velocity, *sat_vel])[order], host[order])

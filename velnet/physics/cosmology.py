"""Flat LCDM background: H(a), growth D(a) and rate f(a), with the papers' parameter sets.

Radiation is neglected: at z < 3 it changes H and f by less than 1e-4.
"""
from dataclasses import asdict, dataclass

import numpy as np

RHO_CRIT = 2.775e11
"""Critical density today, h^2 Msun / Mpc^3, i.e. (Msun/h) / (Mpc/h)^3."""


@dataclass(frozen=True)
class Cosmology:
    """Flat LCDM parameters. `h` is H0 / (100 km/s/Mpc)."""

    Omega_m: float
    Omega_b: float
    h: float
    sigma8: float
    n_s: float

    @property
    def Omega_cdm(self):
        return self.Omega_m - self.Omega_b

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: float(d[k]) for k in ("Omega_m", "Omega_b", "h", "sigma8", "n_s")})

    def efunc(self, a):
        """E(a) = H(a) / H0."""
        a = np.asarray(a, dtype=float)
        return np.sqrt(self.Omega_m * a**-3 + (1.0 - self.Omega_m))

    def hubble(self, a):
        """H(a) in h km/s/Mpc, i.e. km/s per Mpc/h."""
        return 100.0 * self.efunc(a)

    def _growth_unnormalised(self, a, n=4096):
        """D(a) = 2.5 Omega_m E(a) int_0^a da' / (a' E(a'))^3 (Heath 1977)."""
        x = np.linspace(1e-8, a, n)
        integral = np.trapezoid(1.0 / (x * self.efunc(x)) ** 3, x)
        return 2.5 * self.Omega_m * self.efunc(a) * integral

    def growth(self, a):
        """Linear growth factor D(a), normalised to D(1) = 1."""
        return float(self._growth_unnormalised(a) / self._growth_unnormalised(1.0))

    def growth_rate(self, a):
        """f(a) = dlnD/dlna = dlnE/dlna + 2.5 Omega_m / (a^2 E^2 D)."""
        e2 = self.efunc(a) ** 2
        dlne = -1.5 * self.Omega_m * a**-3 / e2
        return float(dlne + 2.5 * self.Omega_m / (a**2 * e2 * self._growth_unnormalised(a)))


WU2021 = Cosmology(Omega_m=0.31, Omega_b=0.05, h=0.6777, sigma8=0.83, n_s=0.96)
"""Wu et al. 2021: the cosmology of their COLA boxes."""

HALO2024 = Cosmology(Omega_m=0.2235 + 0.0445, Omega_b=0.0445, h=0.71, sigma8=0.83, n_s=0.968)
"""The 2024 halo paper: WMAP-like CosmicGrowth parameters (Omega_c = 0.2235)."""

PRESETS = {"wu2021": WU2021, "halo2024": HALO2024}

"""Redshift-space reconstruction of the displacement: the velocity estimator of kSZ analyses today.

The iterative FFT method of BAO reconstruction (Burden et al. 2015, arXiv:1504.02591; Bautista
et al. 2018's particle version, as in cosmodesi's pyrecon): tracers seen in redshift space are
painted and smoothed with a Gaussian of radius R, the Zel'dovich displacement of the density
contrast divided by the bias b is solved for on the mesh,

    psi(k) = i k / k^2 delta_s(k) / b,

read at the tracers and used to move them out of redshift space, s - f (psi . z) z, and the
steps repeat from the moved tracers. The first iteration removes the Kaiser part of psi,
beta / (1 + beta) of its line-of-sight component (Burden et al.'s eq. 12; beta = f / b), to
converge faster. The velocity is then linear theory of the last displacement, v = f a H psi
(km/s), on the mesh; the density is 1 + delta / b of the last (smoothed) painting.

The tracers here are the cells of a halo fields file, each at its mesh point and weighted by the
total redshift-space halo density (the four channels summed): a fields file holds painted
channels, not positions, and at 2 Mpc/h cells the second CIC assignment is far below the
smoothing radius. The line of sight is one box axis (plane parallel).

`Reconstruction.fit` picks R and b on training boxes (the pair of a grid with the smallest
velocity error), `predict` applies it to a box, `save` / `load` keep it as JSON, so `velnet
predict` runs it like a network.
"""
from dataclasses import dataclass, field

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, los_axis
from velnet.fields.painting import paint, readout
from velnet.files import read_json_object, write_json
from velnet.physics.linear import growth_velocity_factor, wavevectors

FORMAT = "velnet-halo-reconstruction"
RADII = (2.5, 3.5, 5.0, 7.5, 10.0)
"""Smoothing radii (Mpc/h) `fit` tries."""
BIAS_SCALES = (0.7, 0.85, 1.0, 1.15, 1.3)
"""Multiples of the Kaiser bias of the boxes' beta that `fit` tries."""


def moved_tracers(halo_density, bias, smoothing, los, niter=3):
    """The real-space positions of a redshift-space halo field's tracers after reconstruction.

    Args:
        halo_density: scalar `Field` of the redshift-space halo density relative to its mean
            (1 + delta_s), with the box's redshift and cosmology.
        bias: the halos' linear real-space bias b.
        smoothing: Gaussian radius R, Mpc/h.
        los: the line-of-sight axis (0, 1, 2 or "x", "y", "z").
        niter: iterations (pyrecon's default: 3).

    Returns:
        (positions, cells): `(M, 3)` positions (Mpc/h, in [0, box)) of the M cells that hold
        tracers, moved along the line of sight, and `(M,)` those cells' flat indices.

    Raises:
        VelnetInputError: a vector field, a bias or radius that is not positive, niter < 1.
    """
    axis = los_axis(los)
    if halo_density.is_vector:
        raise VelnetInputError(halo_density.attrs.get("path"), f"{halo_density.name!r} is not a scalar field")
    if not (bias > 0 and smoothing > 0 and niter >= 1):
        raise VelnetInputError(None, f"reconstruction needs bias > 0, smoothing > 0 and niter >= 1. Received: "
                                     f"bias={bias}, smoothing={smoothing}, niter={niter}")
    n, box = halo_density.nmesh, halo_density.box_size
    f = halo_density.cosmology.growth_rate(1.0 / (1.0 + halo_density.redshift))
    beta = f / bias
    weight = np.asarray(halo_density.value, np.float64).ravel()
    cells = np.flatnonzero(weight > 0)
    s = np.stack(np.unravel_index(cells, (n, n, n)), axis=-1) * (box / n)  # cell (i, j, k) is at (i, j, k) L / N
    weight = weight[cells]
    _, odd, k2 = wavevectors(n, box)
    kernel = _kernel(k2, smoothing, bias)
    positions = s
    for iteration in range(niter):
        painted = paint(positions, box, n, weight=weight) if iteration else np.asarray(halo_density.value,
                                                                                         np.float64)
        delta_k = np.fft.rfftn(painted / painted.mean() - 1.0)
        psi_los = np.fft.irfftn(1j * odd[axis] * kernel * delta_k, s=(n, n, n), axes=(0, 1, 2))
        shift = readout(halo_density.with_value(psi_los, "psi_los"), np.mod(positions, box))
        if iteration == 0:
            shift = shift / (1.0 + beta)
        positions = s.copy()
        positions[:, axis] = np.mod(s[:, axis] - f * shift, box)
    return positions, cells


def displacement(halo_density, bias, smoothing, los, niter=3):
    """The reconstructed real-space displacement and density of a redshift-space halo field.

    Args:
        as `moved_tracers`.

    Returns:
        (psi, delta): `(N, N, N, 3)` displacement on the mesh (Mpc/h) and `(N, N, N)` the
        smoothed density contrast of the tracers moved to real space, divided by b.

    Raises:
        VelnetInputError: a vector field, a bias or radius that is not positive, niter < 1.
    """
    positions, cells = moved_tracers(halo_density, bias, smoothing, los, niter)
    n, box = halo_density.nmesh, halo_density.box_size
    painted = paint(positions, box, n, weight=np.asarray(halo_density.value, np.float64).ravel()[cells])
    delta_k = np.fft.rfftn(painted / painted.mean() - 1.0)
    _, odd, k2 = wavevectors(n, box)
    kernel = _kernel(k2, smoothing, bias)
    psi = np.stack([np.fft.irfftn(1j * k * kernel * delta_k, s=(n, n, n), axes=(0, 1, 2)) for k in odd], axis=-1)
    smooth = np.exp(-0.5 * k2 * smoothing ** 2) / bias
    delta = np.fft.irfftn(smooth * delta_k, s=(n, n, n), axes=(0, 1, 2))
    return psi, delta


def _kernel(k2, smoothing, bias):
    """exp(-k^2 R^2 / 2) / (k^2 b): psi(k) = i k kernel delta_s(k); zero at k = 0."""
    kernel = np.exp(-0.5 * k2 * smoothing ** 2) / np.where(k2 > 0, k2, 1.0) / bias
    kernel[0, 0, 0] = 0.0
    return kernel


def halo_channel_names(box):
    """The redshift-space halo channels `halos_s_0`.. of a box (dict name -> field), in order.

    Raises:
        VelnetInputError: the box holds none.
    """
    names = sorted((n for n in box if n.startswith("halos_s_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    if not names:
        raise VelnetInputError(None, f"a halo fields file holds the channels halos_s_0..; this one holds {sorted(box)}")
    return names


def total_halo_density(box, names=None):
    """The summed redshift-space halo channels `names` (default: all) of a halo fields file's box, as a
    `Field` (mean 1)."""
    names = names or halo_channel_names(box)
    ref = box[names[0]]
    total = np.sum([np.asarray(box[n].value, np.float64) for n in names], axis=0)
    return ref.with_value(total / total.mean(), "halos_s")


@dataclass
class Reconstruction:
    """Iterative redshift-space reconstruction with a fitted smoothing radius and bias.

    Attributes:
        bias: real-space linear bias b of the halos.
        smoothing: Gaussian radius R, Mpc/h.
        los: line-of-sight axis.
        niter: iterations.
        attrs: what it was fitted on and the errors of the grid.
    """

    METHOD = "reconstruction"

    bias: float
    smoothing: float
    los: int
    niter: int = 3
    attrs: dict = field(default_factory=dict)

    def predict(self, box):
        """The density, velocity and momentum of one box's halo channels.

        Returns:
            dict "density" (1 + delta / b), "velocity" (f a H psi, km/s), "momentum"
            ((1 + delta / b) v, km/s) -> float32 `Field`.
        """
        halos = total_halo_density(box)
        psi, delta = displacement(halos, self.bias, self.smoothing, self.los, self.niter)
        velocity = psi * growth_velocity_factor(halos)
        attrs = {"method": f"iterative FFT reconstruction (Burden et al. 2015), R = {self.smoothing:g} Mpc/h, "
                           f"b = {self.bias:.3f}, {self.niter} iterations"}
        out = {"density": halos.with_value((1.0 + delta).astype(np.float32), "density"),
               "velocity": Field(velocity.astype(np.float32), "velocity", halos.box_size, halos.redshift,
                                 halos.cosmology),
               "momentum": Field(((1.0 + delta)[..., None] * velocity).astype(np.float32), "momentum",
                                 halos.box_size, halos.redshift, halos.cosmology)}
        for name, f in out.items():
            f.attrs = {**attrs, "units": "rho / rho_mean" if name == "density" else "km/s"}
        return out

    def moved_channels(self, box, names=None):
        """Halo channels of a box moved to real space by the displacement of their sum.

        Args:
            box: dict name -> `Field` of a halo fields file.
            names: the channels (default: every `halos_s_*` of the box, in order).

        Returns:
            list of `(N, N, N)` float64 arrays, one per channel, each the CIC painting of its
            channel's cells at their reconstructed positions, in the channel's units (its sum
            over the cells where the channels' sum is positive is kept).
        """
        names = names or halo_channel_names(box)
        halos = total_halo_density(box, names)
        positions, cells = moved_tracers(halos, self.bias, self.smoothing, self.los, self.niter)
        out = []
        for name in names:
            weight = np.asarray(box[name].value, np.float64).ravel()[cells]
            total = weight.sum()
            out.append(paint(positions, halos.box_size, halos.nmesh, weight=weight) * (total / halos.nmesh ** 3)
                       if total > 0 else np.zeros(halos.value.shape))
        return out

    @classmethod
    def fit(cls, boxes, betas, los, radii=RADII, bias_scales=BIAS_SCALES, niter=3):
        """The radius and bias of a grid with the smallest mean squared velocity error on training boxes.

        The bias grid is `bias_scales` times the Kaiser bias of the boxes' mean beta
        (eq. 4; `velnet.physics.rsd.kaiser_bias`).

        Args:
            boxes: list of dicts name -> `Field` of halo fields files, with the truth "velocity".
            betas: each box's beta of eq. 4 (its fields file's "beta" attribute).
            los: line of sight of the boxes' redshift space.
            radii: smoothing radii to try, Mpc/h.
            bias_scales: multiples of the Kaiser bias to try.
            niter: iterations.

        Returns:
            `Reconstruction`.
        """
        from velnet.physics.rsd import kaiser_bias

        if not boxes:
            raise VelnetInputError(None, "fit the reconstruction on at least one box")
        halos = [total_halo_density(b) for b in boxes]
        axis = los_axis(los)
        f = halos[0].cosmology.growth_rate(1.0 / (1.0 + halos[0].redshift))
        base = kaiser_bias(float(np.mean(betas)), f)
        errors = {}
        for radius in radii:
            for scale in bias_scales:
                err = 0.0
                for h, box in zip(halos, boxes):
                    psi, _ = displacement(h, base * scale, radius, axis, niter)
                    err += float(np.mean((psi * growth_velocity_factor(h) - box["velocity"].value) ** 2))
                errors[(radius, scale)] = err / len(boxes)
        radius, scale = min(errors, key=errors.get)
        attrs = {"fitted_on": [str(h.attrs.get("path", "")) for h in halos], "kaiser_bias": base,
                 "mean_beta": float(np.mean(betas)), "redshift": halos[0].redshift,
                 "cosmology": halos[0].cosmology.to_dict(),
                 "grid_rms_error_km_s": [{"smoothing": r, "bias_scale": s, "rms": e ** 0.5}
                                         for (r, s), e in sorted(errors.items())]}
        return cls(base * scale, radius, axis, niter, attrs)

    @classmethod
    def fit_files(cls, paths, **options):
        """`fit` on halo fields files (`velnet halo-fields`), their beta and line of sight read from the files.

        Raises:
            VelnetInputError: naming a file: unreadable, without channels, truth, beta or line of sight.
        """
        from velnet.fields.field import field_names, load_fields, read_meta

        boxes, betas, los = [], [], None
        for path in paths:
            meta = read_meta(path)
            if "beta" not in meta or "los" not in meta:
                raise VelnetInputError(path, "records no beta (eq. 4) or line of sight: not a halo fields file "
                                             "(velnet halo-fields writes one)")
            if los is not None and meta["los"] != los:
                raise VelnetInputError(path, f"line of sight {meta['los']!r} differs from the first file's {los!r}")
            los = meta["los"]
            betas.append(float(meta["beta"]))
            boxes.append(load_fields(path, [n for n in field_names(path) if n.startswith("halos_s_")] + ["velocity"]))
            for field_ in boxes[-1].values():
                field_.attrs["path"] = str(path)
        if not boxes:
            raise VelnetInputError(None, "fit the reconstruction on at least one halo fields file")
        return cls.fit(boxes, betas, los, **options)

    def fields_read(self, available=()):
        """The names of the fields of a box that `predict` reads: every halo channel there is."""
        return [n for n in available if n.startswith("halos_s_")]

    def to_dict(self):
        return {"format": FORMAT, "bias": self.bias, "smoothing": self.smoothing, "los": "xyz"[self.los],
                "niter": self.niter, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d, path=None):
        """The reconstruction of `to_dict`'s output; VelnetInputError naming `path` if malformed."""
        try:
            if d.get("format") != FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, not {FORMAT!r}")
            out = cls(float(d["bias"]), float(d["smoothing"]), los_axis(d["los"]), int(d["niter"]),
                      dict(d.get("attrs", {})))
            if not (out.bias > 0 and out.smoothing > 0 and out.niter >= 1):
                raise ValueError("bias and smoothing must be positive, niter at least 1")
            return out
        except (KeyError, TypeError, ValueError, AttributeError, VelnetInputError) as err:
            problem = err.problem if isinstance(err, VelnetInputError) else str(err)
            raise VelnetInputError(path, f"not a velnet reconstruction file ({problem})") from None

    def save(self, path):
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        return cls.from_dict(read_json_object(path, "reconstruction"), path)

"""The classical reference for halos in redshift space: the best linear filter of the halo channels per (k, mu).

The 2024 halo paper's eq. 2-3 divide the redshift-space halo contrast by one bias. A better
linear estimate of each real-space target is the minimum-variance one: a multi-tracer Wiener
filter of the four mass channels whose weights depend on k and on mu = k_los / k, fitted by
least squares on training boxes, so that it learns the channels' biases, their shot noise and
the Kaiser distortion (and its non-linear damping) from the data. Per mode,

    t(k) = sum_j sum_p w_{b(k), j, p} mu^p X_j(k),

with X_j the features, p in `mu_powers` (a polynomial in mu^2 inside each k bin) and b(k) the
k bin. The features are each halo channel minus its mean, the log of the total halo density
smoothed at a few radii (the non-linear transform velnet's matter estimator also uses) and,
with a `Reconstruction`, the same of the channels moved to real space by iterative
reconstruction of their displacement (`Reconstruction.moved_channels`): the filter is then the
best linear combination of the halo channels and their redshift-space reconstruction, which
undoes the distortion tracer by tracer, beyond what a linear filter of the redshift-space
field can. Targets:

- "density": the real-space matter contrast delta = rho/rho_mean - 1;
- "velocity": its divergence theta(k) = -i k . v(k) (km/s per Mpc/h), the velocity being
  v = i k theta / k^2 (curl-free: the filter of a scalar cannot give a curl; the divergence,
  not v itself, is fitted because it is the matter contrast's partner with no 1/k inside a bin);
- the momentum is not fitted: (1 + delta) v of the two fits.

The weights are real and minimise sum over the training modes of |t - estimate|^2 (every
independent mode of the real FFT once: the kz = 0 and Nyquist planes' conjugate pairs are
counted once, the rest twice). k bins have the fundamental's width; the lowest are merged
until each holds `min_modes` modes per weight, so the fit never has fewer equations than
weights. Weights are absolute in k (h/Mpc), so a filter fitted on one box size applies to
another with the same cell size, weighting and line of sight.

`HaloFilter.fit` fits it, `save` / `load` keep it as JSON, `predict` gives the density,
velocity and momentum `Field`s of a halo fields file's channels.
"""
from dataclasses import dataclass, field

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import Field, los_axis
from velnet.files import read_json_object, write_json
from velnet.physics.linear import wavevectors
from velnet.physics.reconstruction import Reconstruction, halo_channel_names

FORMAT = "velnet-halo-filter"
TARGETS = ("density", "velocity")
LOG_FLOOR = 0.1
"""Added to the smoothed total halo density (rho_h / rho_h,mean) before its log."""
LOG_RADII = (2.0, 4.0)
"""Gaussian radii (Mpc/h) of the log features of the smoothed total halo density, by default: on the
halo2024 experiment's validation boxes 25-26, (2, 4) beat (4,) in every C_r and 1 - cos phi of both
weightings (theta_v +0.007 number, +0.017 mass; `experiments.halo_filter_radius --log-radii`)."""
MOVED_SMOOTHING = 4.0
"""Gaussian radius (Mpc/h) of the reconstruction that moves the channels for `fit_files`: where the
velocity's C_r peaks (with 5) among 2.5-8 Mpc/h on the halo2024 experiment's validation boxes
(`experiments.halo_filter_radius`, docs/results-halo2024.md)."""


@dataclass
class HaloFilter:
    """A fitted per-(k, mu) linear filter of the redshift-space halo channels.

    Attributes:
        kedges: `(n + 1,)` k bin edges, h/Mpc; beyond the last edge the estimate is zero.
        weights: dict target -> `(n, features * len(mu_powers))` weights, feature-major.
        channels: the halo channel names (`halos_s_0`..).
        log_radii: Gaussian radii (Mpc/h) of the log features of the total halo density.
        mu_powers: powers of mu of each feature's weights.
        reconstruction: the `Reconstruction` whose moved channels are features too, or None.
        los: the line-of-sight axis (0, 1, 2).
        cell_size: Mpc/h, of the fields it was fitted on.
        modes: `(n,)` training modes per bin.
        attrs: what it was fitted on (weighting, redshift, cosmology, boxes, scores).
    """

    METHOD = "filter"

    kedges: np.ndarray
    weights: dict
    channels: tuple
    log_radii: tuple
    mu_powers: tuple
    los: int
    cell_size: float
    modes: np.ndarray
    reconstruction: Reconstruction = None
    attrs: dict = field(default_factory=dict)

    # --- fitting ---------------------------------------------------------------------------

    @classmethod
    def fit(cls, boxes, los, log_radii=LOG_RADII, mu_powers=(0, 2, 4), min_modes=8, reconstruction=None):
        """Fit the filter on training boxes.

        Args:
            boxes: list of dicts name -> `Field` of halo fields files (`velnet halo-fields`):
                the channels `halos_s_0`.., and the truths "density" and "velocity".
            los: the line of sight of their redshift space (the files' "los" attribute).
            log_radii: radii (Mpc/h) of the log features (empty: the channels alone).
            mu_powers: even powers of mu per feature.
            min_modes: fewest training modes per weight in a k bin.
            reconstruction: a `Reconstruction` of the same line of sight whose moved channels are
                features too (None: the redshift-space channels alone).

        Returns:
            `HaloFilter`.

        Raises:
            VelnetInputError: no boxes, boxes without channels or truths, or of other cell sizes.
        """
        if not boxes:
            raise VelnetInputError(None, "fit the halo filter on at least one box")
        channels = halo_channel_names(boxes[0])
        first = boxes[0][channels[0]]
        axis = los_axis(los)
        if reconstruction is not None and reconstruction.los != axis:
            raise VelnetInputError(None, f"the reconstruction's line of sight {'xyz'[reconstruction.los]!r} is not "
                                         f"the boxes' {'xyz'[axis]!r}")
        cell = first.cell_size
        n_weights = _n_features(channels, log_radii, reconstruction) * len(mu_powers)
        fine = 2 * np.pi / min(b[channels[0]].box_size for b in boxes) * np.arange(0.5, 1e5)
        fine = fine[: np.searchsorted(fine, np.sqrt(3) * np.pi / cell) + 2]
        normal = np.zeros((len(fine) - 1, n_weights, n_weights))
        rhs = {t: np.zeros((len(fine) - 1, n_weights)) for t in TARGETS}
        counts = np.zeros(len(fine) - 1)
        for box in boxes:
            _check_box(box, channels, cell)
            grid = _ModeGrid(box[channels[0]], axis)
            features = _features(box, channels, log_radii, grid, mu_powers, reconstruction)
            bins = np.searchsorted(fine, grid.k, side="right") - 1
            valid = (bins >= 0) & (bins < len(fine) - 1) & (grid.k > 0)
            b, w = bins[valid], grid.mode_weight[valid]
            feats = [f[valid] for f in features]
            counts += np.bincount(b, w, len(fine) - 1)
            for i in range(n_weights):
                for j in range(i, n_weights):
                    s = np.bincount(b, w * np.real(np.conj(feats[i]) * feats[j]), len(fine) - 1)
                    normal[:, i, j] += s
                    if i != j:
                        normal[:, j, i] += s
            for name, target in _targets(box, grid).items():
                t = target[valid]
                for i in range(n_weights):
                    rhs[name][:, i] += np.bincount(b, w * np.real(np.conj(feats[i]) * t), len(fine) - 1)
        groups = _merge_bins(counts, min_modes * n_weights)
        kedges = np.array([fine[g[0]] for g in groups] + [fine[groups[-1][-1] + 1]])
        weights = {t: np.zeros((len(groups), n_weights)) for t in TARGETS}
        for g, members in enumerate(groups):
            a = normal[members].sum(axis=0)
            ridge = 1e-9 * np.trace(a) / n_weights + 1e-300
            for t in TARGETS:
                weights[t][g] = np.linalg.solve(a + ridge * np.eye(n_weights), rhs[t][members].sum(axis=0))
        modes = np.array([counts[m].sum() for m in groups])
        attrs = {"fitted_on": [str(b[channels[0]].attrs.get("path", "")) for b in boxes],
                 "redshift": first.redshift, "cosmology": first.cosmology.to_dict(),
                 "min_modes": min_modes}
        return cls(kedges, weights, tuple(channels), tuple(float(r) for r in log_radii),
                   tuple(int(p) for p in mu_powers), axis, float(cell), modes, reconstruction, attrs)

    @classmethod
    def fit_files(cls, paths, moved_smoothing=MOVED_SMOOTHING, **options):
        """`fit` on halo fields files (`velnet halo-fields`), their line of sight read from the files.

        Args:
            paths: the training halo fields files.
            moved_smoothing: Gaussian radius (Mpc/h) of the reconstruction whose moved channels
                are features, its bias the Kaiser bias of the files' mean beta (eq. 4) and its
                iterations 3; None or 0: the redshift-space channels alone.
            options: of `fit`.

        Raises:
            VelnetInputError: a negative radius or log radius; naming a file: unreadable, without channels or
                truths, of another line of sight than the first, or without a positive beta when
                one is needed.
        """
        from velnet.fields.field import field_names, load_fields, read_meta
        from velnet.physics.rsd import kaiser_bias

        if moved_smoothing is not None and not moved_smoothing >= 0:
            raise VelnetInputError(None, f"the reconstruction's radius must be >= 0 Mpc/h (0: none). "
                                         f"Received: {moved_smoothing}")
        if not all(r > 0 for r in options.get("log_radii", ())):
            raise VelnetInputError(None, f"the log features' radii must be > 0 Mpc/h. Received: {options['log_radii']}")
        moved_smoothing = moved_smoothing or None

        boxes, betas, los = [], [], None
        for path in paths:
            meta = read_meta(path)
            if los is not None and meta.get("los") != los:
                raise VelnetInputError(path, f"line of sight {meta.get('los')!r} differs from the first file's {los!r}")
            if moved_smoothing is not None and not float(meta.get("beta", 0.0)) > 0:
                raise VelnetInputError(path, "records no positive beta (eq. 4), which the reconstruction's bias "
                                             "needs: not a halo fields file (velnet halo-fields writes one)")
            los = meta.get("los")
            betas.append(float(meta.get("beta", 0.0)))
            names = [n for n in field_names(path) if n.startswith("halos_s_")] + ["density", "velocity"]
            box = load_fields(path, names)
            for field_ in box.values():
                field_.attrs["path"] = str(path)
            boxes.append(box)
        if los is None:
            raise VelnetInputError(paths[0] if paths else None, "records no line of sight: not a halo fields file "
                                                                  "(velnet halo-fields writes one)")
        if moved_smoothing is not None:
            ref = boxes[0][halo_channel_names(boxes[0])[0]]
            f = ref.cosmology.growth_rate(1.0 / (1.0 + ref.redshift))
            options["reconstruction"] = Reconstruction(kaiser_bias(float(np.mean(betas)), f), float(moved_smoothing),
                                                       los_axis(los))
        return cls.fit(boxes, los, **options)

    def fields_read(self, available=()):
        """The names of the fields of a box that `predict` reads."""
        return list(self.channels)

    # --- applying --------------------------------------------------------------------------

    def predict(self, box):
        """The real-space density, velocity and momentum of one box's halo channels.

        Args:
            box: dict name -> `Field` holding at least this filter's channels.

        Returns:
            dict "density" (rho/rho_mean), "velocity" (km/s), "momentum" ((1 + delta) v, km/s)
            -> `Field`, float32.

        Raises:
            VelnetInputError: missing channels, another cell size.
        """
        missing = [c for c in self.channels if c not in box]
        if missing:
            raise VelnetInputError(None, f"the halo filter reads the channels {list(self.channels)}; the box lacks "
                                         f"{missing}")
        _check_box(box, self.channels, self.cell_size, truths=False)
        ref = box[self.channels[0]]
        grid = _ModeGrid(ref, self.los)
        features = _features(box, self.channels, self.log_radii, grid, self.mu_powers, self.reconstruction)
        bins = np.searchsorted(self.kedges, grid.k, side="right") - 1
        inside = (bins >= 0) & (bins < len(self.kedges) - 1) & (grid.k > 0)
        bins = np.where(inside, bins, 0)
        out = {}
        for name in TARGETS:
            estimate = np.zeros(grid.shape, dtype=np.complex128)
            for i, feature in enumerate(features):
                estimate += np.where(inside, self.weights[name][bins, i], 0.0) * feature
            out[name] = estimate
        shape = ref.value.shape
        delta = np.fft.irfftn(out["density"], s=shape, axes=(0, 1, 2))
        velocity = np.stack([np.fft.irfftn(1j * k * grid.inverse_k2 * out["velocity"], s=shape, axes=(0, 1, 2))
                             for k in grid.k_odd], axis=-1)
        moved = " and their reconstruction" if self.reconstruction is not None else ""
        attrs = {"method": f"per-(k, mu) linear filter of the redshift-space halo channels{moved} "
                           "(velnet.physics.halo_filter)"}
        density = ref.with_value((1.0 + delta).astype(np.float32), "density")
        density.attrs = {**attrs, "units": "rho / rho_mean"}
        vel = Field(velocity.astype(np.float32), "velocity", ref.box_size, ref.redshift, ref.cosmology,
                    {**attrs, "units": "km/s"})
        mom = Field(((1.0 + delta)[..., None] * velocity).astype(np.float32), "momentum", ref.box_size,
                    ref.redshift, ref.cosmology, {**attrs, "units": "km/s"})
        return {"density": density, "velocity": vel, "momentum": mom}

    # --- files -----------------------------------------------------------------------------

    def to_dict(self):
        return {"format": FORMAT, "targets": list(TARGETS), "channels": list(self.channels),
                "log_radii": list(self.log_radii), "mu_powers": list(self.mu_powers), "los": "xyz"[self.los],
                "cell_size": self.cell_size, "kedges": self.kedges.tolist(),
                "weights": {t: w.tolist() for t, w in self.weights.items()}, "modes": self.modes.tolist(),
                **({"reconstruction": self.reconstruction.to_dict()} if self.reconstruction is not None else {}),
                "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d, path=None):
        """The filter of `to_dict`'s output; VelnetInputError naming `path` if malformed."""
        try:
            if d.get("format") != FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, not {FORMAT!r}")
            kedges = np.asarray(d["kedges"], float)
            reconstruction = Reconstruction.from_dict(d["reconstruction"], path) if "reconstruction" in d else None
            if reconstruction is not None and reconstruction.los != los_axis(d["los"]):
                raise ValueError("its reconstruction's line of sight differs from its own")
            n = _n_features(d["channels"], d["log_radii"], reconstruction) * len(d["mu_powers"])
            weights = {t: np.asarray(d["weights"][t], float) for t in TARGETS}
            for t, w in weights.items():
                if w.shape != (len(kedges) - 1, n) or not np.all(np.isfinite(w)):
                    raise ValueError(f"{t} weights of shape {w.shape}, not ({len(kedges) - 1}, {n}), or not finite")
            return cls(kedges, weights, tuple(d["channels"]), tuple(float(r) for r in d["log_radii"]),
                       tuple(int(p) for p in d["mu_powers"]), los_axis(d["los"]), float(d["cell_size"]),
                       np.asarray(d["modes"], float), reconstruction, dict(d.get("attrs", {})))
        except (KeyError, TypeError, ValueError, AttributeError, VelnetInputError) as err:
            problem = err.problem if isinstance(err, VelnetInputError) else str(err)
            raise VelnetInputError(path, f"not a velnet halo filter file ({problem})") from None

    def save(self, path):
        """Write the filter as JSON, atomically; returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        """Read a file written by `save`; VelnetInputError if missing or malformed."""
        return cls.from_dict(read_json_object(path, "halo filter"), path)


class _ModeGrid:
    """|k|, mu = k_los / k, the wave vectors for derivatives, 1 / k^2 and independent-mode weights of a field's
    real FFT (k in h/Mpc)."""

    def __init__(self, ref, los):
        full, odd, k2 = wavevectors(ref.nmesh, ref.box_size)
        self.k = np.sqrt(k2)
        safe = np.where(self.k > 0, self.k, 1.0)
        self.mu = np.broadcast_to(np.abs(full[los]) / safe, self.k.shape)
        self.k_odd = odd
        self.inverse_k2 = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
        self.shape = self.k.shape
        nz = ref.nmesh // 2 + 1
        plane = np.full(nz, 2.0)
        plane[0] = 1.0
        if ref.nmesh % 2 == 0:
            plane[-1] = 1.0
        self.mode_weight = np.broadcast_to(plane[None, None, :], self.shape)


def _n_features(channels, log_radii, reconstruction):
    """Features per mu power: the channels and log features, twice with a reconstruction."""
    return (len(channels) + len(log_radii)) * (2 if reconstruction is not None else 1)


def _features(box, channels, log_radii, grid, mu_powers, reconstruction=None):
    """The filter's features of one box in Fourier space: mu^p X_j(k), feature-major."""
    values = [np.asarray(box[c].value, np.float64) for c in channels]
    scalars = _scalars(values, log_radii, grid)
    if reconstruction is not None:
        scalars += _scalars(reconstruction.moved_channels(box, channels), log_radii, grid)
    out = []
    for s in scalars:
        s_k = np.fft.rfftn(s)
        out.extend(s_k * grid.mu ** p for p in mu_powers)
    return out


def _scalars(values, log_radii, grid):
    """The channels minus their means, then the log of their sum (mean 1) smoothed at each radius, minus its mean."""
    scalars = [v - v.mean() for v in values]
    if log_radii:
        total_k = np.fft.rfftn(np.sum(values, axis=0))
        total_k /= total_k[0, 0, 0].real / np.prod(values[0].shape)
        for radius in log_radii:
            smooth = np.fft.irfftn(total_k * np.exp(-0.5 * (grid.k * radius) ** 2), s=values[0].shape, axes=(0, 1, 2))
            transformed = np.log(np.maximum(smooth, 0.0) + LOG_FLOOR)
            scalars.append(transformed - transformed.mean())
    return scalars


def _targets(box, grid):
    """The fitted targets in Fourier space: delta(k) and theta(k) = -i k . v(k)."""
    if "density" not in box or "velocity" not in box:
        raise VelnetInputError(None, "fitting the halo filter needs the true 'density' and 'velocity' of each box")
    delta = np.fft.rfftn(np.asarray(box["density"].value, np.float64) - 1.0)
    v = np.asarray(box["velocity"].value, np.float64)
    theta = sum(-1j * k * np.fft.rfftn(v[..., i]) for i, k in enumerate(grid.k_odd))
    return {"density": delta, "velocity": theta}


def _merge_bins(counts, least):
    """Groups of consecutive fine bins, merged from the low end until each holds `least` modes;
    a short last group joins the one before. Empty bins at the top are dropped."""
    last = int(np.nonzero(counts)[0][-1]) if np.any(counts) else 0
    groups, current, total = [], [], 0.0
    for i in range(last + 1):
        current.append(i)
        total += counts[i]
        if total >= least:
            groups.append(current)
            current, total = [], 0.0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    return groups


def _check_box(box, channels, cell, truths=True):
    ref = box[channels[0]]
    for name in [*channels, *(["density", "velocity"] if truths else [])]:
        if name not in box:
            continue
        f = box[name]
        if f.nmesh != ref.nmesh or not np.isclose(f.box_size, ref.box_size):
            raise VelnetInputError(f.attrs.get("path"), f"{name!r} is on another mesh or box than {channels[0]!r}")
    if not np.isclose(ref.cell_size, cell, rtol=1e-3):
        raise VelnetInputError(ref.attrs.get("path"), f"cell size {ref.cell_size:.4g} Mpc/h differs from the "
                                                      f"filter's {cell:.4g} Mpc/h")

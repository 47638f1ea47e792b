"""Linear theory velocities from a density field, and spectral vector calculus on the mesh.

In linear theory the continuity equation, with delta growing as D(a), gives
div v = -f a H delta, and the flow is curl-free, so in Fourier space

    v(k) = i f a H k / k^2 delta(k),

with f = dlnD/dlna, aH in km/s per Mpc/h, k in h/Mpc and v in km/s.

Derivatives are spectral on the periodic mesh. An odd derivative of a Nyquist-plane mode
has no real-valued answer, so the component k_i of a wave vector lying on the Nyquist
plane of axis i is set to zero in every gradient, divergence and curl; k^2 keeps all of
its components. The box mean (k = 0) carries no velocity.
"""
import numpy as np

from velnet.errors import VelnetInputError


def wavevectors(nmesh, box_size):
    """Wave-vector components (h/Mpc) of a real FFT, broadcastable to the rfftn grid.

    Returns:
        `(full, odd, k2)`: the components (kx, ky, kz); the same with the Nyquist entries
        of each set to zero (for odd derivatives); and k2 = |k|^2 over the full components.
    """
    kf = 2 * np.pi / box_size
    full = [np.fft.fftfreq(nmesh, 1.0 / nmesh)[:, None, None] * kf,
            np.fft.fftfreq(nmesh, 1.0 / nmesh)[None, :, None] * kf,
            np.fft.rfftfreq(nmesh, 1.0 / nmesh)[None, None, :] * kf]
    k2 = full[0] ** 2 + full[1] ** 2 + full[2] ** 2
    odd = []
    for k in full:
        k = k.copy()
        if nmesh % 2 == 0:
            k[np.isclose(np.abs(k), np.pi * nmesh / box_size)] = 0.0
        odd.append(k)
    return full, odd, k2


def _require(field, vector, what):
    if field.is_vector != vector:
        kind = "vector (N, N, N, 3)" if vector else "scalar (N, N, N)"
        raise VelnetInputError(field.attrs.get("source"),
                               f"{what} needs a {kind} field; {field.name!r} has shape {field.value.shape}")


def growth_velocity_factor(field):
    """f a H in km/s per Mpc/h at the field's redshift."""
    a = 1.0 / (1.0 + field.redshift)
    cosmo = field.cosmology
    return cosmo.growth_rate(a) * cosmo.hubble(a) * a


def linear_velocity(density, smoothing=0.0):
    """Linear-theory peculiar velocity of a density field.

    Args:
        density: scalar `Field` of rho/rho_mean (delta = density - 1), with redshift and
            cosmology set.
        smoothing: Gaussian radius R in Mpc/h; delta(k) is multiplied by exp(-k^2 R^2 / 2)
            first. 0 means no smoothing.

    Returns:
        vector `Field` "velocity" in km/s, `(N, N, N, 3)` float32.

    Raises:
        VelnetInputError: the field is not a scalar or the radius is negative.
    """
    _require(density, False, "linear_velocity")
    if smoothing < 0:
        raise VelnetInputError(None, f"smoothing radius must be >= 0 Mpc/h; received {smoothing}")
    delta_k = np.fft.rfftn(np.asarray(density.value, dtype=np.float64) - 1.0)
    return density.with_value(velocity_from_source(delta_k, density, smoothing), "velocity")


def velocity_from_source(source_k, density, smoothing=0.0):
    """The curl-free velocity whose divergence is -f a H s: v(k) = i f a H k s(k) / k^2.

    Args:
        source_k: `np.fft.rfftn` of the dimensionless source s on the density's mesh
            (s = delta gives linear theory).
        density: the `Field` whose mesh, box, redshift and cosmology set k and f a H.
        smoothing: Gaussian radius R in Mpc/h applied to s (0: none).

    Returns:
        float32 `(N, N, N, 3)` velocity in km/s.
    """
    _, (kx, ky, kz), k2 = wavevectors(density.nmesh, density.box_size)
    k2_safe = np.where(k2 > 0, k2, 1.0)
    scale = 1j * growth_velocity_factor(density) * source_k / k2_safe
    if smoothing > 0:
        scale *= np.exp(-0.5 * k2 * smoothing**2)
    scale[0, 0, 0] = 0.0
    shape = density.value.shape
    components = [np.fft.irfftn(scale * k, s=shape, axes=(0, 1, 2)) for k in (kx, ky, kz)]
    return np.stack(components, axis=-1).astype(np.float32)


def linear_momentum(density, velocity):
    """Momentum field (rho/rho_mean) v in km/s, `(N, N, N, 3)` float32."""
    _require(density, False, "linear_momentum")
    _require(velocity, True, "linear_momentum")
    value = (density.value[..., None] * velocity.value).astype(np.float32)
    return velocity.with_value(value, "momentum")


def linear_prediction(density, smoothing=0.0):
    """The linear-theory prediction in the form `evaluate` takes.

    Returns:
        dict {"velocity": Field, "momentum": Field}; momentum = density * velocity.
    """
    velocity = linear_velocity(density, smoothing)
    velocity.attrs.update(method="linear theory", smoothing_mpc_h=float(smoothing))
    return {"velocity": velocity, "momentum": linear_momentum(density, velocity)}


def divergence(vector):
    """Spectral divergence of a vector field.

    Args:
        vector: vector `Field`, e.g. velocity in km/s.

    Returns:
        scalar numpy array `(N, N, N)` float32, in the field's units per Mpc/h.
    """
    _require(vector, True, "divergence")
    _, (kx, ky, kz), _ = wavevectors(vector.nmesh, vector.box_size)
    total = sum(1j * k * np.fft.rfftn(vector.value[..., i].astype(np.float64))
                for i, k in enumerate((kx, ky, kz)))
    return np.fft.irfftn(total, s=vector.value.shape[:3], axes=(0, 1, 2)).astype(np.float32)


def curl(vector):
    """Spectral curl of a vector field.

    Args:
        vector: vector `Field`, e.g. momentum in km/s.

    Returns:
        vector numpy array `(N, N, N, 3)` float32, in the field's units per Mpc/h.
    """
    _require(vector, True, "curl")
    _, k, _ = wavevectors(vector.nmesh, vector.box_size)
    comp = [np.fft.rfftn(vector.value[..., i].astype(np.float64)) for i in range(3)]
    shape = vector.value.shape[:3]
    out = [np.fft.irfftn(1j * (k[(i + 1) % 3] * comp[(i + 2) % 3] - k[(i + 2) % 3] * comp[(i + 1) % 3]), s=shape,
                         axes=(0, 1, 2))
           for i in range(3)]
    return np.stack(out, axis=-1).astype(np.float32)


def fit_smoothing(density_fields, velocity_fields, radii):
    """Pick the Gaussian radius that makes linear theory closest to the true velocities.

    Fit it on training boxes only: the chosen R is a trained parameter of the baseline.

    Args:
        density_fields: list of scalar density `Field`s (rho/rho_mean).
        velocity_fields: list of the matching true velocity `Field`s, km/s.
        radii: candidate radii R in Mpc/h (>= 0).

    Returns:
        (R, errors): the radius with the lowest error, and the mean squared velocity
        error (km/s)^2, averaged over cells, components and boxes, for every radius.

    Raises:
        VelnetInputError: the lists differ in length, are empty, or a pair's meshes differ.
    """
    radii = np.asarray(radii, dtype=float)
    if len(density_fields) != len(velocity_fields) or not density_fields or radii.size == 0:
        raise VelnetInputError(None, "fit_smoothing needs equally many density and velocity fields "
                               f"and at least one radius; received {len(density_fields)}, "
                               f"{len(velocity_fields)} and {radii.size}")
    errors = np.zeros(radii.size)
    for density, velocity in zip(density_fields, velocity_fields):
        _require(density, False, "fit_smoothing")
        _require(velocity, True, "fit_smoothing")
        if velocity.value.shape[:3] != density.value.shape or velocity.box_size != density.box_size:
            raise VelnetInputError(velocity.attrs.get("source"),
                                   "velocity and density of one box differ in mesh or box size")
        delta_k = np.fft.rfftn(np.asarray(density.value, dtype=np.float64) - 1.0)
        for i, radius in enumerate(radii):
            v = velocity_from_source(delta_k, density, radius)
            errors[i] += np.mean((v - velocity.value) ** 2)
    errors /= len(density_fields)
    return float(radii[np.argmin(errors)]), errors

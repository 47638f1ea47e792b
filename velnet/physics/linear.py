"""Linear theory velocities from a density field, and spectral vector calculus on the mesh.

In linear theory the continuity equation, with delta growing as D(a), gives
div v = -f a H delta, and the flow is curl-free, so in Fourier space

    v(k) = i f a H k / k^2 delta(k),

with f = dlnD/dlna, aH in km/s per Mpc/h, k in h/Mpc and v in km/s.

Derivatives are spectral on the periodic mesh. An odd derivative of a Nyquist-plane mode
has no real-valued answer, so the component k_i of a wave vector lying on the Nyquist
plane of axis i is set to zero in every gradient, divergence and curl; k^2 keeps all of
its components. The box mean (k = 0) carries no velocity.

Everything works on a box cut into x-slabs over MPI ranks too (a `Field` with `comm`): the
transforms are then `velnet.fields.mesh.Mesh`'s distributed ones. FFTs are float32.
"""
import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.mesh import mesh_of, wavevectors  # noqa: F401  (wavevectors: imported from here too)


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
    delta_k = mesh_of(density).rfft(density.value - np.float32(1))
    return density.with_value(velocity_from_source(delta_k, density, smoothing), "velocity")


def velocity_from_source(source_k, density, smoothing=0.0):
    """The curl-free velocity whose divergence is -f a H s: v(k) = i f a H k s(k) / k^2.

    Args:
        source_k: `Mesh.rfft` of the dimensionless source s on the density's mesh (s = delta
            gives linear theory): this rank's modes under MPI. Overwritten.
        density: the `Field` whose mesh, box, redshift and cosmology set k and f a H.
        smoothing: Gaussian radius R in Mpc/h applied to s (0: none).

    Returns:
        float32 `(N, N, N, 3)` velocity in km/s (this rank's x-planes under MPI).
    """
    mesh = mesh_of(density)
    _, odd, k2 = mesh.wavevectors()
    scale = source_k
    scale *= np.float32(growth_velocity_factor(density)) / np.where(k2 > 0, k2, np.float32(1))
    if smoothing > 0:
        scale *= np.exp(np.float32(-0.5 * smoothing**2) * k2)
    if mesh.holds_zero_mode:
        scale[0, 0, 0] = 0.0
    del k2
    out = np.empty(mesh.shape + (3,), np.float32)
    component = np.empty_like(scale)
    for i, k in enumerate(odd):
        np.multiply(scale, 1j * k, out=component)
        mesh.irfft(component, out=out[..., i])
    return out


def linear_momentum(density, velocity):
    """Momentum field (rho/rho_mean) v in km/s, `(N, N, N, 3)` float32."""
    _require(density, False, "linear_momentum")
    _require(velocity, True, "linear_momentum")
    return velocity.with_value(momentum_of(density.value, velocity.value), "momentum")


def momentum_of(density, velocity):
    """The momentum (rho/rho_mean) v, km/s, of arrays of the same cells: density `(..., )`,
    velocity `(..., 3)` -> float32 `(..., 3)` (cell by cell, so any x-planes of a box do)."""
    return (density[..., None] * velocity).astype(np.float32)


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
    mesh = mesh_of(vector)
    _, odd, _ = mesh.wavevectors()
    total = np.zeros(mesh.kshape, np.complex64)
    for i, k in enumerate(odd):
        modes = mesh.rfft(vector.value[..., i])
        modes *= 1j * k
        total += modes
        del modes
    return mesh.irfft(total)


def curl(vector):
    """Spectral curl of a vector field.

    Args:
        vector: vector `Field`, e.g. momentum in km/s.

    Returns:
        vector numpy array `(N, N, N, 3)` float32, in the field's units per Mpc/h.
    """
    _require(vector, True, "curl")
    mesh = mesh_of(vector)
    _, k, _ = mesh.wavevectors()
    out = np.zeros(mesh.shape + (3,), np.float32)
    modes = np.empty(mesh.kshape, np.complex64)
    for j in range(3):  # component j enters (curl)_i = i (k_{i+1} v_{i+2} - k_{i+2} v_{i+1}) for i = j+1, j+2
        v_j = mesh.rfft(vector.value[..., j])
        for i, sign in (((j + 1) % 3, 1), ((j + 2) % 3, -1)):
            np.multiply(v_j, 1j * sign * k[3 - i - j], out=modes)
            out[..., i] += mesh.irfft(modes)
        del v_j
    return out


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
        mesh = mesh_of(density)
        delta_k = mesh.rfft(density.value - np.float32(1))
        for i, radius in enumerate(radii):
            v = velocity_from_source(delta_k.copy(), density, radius)
            errors[i] += mesh.sum(np.sum((v - velocity.value) ** 2, dtype=np.float64)) / (3 * density.nmesh**3)
    errors /= len(density_fields)
    return float(radii[np.argmin(errors)]), errors

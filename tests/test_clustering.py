"""velnet.statistics.clustering: xi(r_perp, r_par) of points by pair counts and of fields on a mesh."""
import numpy as np
import pytest
from boxes import gaussian, halo_field

from velnet.errors import VelnetInputError

pytest.importorskip("nbodykit")

from velnet.statistics.clustering import anisotropy_residual, field_xi, points_xi, xi_centres  # noqa: E402

BOX, N = 64.0, 32


def test_xi_of_uniform_points_is_zero_and_of_pairs_is_positive_at_their_separation():
    rng = np.random.default_rng(5)
    uniform = rng.uniform(0, BOX, (3000, 3))
    r_perp, r_par, xi = points_xi(uniform, BOX, "z", rmax=16, dr=2)
    assert xi.shape == (8, 8) and r_perp[0] == 1.0 and r_par[-1] == 15.0
    assert abs(xi.mean()) < 0.05
    # Pairs 0.5 Mpc/h apart across and 5 along the line of sight: excess at r_perp < 2, 4 <= r_par < 6.
    base = rng.uniform(0, BOX, (1500, 3))
    pairs = np.concatenate([base, np.mod(base + [0.5, 0, 5.0], BOX)])
    xi = points_xi(pairs, BOX, "z", rmax=16, dr=2)[2]
    assert xi[0, 2] > 10 * max(abs(xi[0, 0]), abs(xi[3, 2]), 0.1)


@pytest.mark.parametrize("los", [0, "z"])
def test_field_xi_of_a_plane_wave_is_its_cosine_along_the_wave(los):
    # delta = A cos(k x_los), k = 2 pi / 16: xi(r) = A^2 / 2 cos(k r_par), whatever r_perp.
    n, box, amplitude = 32, 64.0, 0.3
    axis = 0 if los == 0 else 2
    x = np.arange(n) * box / n
    wave = amplitude * np.cos(2 * np.pi * x / 16.0)
    value = 1 + np.broadcast_to(wave.reshape([-1 if a == axis else 1 for a in range(3)]), (n,) * 3)
    r_perp, r_par, xi = field_xi(halo_field(value, box=box), los, rmax=16, dr=2)
    assert xi.shape == (8, 8) and np.array_equal(r_par, xi_centres(16, 2))
    # cells of 2 Mpc/h, bins of 2 Mpc/h: each r_par bin holds the one separation at its lower edge
    expected = amplitude ** 2 / 2 * np.cos(2 * np.pi * (r_par - 1) / 16)
    np.testing.assert_allclose(xi, np.broadcast_to(expected, xi.shape), atol=1e-6)


def test_field_xi_agrees_with_pair_counts_of_points_drawn_from_the_field():
    value, _, _ = gaussian(N, 3, slope=-2.0)
    density = np.exp(0.8 * value - 0.32)
    rng = np.random.default_rng(8)
    cells = rng.choice(N ** 3, size=60000, p=density.ravel() / density.sum())
    position = (np.column_stack(np.unravel_index(cells, (N,) * 3)) + rng.uniform(0, 1, (len(cells), 3))) * BOX / N
    from_points = points_xi(position, BOX, "z", rmax=16, dr=4)[2]
    from_mesh = field_xi(halo_field(density), "z", rmax=16, dr=4)[2]
    assert np.abs(from_points - from_mesh)[1:, 1:].max() < 0.1 * from_mesh.max()
    with pytest.raises(VelnetInputError, match="scalar"):
        field_xi(halo_field(np.zeros((8, 8, 8, 3)), "velocity"), "z")


def test_anisotropy_residual_is_one_for_redshift_space_and_zero_for_real_space():
    centres = xi_centres(16, 2)
    real = np.outer(1 / (1 + centres), 1 / (1 + centres))
    redshift = 1.5 * real
    assert anisotropy_residual(redshift, real, redshift, centres, 5.0) == pytest.approx(1.0)
    assert anisotropy_residual(real, real, redshift, centres, 5.0) == 0.0
    assert anisotropy_residual(1.25 * real, real, redshift, centres, 5.0) == pytest.approx(0.25)

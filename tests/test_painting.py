"""velnet.fields.painting: the one CIC painter and its read-out."""
import numpy as np
import pytest
from boxes import halo_field

from velnet.errors import VelnetInputError

pytest.importorskip("nbodykit")

from velnet.fields.painting import paint, readout  # noqa: E402


def test_paint_is_the_mean_normalised_cic_of_weights_times_values():
    box, n = 8.0, 4
    position = np.array([[2.0, 4.0, 6.0], [6.0, 0.0, 2.0]])  # on mesh nodes (1, 2, 3) and (3, 0, 1)
    mesh = paint(position, box, n)
    assert mesh.sum() == pytest.approx(n ** 3) and mesh[1, 2, 3] == mesh[3, 0, 1] == pytest.approx(n ** 3 / 2)
    weighted = paint(position, box, n, weight=[1.0, 3.0], value=[1.0, 0.0])  # (1 x 1) / (4 / 64)
    assert weighted[1, 2, 3] == pytest.approx(16.0) and weighted[3, 0, 1] == 0.0
    half = paint([[1.0, 0.0, 0.0]], box, n)  # halfway between two nodes along x
    np.testing.assert_allclose(half[:2, 0, 0], [32.0, 32.0])


def test_cic_readout_is_exact_for_a_trilinear_field_and_wraps():
    n, box = 8, 16.0
    x = np.arange(n) * box / n  # node positions: nbodykit's painting convention
    value = 1.0 + 2.0 * x[:, None, None] - 0.5 * x[None, :, None] + 0.25 * x[None, None, :]
    pos = np.random.default_rng(2).uniform(0, box * (n - 1) / n, (50, 3))  # never between the last and first node
    expected = 1.0 + 2.0 * pos[:, 0] - 0.5 * pos[:, 1] + 0.25 * pos[:, 2]
    np.testing.assert_allclose(readout(halo_field(value, box=box), pos), expected, rtol=1e-5)
    vector = np.stack([value, 2 * value, -value], axis=-1)
    out = readout(halo_field(vector, "velocity", box=box), pos)
    assert out.shape == (50, 3)
    np.testing.assert_allclose(out[:, 1], 2 * expected, rtol=1e-5)
    # Halfway between the last node and the first one (through the periodic face), and beyond the box.
    edge = readout(halo_field(value, box=box), [[box - 1.0, 0.0, 0.0], [box + 2.0, 0.0, 0.0]])
    np.testing.assert_allclose(edge, [0.5 * (value[-1, 0, 0] + value[0, 0, 0]), value[1, 0, 0]], rtol=1e-6)
    with pytest.raises(VelnetInputError, match="finite"):
        readout(halo_field(value, box=box), [[np.nan, 0, 0]])

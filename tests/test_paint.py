"""paint_fields and paint_snapshot against exact CIC cases."""
import numpy as np
import pytest

pytest.importorskip("nbodykit")

from data_prep.paint import paint_fields, paint_snapshot  # noqa: E402
from data_prep.readers import Particles  # noqa: E402
from velnet.fields.field import load_fields, read_meta  # noqa: E402
from velnet.physics.cosmology import WU2021  # noqa: E402

BOX = 32.0
NMESH = 8
CELL = BOX / NMESH


def make(position, velocity):
    position = np.asarray(position, dtype=np.float64).reshape(-1, 3)
    velocity = np.broadcast_to(np.asarray(velocity, dtype=np.float64), position.shape).copy()
    return Particles(position, velocity, np.arange(len(position)), BOX, 0.0, WU2021, "test", "bigfile")


def test_uniform_grid_density_is_one():
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(NMESH) * CELL] * 3, indexing="ij"), -1).reshape(-1, 3)
    shifted = (grid + rng.uniform(0, CELL, 3)) % BOX  # the same offset for every particle
    density = paint_fields(make(shifted, 0.0), NMESH)["density"]
    assert density.value.shape == (NMESH,) * 3 and density.value.dtype == np.float32
    np.testing.assert_allclose(density.value, 1.0, rtol=1e-6)


def test_single_particle_cic_weights():
    # mesh coordinates (1.25, 2.5, 3.0): weights (0.75, 0.25) x (0.5, 0.5) x (1, 0)
    v = np.array([100.0, -50.0, 7.0])
    fields = paint_fields(make([1.25 * CELL, 2.5 * CELL, 3.0 * CELL], v), NMESH)
    density = fields["density"].value
    expected = np.zeros((NMESH,) * 3)
    for i, wx in ((1, 0.75), (2, 0.25)):
        for j, wy in ((2, 0.5), (3, 0.5)):
            expected[i, j, 3] = wx * wy * NMESH**3  # one particle: mean particles per cell 1/N^3
    np.testing.assert_allclose(density, expected, rtol=1e-6)
    assert density.sum() == pytest.approx(NMESH**3, rel=1e-6)  # the whole mass
    np.testing.assert_allclose(fields["momentum"].value, expected[..., None] * v, rtol=1e-6)
    np.testing.assert_allclose(fields["velocity"].value, np.broadcast_to(v, (NMESH,) * 3 + (3,)),
                               rtol=1e-6)


def test_constant_velocity():
    rng = np.random.default_rng(2)
    v = np.array([310.0, -20.0, 55.5])
    fields = paint_fields(make(rng.uniform(0, BOX, (50, 3)), v), NMESH)
    assert (fields["density"].value == 0).any()  # some cells are empty
    np.testing.assert_allclose(fields["velocity"].value, np.broadcast_to(v, (NMESH,) * 3 + (3,)),
                               rtol=1e-5)
    np.testing.assert_allclose(fields["momentum"].value, fields["density"].value[..., None] * v,
                               rtol=1e-5, atol=1e-3)
    assert fields["density"].value.mean() == pytest.approx(1.0, rel=1e-6)


def test_empty_cells_get_background_velocity():
    v1, v2 = np.array([100.0, 0.0, 0.0]), np.array([0.0, 300.0, -60.0])
    p = make([[1.0 * CELL, 1.0 * CELL, 1.0 * CELL], [5.0 * CELL, 5.0 * CELL, 5.0 * CELL]], 0.0)
    p.velocity[0], p.velocity[1] = v1, v2
    fields = paint_fields(p, NMESH)
    velocity, density = fields["velocity"].value, fields["density"].value
    np.testing.assert_allclose(velocity[1, 1, 1], v1, rtol=1e-6)
    np.testing.assert_allclose(velocity[5, 5, 5], v2, rtol=1e-6)
    empty = density == 0
    assert empty.sum() == NMESH**3 - 2
    np.testing.assert_allclose(velocity[empty], np.broadcast_to((v1 + v2) / 2, (empty.sum(), 3)),
                               rtol=1e-6)


def test_paint_snapshot(tmp_path, tiny_simulation):
    config, snapshots = tiny_simulation
    out = paint_snapshot(snapshots[-1], 16, tmp_path / "fields.h5")
    meta = read_meta(out)
    assert meta["source"] == str(snapshots[-1]) and meta["nparticles"] == 32**3
    assert meta["box_size"] == 64.0 and abs(meta["redshift"]) < 1e-6
    fields = load_fields(out)
    assert set(fields) == {"density", "momentum", "velocity"}
    assert fields["density"].value.mean() == pytest.approx(1.0, rel=1e-5)
    assert fields["velocity"].value.shape == (16, 16, 16, 3)
    assert fields["velocity"].cosmology == config.cosmology

"""Tiling round trips, periodic windows, the spatial split and the Oh group on vector fields."""
import numpy as np
import pytest

from velnet.data.tiling import (
    GUARD,
    OH_ELEMENTS,
    check_grid,
    cover_origins,
    cover_owners,
    cover_starts,
    extract,
    oh_transform,
    periodic_pad,
    split_tiles,
    stitch,
    tile,
    tile_origins,
    untile,
)
from velnet.errors import VelnetInputError
from velnet.physics.cosmology import WU2021

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("nmesh,target,margin,channels", [
    (40, 20, 6, None), (60, 20, 6, 3), (80, 20, 6, None), (48, 16, 6, 2)])
def test_untile_inverts_tile_exactly(nmesh, target, margin, channels):
    shape = (nmesh,) * 3 + ((channels,) if channels else ())
    box = RNG.standard_normal(shape).astype(np.float32)
    inputs, origins = tile(box, target, margin)
    size = target + 2 * margin
    assert inputs.shape == ((nmesh // target) ** 3, size, size, size) + shape[3:]
    targets = extract(box, origins, target)
    np.testing.assert_array_equal(untile(targets, origins, nmesh), box)
    # the centre of each input window is its target tile
    centre = slice(margin, margin + target)
    np.testing.assert_array_equal(inputs[:, centre, centre, centre], targets)


def test_windows_wrap_periodically():
    n, target, margin = 40, 20, 6
    i, j, k = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    box = (10000 * i + 100 * j + k).astype(np.int64)
    inputs, origins = tile(box, target, margin)
    first = inputs[0]  # origin (0, 0, 0): starts at cell (n - margin) on each axis
    assert tuple(origins[0]) == (0, 0, 0)
    assert first[0, 0, 0] == 10000 * (n - margin) + 100 * (n - margin) + (n - margin)
    assert first[margin, margin, margin] == 0
    last = inputs[-1]  # origin (20, 20, 20): ends at cell margin - 1 after wrapping
    assert last[-1, -1, -1] == 10000 * (margin - 1) + 100 * (margin - 1) + (margin - 1)
    padded = periodic_pad(box, margin)
    size = target + 2 * margin
    for window, (ox, oy, oz) in zip(inputs, origins):
        np.testing.assert_array_equal(window, padded[ox:ox + size, oy:oy + size, oz:oz + size])
    np.testing.assert_array_equal(padded[margin:-margin, margin:-margin, margin:-margin], box)


def test_bad_grid_names_sizes_that_work():
    with pytest.raises(VelnetInputError, match=r"\[5, 10, 25, 50\]"):
        tile_origins(50, 20)
    with pytest.raises(VelnetInputError, match="target=20.*--subfield 240|--subfield 240.*target=20"):
        check_grid(256, 20)
    with pytest.raises(VelnetInputError, match="1 to 256 cells"):
        check_grid(256, 20, subfield=260)


def test_the_papers_subfield_gives_1728_cubes_whose_inputs_stay_in_the_box():
    origins = tile_origins(256, 20, subfield=240)
    assert len(origins) == 1728 == 12**3
    assert origins.min() == 8 and origins.max() == 8 + 220
    assert origins.min() - 6 >= 0 and origins.max() + 20 + 6 <= 256  # 32^3 inputs never wrap
    box = RNG.standard_normal((40, 40, 40)).astype(np.float32)
    targets = extract(box, tile_origins(40, 12, subfield=36), 12)
    np.testing.assert_array_equal(untile(targets, tile_origins(40, 12, subfield=36) - 2, 36), box[2:38, 2:38, 2:38])
    labels, counts = split_tiles(origins, 256, 20, 6, "region", subfield=240)
    assert sum(counts.values()) == 1728 and counts["guard"] == 2 * 144
    assert set(labels[origins[:, 0] == 8]) == {"train"} and set(labels[origins[:, 0] == 228]) == {GUARD}


@pytest.mark.parametrize("nmesh, size", [(25, 16), (27, 8), (30, 29), (7, 7), (40, 20), (250, 64), (250, 20)])
def test_cover_takes_each_cell_once_from_the_tile_where_it_is_most_central(nmesh, size):
    starts = cover_starts(nmesh, size)
    assert len(starts) == -(-nmesh // size) and starts[0] == 0
    owner, offset = cover_owners(nmesh, size)
    for x in range(nmesh):
        covering = [i for i, s in enumerate(starts) if (x - s) % nmesh < size]
        assert owner[x] in covering and offset[x] == (x - starts[owner[x]]) % nmesh
        distance = [abs((x - starts[i]) % nmesh + 0.5 - size / 2) for i in covering]
        assert abs(offset[x] + 0.5 - size / 2) == min(distance)
    if nmesh <= 40:
        box = RNG.standard_normal((nmesh,) * 3 + (2,)).astype(np.float32)
        origins = cover_origins(nmesh, size)
        np.testing.assert_array_equal(stitch(extract(box, origins, size), nmesh), box)
        # each cell from its owner: tile n filled with n, stitched, gives the owners' index
        tile_ids = np.broadcast_to(np.arange(len(origins))[:, None, None, None], (len(origins),) + (size,) * 3)
        index = stitch(tile_ids, nmesh)
        k = len(starts)
        np.testing.assert_array_equal(index, (owner[:, None, None] * k + owner[None, :, None]) * k + owner)


def test_cover_is_the_exact_tiling_where_the_tile_divides():
    np.testing.assert_array_equal(cover_origins(40, 20), tile_origins(40, 20))
    tiles = RNG.standard_normal((8, 20, 20, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(stitch(tiles, 40), untile(tiles, tile_origins(40, 20), 40))
    with pytest.raises(VelnetInputError, match="1 to 40 cells"):
        cover_starts(40, 41)
    with pytest.raises(VelnetInputError, match="its cover has 8"):
        stitch(tiles[:7], 40)


def test_untile_rejects_incomplete_cover():
    origins = tile_origins(40, 20)
    tiles = np.zeros((len(origins), 20, 20, 20), np.float32)
    with pytest.raises(VelnetInputError, match="cover"):
        untile(tiles[:-1], origins[:-1], 40)


def _input_x_cells(origins, nmesh, target, margin):
    return {int(c) for o in origins[:, 0] for c in (o - margin + np.arange(target + 2 * margin)) % nmesh}


def test_region_split_keeps_held_out_inputs_apart():
    nmesh, target, margin = 240, 20, 6
    origins = tile_origins(nmesh, target)
    labels, counts = split_tiles(origins, nmesh, target, margin)
    per_slab = 12 * 12
    # 12 slabs, 2 guards, 10 left dealt 6/3/1
    assert counts == {"train": 6 * per_slab, "val": 3 * per_slab, "test": per_slab, GUARD: 2 * per_slab}
    train = _input_x_cells(origins[labels == "train"], nmesh, target, margin)
    for held_out in ("val", "test"):
        cells = _input_x_cells(origins[labels == held_out], nmesh, target, margin)
        assert cells and not cells & train
    # without the guards the windows would overlap: the guard slabs are needed
    guards = _input_x_cells(origins[labels == GUARD], nmesh, target, margin)
    assert guards & train
    # regions are contiguous in x
    for name in ("train", "val", "test"):
        slabs = np.unique(origins[labels == name, 0] // target)
        assert np.all(np.diff(slabs) == 1)


def test_region_split_wider_margin_needs_more_guards():
    origins = tile_origins(80, 8)
    labels, counts = split_tiles(origins, 80, 8, 6, fractions=(0.5, 0.25, 0.25))
    assert counts[GUARD] == 2 * 2 * 100  # ceil(12 / 8) = 2 guard slabs at each train border
    train = _input_x_cells(origins[labels == "train"], 80, 8, 6)
    held_out = origins[(labels == "val") | (labels == "test")]
    assert not train & _input_x_cells(held_out, 80, 8, 6)


def test_whole_box_split_and_errors():
    origins = tile_origins(40, 20)
    labels, counts = split_tiles(origins, 40, 20, 6, split="test")
    assert set(labels) == {"test"} and counts["test"] == 8 and counts[GUARD] == 0
    with pytest.raises(VelnetInputError, match="slabs"):
        split_tiles(origins, 40, 20, 6)  # 2 slabs cannot hold 3 regions and guards
    with pytest.raises(VelnetInputError, match="fractions"):
        split_tiles(tile_origins(240, 20), 240, 20, 6, fractions=(0.5, 0.3, 0.1))
    with pytest.raises(VelnetInputError, match="split"):
        split_tiles(origins, 40, 20, 6, split="training")


def _transform_all(x, vector_slices):
    return [oh_transform(x, k, vector_slices) for k in range(48)]


def test_oh_has_48_distinct_elements_closed_under_composition():
    assert len(set(OH_ELEMENTS)) == 48 and OH_ELEMENTS[0] == ((0, 1, 2), (1, 1, 1))
    x = RNG.standard_normal((4, 4, 4, 4))
    images = _transform_all(x, [(1, 4)])
    index = {im.tobytes(): k for k, im in enumerate(images)}
    assert len(index) == 48
    np.testing.assert_array_equal(images[0], x)
    for a in range(48):
        for b in range(48):
            assert oh_transform(images[a], b, [(1, 4)]).tobytes() in index


def test_oh_scalar_and_vector_channels_transform_separately():
    x = RNG.standard_normal((2, 5, 5, 5, 4))  # a batch; channel 0 scalar, 1..3 a vector
    for k in range(48):
        both = oh_transform(x, k, [(1, 4)])
        np.testing.assert_array_equal(both[..., :1], oh_transform(x[..., :1], k))
        np.testing.assert_array_equal(both[..., 1:], oh_transform(x[..., 1:], k, [(0, 3)]))
        np.testing.assert_array_equal(both[1], oh_transform(x[1], k, [(1, 4)]))
    with pytest.raises(VelnetInputError, match="vector"):
        oh_transform(x, 1, [(2, 5)])


def _gradient(phi):
    """Periodic central difference, channels-last (x, y, z)."""
    return np.stack([(np.roll(phi, -1, a) - np.roll(phi, 1, a)) / 2 for a in range(3)], -1)


def test_gradient_commutes_with_oh():
    phi = RNG.standard_normal((6, 6, 6))
    grad = _gradient(phi)
    for k in range(48):
        rotated_phi = oh_transform(phi[..., None], k)[..., 0]
        np.testing.assert_allclose(_gradient(rotated_phi), oh_transform(grad, k, [(0, 3)]), rtol=0, atol=1e-14)
    # a transform that forgot to negate flipped components would fail
    flipped = oh_transform(phi[..., None], 1)[..., 0]
    assert not np.allclose(_gradient(flipped), oh_transform(grad, 1, []))


def _linear_velocity(delta, cell, a=1.0, cosmo=WU2021):
    """v_k = i f a H k / k^2 delta_k (km/s) on a periodic grid; odd size, so no Nyquist plane."""
    n = delta.shape[0]
    k1 = 2 * np.pi * np.fft.fftfreq(n, d=cell)
    k = np.stack(np.meshgrid(k1, k1, k1, indexing="ij"), -1)
    k2 = np.sum(k**2, -1)
    k2[0, 0, 0] = 1.0
    delta_k = np.fft.fftn(delta)
    factor = 1j * cosmo.growth_rate(a) * a * cosmo.hubble(a) * delta_k / k2
    return np.stack([np.fft.ifftn(factor * k[..., i]).real for i in range(3)], -1)


def test_linear_theory_pair_stays_consistent():
    delta = RNG.standard_normal((15, 15, 15))
    velocity = _linear_velocity(delta, cell=2.0)
    scale = np.abs(velocity).max()
    for k in range(48):
        rotated = oh_transform(delta[..., None], k)[..., 0]
        np.testing.assert_allclose(_linear_velocity(rotated, 2.0), oh_transform(velocity, k, [(0, 3)]),
                                   rtol=0, atol=1e-10 * scale)


def test_oh_in_tensorflow_matches_numpy():
    tf = pytest.importorskip("tensorflow")
    x = RNG.standard_normal((2, 6, 6, 6, 4)).astype(np.float32)

    @tf.function
    def apply(t, k):
        return oh_transform(t, k, [(1, 4)], xp=tf.experimental.numpy)

    for k in range(48):
        np.testing.assert_array_equal(apply(tf.constant(x), tf.constant(k, tf.int64)).numpy(),
                                      oh_transform(x, k, [(1, 4)]))

"""Tiles of a periodic box, their split into train/val/test, and the cube's symmetry group.

Wu et al. 2021 (section 2) feed the network `32^3` density cubes centred on `20^3` velocity
cubes: `target + 2 * margin` input cells around each `target^3` output. Here the targets
cover the `N^3` box exactly once and the input windows wrap around the periodic box edge,
so a whole box is predicted by tiling it, predicting every tile and untiling the outputs.

Arrays are channels-last: `(N, N, N)` or `(N, N, N, C)`; tiles are `(n, s, s, s[, C])`.
"""
import itertools
from functools import lru_cache

import numpy as np

from velnet.errors import VelnetInputError

SPLITS = ("train", "val", "test")
"""Split names, in the order their regions are laid along x."""

GUARD = "guard"
"""Label of tiles dropped so that held-out inputs never overlap training inputs."""


def check_grid(nmesh, target, subfield=None):
    """Raise VelnetInputError unless `target` divides the region tiled: the mesh of `nmesh`
    cells per side, or its centred `subfield^3` (see `subfield_offset`).

    Raises:
        VelnetInputError: naming the tile sizes and the subfield that would work.
    """
    size = nmesh if subfield is None else subfield
    if not 1 <= size <= nmesh:
        raise VelnetInputError(None, f"a subfield must hold 1 to {nmesh} cells per side of the "
                                     f"{nmesh}^3 mesh. Received: subfield={subfield}")
    if target < 1 or size % target:
        ok = [t for t in range(4, size + 1) if size % t == 0]
        region = f"{size}^3 subfield of the {nmesh}^3 mesh" if subfield else f"{nmesh}^3 mesh"
        hint = (f"; or tile a centred subfield (--subfield {nmesh - nmesh % target}: a multiple of "
                f"the tile, as the paper's 240 of 256)" if 1 <= target <= nmesh else "")
        raise VelnetInputError(
            None, f"target tile of {target} cells does not divide the {region}; tile sizes that would: "
                  f"{ok}{hint}. Received: target={target}, nmesh={nmesh}, subfield={subfield}")


def subfield_offset(nmesh, subfield=None):
    """First cell, on each axis, of the centred `subfield^3` of an `nmesh^3` mesh (0 without one).

    Wu et al. 2021 cut 1728 targets of 20^3 from a 240^3 subfield of each 256^3 box: centred,
    it leaves 8 cells on each side, so the 32^3 inputs (6 cells of margin) stay inside the box.
    """
    return 0 if subfield is None else (nmesh - subfield) // 2


def tile_origins(nmesh, target, subfield=None):
    """Corners of the `target^3` tiles that cover an `nmesh^3` box, or its centred
    `subfield^3`, exactly once.

    Args:
        nmesh: cells per side of the box.
        target: cells per side of a target tile; must divide `nmesh` (or `subfield`).
        subfield: cells per side of the centred region tiled; None: the whole box.

    Returns:
        int64 array `(n, 3)`, n = (nmesh / target)^3 (or (subfield / target)^3), in C order
        (x slowest).

    Raises:
        VelnetInputError: `target` does not divide the region.
    """
    check_grid(nmesh, target, subfield)
    size = nmesh if subfield is None else subfield
    starts = subfield_offset(nmesh, subfield) + np.arange(0, size, target, dtype=np.int64)
    return np.stack(np.meshgrid(starts, starts, starts, indexing="ij"), -1).reshape(-1, 3)


def extract(array, origins, size, offset=0):
    """Cut periodic cubic windows out of a box.

    Window i covers cells `origins[i] + offset + arange(size)` (modulo N) on each axis.

    Args:
        array: `(N, N, N)` or `(N, N, N, C)` box; or some x-planes of one, `(n, N, N[, C])`, the
            windows then within them (x counted from its first plane).
        origins: int array `(n, 3)` of tile corners, in cells.
        size: cells per side of a window.
        offset: shift of the window start from the corner, in cells (`-margin` for inputs).

    Returns:
        array `(n, size, size, size[, C])` of the dtype of `array`.
    """
    nmesh = array.shape[1]
    idx = (np.asarray(origins, dtype=np.int64)[:, :, None] + offset + np.arange(size)) % nmesh
    return array[idx[:, 0, :, None, None], idx[:, 1, None, :, None], idx[:, 2, None, None, :]]


def tile(array, target=20, margin=6):
    """Tile a whole box into input windows around targets that cover it exactly once.

    Args:
        array: `(N, N, N)` or `(N, N, N, C)` box; `target` must divide N.
        target: cells per side of a target tile.
        margin: extra cells on each side of the input window.

    Returns:
        `(inputs, origins)`: inputs `(n, s, s, s[, C])` with s = target + 2 * margin,
        centred on the targets whose corners are `origins` `(n, 3)`.
    """
    origins = tile_origins(array.shape[0], target)
    return extract(array, origins, target + 2 * margin, -margin), origins


def untile(tiles, origins, nmesh):
    """Stitch target tiles back into a box: the exact inverse of `extract(..., offset=0)`.

    Args:
        tiles: `(n, t, t, t[, C])` target tiles.
        origins: `(n, 3)` their corners, in cells.
        nmesh: cells per side of the box.

    Returns:
        array `(nmesh, nmesh, nmesh[, C])` of the dtype of `tiles`.

    Raises:
        VelnetInputError: the tiles do not cover every cell exactly once.
    """
    tiles = np.asarray(tiles)
    size = tiles.shape[1]
    out = np.zeros((nmesh,) * 3 + tiles.shape[4:], dtype=tiles.dtype)
    hits = np.zeros((nmesh,) * 3, dtype=np.int32)
    idx = (np.asarray(origins, dtype=np.int64)[:, :, None] + np.arange(size)) % nmesh
    for (ix, iy, iz), t in zip(idx, tiles):
        out[np.ix_(ix, iy, iz)] = t
        hits[np.ix_(ix, iy, iz)] += 1
    if not np.all(hits == 1):
        raise VelnetInputError(
            None, f"{len(tiles)} tiles of {size}^3 cover {np.count_nonzero(hits)} of {nmesh}^3 "
                  f"cells, {np.count_nonzero(hits > 1)} more than once; they must cover each once")
    return out


def cover_starts(nmesh, tile):
    """Starts of the fewest `tile`-cell intervals that cover a periodic axis of `nmesh` cells.

    k = ceil(nmesh / tile) intervals start at floor(i * nmesh / k), i = 0 .. k - 1: spread
    evenly, so neighbours overlap by k tile - nmesh cells in all. With `tile` dividing `nmesh`
    they are the exact tiling of `tile_origins`.

    Raises:
        VelnetInputError: `tile` is not between 1 and `nmesh`.
    """
    if not 1 <= tile <= nmesh:
        raise VelnetInputError(None, f"a target tile must hold 1 to {nmesh} cells. "
                                     f"Received: tile={tile}")
    k = -(-nmesh // tile)
    return np.arange(k, dtype=np.int64) * nmesh // k


def cover_origins(nmesh, tile):
    """Corners `(k^3, 3)` of overlapping periodic `tile^3` tiles covering an `nmesh^3` box (C order).

    Any `tile <= nmesh` works; see `cover_starts`. `stitch` puts their outputs together.
    """
    starts = cover_starts(nmesh, tile)
    return np.stack(np.meshgrid(starts, starts, starts, indexing="ij"), -1).reshape(-1, 3)


def cover_owners(nmesh, tile):
    """For each cell of an axis, the interval of `cover_starts` it is taken from: the one whose
    centre is nearest the cell's (the first on ties).

    Returns:
        `(owner, offset)`: int64 `(nmesh,)` arrays, the interval's index and the cell's place in it.
    """
    starts = cover_starts(nmesh, tile)
    offset = (np.arange(nmesh)[:, None] - starts[None, :]) % nmesh
    distance = np.where(offset < tile, np.abs(offset + 0.5 - tile / 2), np.inf)
    owner = np.argmin(distance, axis=1)
    return owner, offset[np.arange(nmesh), owner]


def owned_runs(nmesh, tile):
    """The cells each interval of `cover_starts(nmesh, tile)` gives to the box (`cover_owners`), as runs.

    Returns:
        list, one entry per interval, of `(first, stop, offset)` runs: cells first..stop-1 of the
        axis are cells offset.. of the interval.
    """
    owner, offset = cover_owners(nmesh, tile)
    runs = [[] for _ in range(len(cover_starts(nmesh, tile)))]
    for cell, (i, o) in enumerate(zip(owner, offset)):
        last = runs[i][-1] if runs[i] else None
        if last and last[1] == cell and last[2] + cell - last[0] == o:
            runs[i][-1] = (last[0], cell + 1, last[2])
        else:
            runs[i].append((cell, cell + 1, int(o)))
    return runs


def place(out, tile, runs):
    """Write the cells a tile gives to the box into `out`.

    Args:
        out: the box, or anything that takes `out[x0:x1, y0:y1, z0:z1] = block` (an h5py dataset).
        tile: `(t, t, t[, C])` one tile's output.
        runs: `(x, y, z)`, the `owned_runs` of its interval on each axis.
    """
    for (x0, x1, xo), (y0, y1, yo), (z0, z1, zo) in itertools.product(*runs):
        out[x0:x1, y0:y1, z0:z1] = tile[xo:xo + x1 - x0, yo:yo + y1 - y0, zo:zo + z1 - z0]


def stitch(tiles, nmesh):
    """A box from the target tiles of `cover_origins(nmesh, t)`, each cell from the tile where it
    is most central (`cover_owners` on each axis); `untile` where t divides nmesh.

    Args:
        tiles: `(k^3, t, t, t[, C])` in the order of `cover_origins(nmesh, t)`.
        nmesh: cells per side of the box.

    Returns:
        array `(nmesh, nmesh, nmesh[, C])` of the dtype of `tiles`.

    Raises:
        VelnetInputError: the number of tiles is not that of `cover_origins(nmesh, t)`.
    """
    tiles = np.asarray(tiles)
    size = tiles.shape[1]
    k = len(cover_starts(nmesh, size))
    if len(tiles) != k**3:
        raise VelnetInputError(None, f"{len(tiles)} tiles of {size}^3 for a {nmesh}^3 box; its cover "
                                     f"has {k**3}")
    runs = owned_runs(nmesh, size)
    out = np.empty((nmesh,) * 3 + tiles.shape[4:], dtype=tiles.dtype)
    for n, (i, j, m) in enumerate(np.ndindex(k, k, k)):
        place(out, tiles[n], (runs[i], runs[j], runs[m]))
    return out


def periodic_pad(array, margin):
    """Pad the three spatial axes of a box periodically by `margin` cells on each side.

    Args:
        array: `(N, N, N)` or `(N, N, N, C)`.
        margin: cells added on each side.

    Returns:
        array `(N + 2 margin, ...)`, cell i of the result being cell (i - margin) mod N.
    """
    return np.pad(array, [(margin, margin)] * 3 + [(0, 0)] * (array.ndim - 3), mode="wrap")


def split_tiles(origins, nmesh, target, margin, split="region", fractions=(0.6, 0.3, 0.1),
                subfield=None):
    """Assign the tiles of one box to train/val/test.

    Wu et al. 2021 split their 32^3 samples 60/30/10 without saying how. Neighbouring input
    windows overlap (by 2 * margin cells), so a random split would let a held-out tile see
    cells its training neighbours were fitted on. Our rule (`split="region"`) is spatial:
    the box is cut into x-slabs one target tile thick; the slabs are dealt to contiguous
    regions laid along x in the order train, val, test (periodically, so test borders train
    again at x = 0). `ceil(2 * margin / target)` guard slabs are dropped at each border
    between the training region and a held-out one, so that no input window of a
    validation or test tile overlaps the input window of a training tile. The `fractions`
    are shares of the slabs left after the guards (each non-zero share gets at least one
    slab). Validation and test regions may touch. `split="train"`, `"val"` or `"test"` puts
    the whole box in one split (for separate test boxes), with no guards. With a `subfield`
    the slabs are those of the subfield.

    Args:
        origins: `(n, 3)` tile corners from `tile_origins(nmesh, target, subfield)`.
        nmesh: cells per side of the box.
        target: cells per side of a target tile.
        margin: extra input cells on each side of a tile.
        split: "region", or one of "train", "val", "test".
        fractions: shares of train, val and test for "region"; non-negative, summing to 1.
        subfield: cells per side of the centred region tiled (None: the whole box).

    Returns:
        `(labels, counts)`: a str array `(n,)` of "train", "val", "test" or "guard", and a
        dict of the number of tiles with each label.

    Raises:
        VelnetInputError: unknown split, bad fractions, or a box too small for the region
            split at this tile size.
    """
    origins = np.asarray(origins)
    if split in SPLITS:
        labels = np.full(len(origins), split)
    elif split == "region":
        slab_labels = _slab_labels(nmesh if subfield is None else subfield, target, margin, fractions)
        labels = slab_labels[(origins[:, 0] - subfield_offset(nmesh, subfield)) // target]
    else:
        raise VelnetInputError(None, f"split must be 'region' or one of {SPLITS}. Received: split={split!r}")
    counts = {name: int(np.count_nonzero(labels == name)) for name in (*SPLITS, GUARD)}
    return labels, counts


def _slab_labels(nmesh, target, margin, fractions):
    """Label of each x-slab for the region split (see `split_tiles`)."""
    check_grid(nmesh, target)
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise VelnetInputError(
            None, f"fractions must be three non-negative shares of train, val, test summing to 1. "
                  f"Received: fractions={tuple(fractions.tolist())}")
    nslab = nmesh // target
    held_out = fractions[0] > 0 and fractions[1:].sum() > 0
    nguard = -(-2 * margin // target) if held_out else 0
    usable = nslab - 2 * nguard
    needed = int(np.count_nonzero(fractions))
    if usable < needed:
        raise VelnetInputError(
            None, f"a {nmesh}^3 box has {nslab} slabs of {target} cells; the region split needs "
                  f"{needed} plus {2 * nguard} guard slabs. Use a smaller tile, or whole boxes "
                  f"per split (split='train'/'val'/'test')")
    nslabs = _apportion(fractions, usable)
    guard = [GUARD] * nguard
    order = (["train"] * nslabs[0] + guard + ["val"] * nslabs[1] + ["test"] * nslabs[2]
             + (guard if nguard else []))
    return np.array(order)


def _apportion(fractions, total):
    """Split `total` items by `fractions` (largest remainder), at least one per non-zero share."""
    raw = fractions * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((fractions > 0) & (counts == 0)):
        counts[i] += 1
        counts[np.argmax(counts)] -= 1
    return counts


# --- The octahedral group Oh: the 48 symmetries of a cube on a grid -------------------------

OH_ELEMENTS = tuple(
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3))
"""The 48 elements of Oh as `(perm, signs)`: 6 axis permutations x 8 sign flips.

Element `(p, s)` maps a field `a` to `b` with `b[x] = a[x']`, where `x'[p[i]] = x[i]`
(axes permuted) and axis i is then reversed where `s[i] = -1`; vector component i of
`b` is `s[i]` times component `p[i]` of `a`. Element 0 is the identity.
"""


def oh_transform(x, element, vector_slices=(), xp=np):
    """Apply an element of the cube's symmetry group Oh to a channels-last tile.

    The spatial axes are the three before the channel axis, so leading batch axes are
    allowed. The same code runs in numpy and inside `tf.data` (`xp=tf.experimental.numpy`,
    `element` a scalar int tensor); apply the same `element` to input and target of a pair.

    Args:
        x: `(..., s, s, s, C)` cube.
        element: index into `OH_ELEMENTS` (0..47).
        vector_slices: `[(start, stop), ...]` channel ranges holding x, y, z components of a
            vector; these get permuted and negated with the axes. Other channels are scalars.
        xp: array namespace, `numpy` or `tf.experimental.numpy`.

    Returns:
        The transformed cube, same shape and dtype.
    """
    lead = len(x.shape) - 4
    axes, flips, chans, negs = (
        xp.take(xp.asarray(t), element, axis=0)
        for t in _oh_tables(lead, int(x.shape[-2]), int(x.shape[-1]), tuple(map(tuple, vector_slices))))
    x = xp.transpose(x, axes)
    for i in range(3):
        x = xp.take(x, flips[i], axis=lead + i)
    x = xp.take(x, chans, axis=-1)
    return xp.where(negs, -x, x)


@lru_cache(maxsize=64)
def _oh_tables(lead, size, channels, vector_slices):
    """Per-element lookup tables for `oh_transform`: axis order, index maps, sign flips."""
    axes = np.zeros((48, lead + 4), dtype=np.int32)
    flips = np.zeros((48, 3, size), dtype=np.int32)
    chans = np.tile(np.arange(channels, dtype=np.int32), (48, 1))
    negs = np.zeros((48, channels), dtype=bool)
    for k, (perm, signs) in enumerate(OH_ELEMENTS):
        axes[k] = [*range(lead), *(lead + p for p in perm), lead + 3]
        for i in range(3):
            flips[k, i] = np.arange(size)[::signs[i]]
        for start, stop in vector_slices:
            if stop - start != 3 or start < 0 or stop > channels:
                raise VelnetInputError(
                    None, f"vector channels must be 3 consecutive of {channels}. "
                          f"Received: vector_slices={list(vector_slices)}")
            chans[k, start:stop] = [start + p for p in perm]
            negs[k, start:stop] = np.array(signs) < 0
    return axes, flips, chans, negs

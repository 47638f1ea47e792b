"""Tiled networks run over a box: the inference tile, the tiles that give cells to the planes held
here, their input windows (gathered from the ranks that hold them under MPI), and the cells they
write (`predict_tiles`, for `velnet.prediction.predict.predict_box`).
"""
import numpy as np
from tqdm.auto import tqdm

from velnet.data.tiling import cover_starts, owned_runs, place
from velnet.data.windows import InputWindows
from velnet.errors import VelnetInputError
from velnet.fields.mesh import gather_planes


def inference_tile(nmesh, margin, multiple=4, largest=64):
    """The target tile for inference: the fewest tiles of at most `largest` cells, each as small
    as that number allows (they cover the box with overlaps, see `velnet.data.tiling.cover_starts`).

    The input window (tile + 2 margin) must be divisible by `multiple` (2**levels of the U-net).

    Raises:
        VelnetInputError: no tile of at most `nmesh` cells has such a window.
    """
    fits = [t for t in range(1, min(largest, nmesh) + 1) if (t + 2 * margin) % multiple == 0]
    if not fits:
        raise VelnetInputError(None, f"no target tile of at most {min(largest, nmesh)} cells has an "
                                     f"input window (tile + {2 * margin}) divisible by {multiple}. "
                                     f"Received: nmesh={nmesh}")
    count = -(-nmesh // fits[-1])
    return next(t for t in fits if t * count >= nmesh)


def _check_tile(tile, nmesh, margin, multiple):
    """Raise unless `tile` (--tile) is a usable inference tile for an `nmesh^3` box."""
    if not (1 <= tile <= nmesh and (tile + 2 * margin) % multiple == 0):
        raise VelnetInputError(None, f"--tile must be 1 to {nmesh} cells with tile + {2 * margin} "
                                     f"divisible by {multiple} (the U-net's downsampling). "
                                     f"Received: --tile {tile}")


def predict_tiles(model, meta, inputs, density, reference, tile, batch_size, sink):
    """Run a tiled network on the tiles that give cells to the planes held here and write those cells into
    `sink` (`out` of `predict_box`)."""
    nmesh, start = reference.nmesh, reference.start
    stop = start + reference.value.shape[0]
    margin, multiple = meta.tile["margin"], meta.stride
    if tile:
        _check_tile(tile, nmesh, margin, multiple)
    tile = tile or inference_tile(nmesh, margin, multiple)
    starts, runs = cover_starts(nmesh, tile), owned_runs(nmesh, tile)
    here = {i: [(max(a, start), min(b, stop), o + max(a, start) - a) for a, b, o in r if a < stop and b > start]
            for i, r in enumerate(runs)}
    here = {i: r for i, r in here.items() if r}  # the x-intervals that give cells to the planes held here
    size = tile + 2 * margin
    try:
        windows = _input_windows(inputs, density, meta.input_spec, reference, [starts[i] for i in here], size, margin)
    except VelnetInputError as err:
        raise VelnetInputError(err.path or reference.attrs.get("path"), err.problem) from None
    del inputs
    tiles = [(i, j, m) for i in here for j in range(len(starts)) for m in range(len(starts))]
    scalar = meta.target_shape[-1] == 1
    for first in tqdm(range(0, len(tiles), batch_size), desc=f"predict {meta.target_name}", unit="batch",
                      disable=reference.comm is not None and reference.comm.rank != 0):
        batch = tiles[first:first + batch_size]
        output = np.asarray(model.predict_on_batch(windows(starts[np.array(batch)], size, margin)))
        for (i, j, m), values in zip(batch, output[..., 0] if scalar else output):
            place(sink, values, (here[i], runs[j], runs[m]))


def _input_windows(inputs, density, spec, reference, x_starts, size, margin):
    """`InputWindows` of the tiles whose x-intervals start at `x_starts`: on the whole box on one
    process; under MPI on the x-planes their windows reach, gathered from the ranks that hold them."""
    if reference.comm is None:
        return InputWindows(inputs, density, spec)
    nmesh, factor = reference.nmesh, spec.context
    reach = [(s - margin, s - margin + size) for s in x_starts]
    for s in x_starts:  # the context window: `size` blocks of `factor` cells around the centre, on the blocks' grid
        centre = s - margin + size // 2
        low = centre - centre % factor - factor * (size // 2)
        reach.append((low, low + factor * size))
    first = min((lo for lo, _ in reach), default=reference.start)
    count = min(nmesh, max((hi for _, hi in reach), default=first) - first)
    first = 0 if count == nmesh else first % nmesh
    planes = gather_planes(inputs, reference.start, reference.comm, first, count, nmesh)
    density = None if density is None else gather_planes(density, reference.start, reference.comm, first, count,
                                                         nmesh)
    return InputWindows(planes, density, spec, first)

"""The network inputs of a box cut into the windows of tiles (`InputWindows`), the context window
among them, and the check that a context factor fits the mesh."""
import numpy as np

from velnet.data.tiling import extract
from velnet.errors import VelnetInputError


def check_context(nmesh, factor):
    """Raise VelnetInputError unless the context factor (0: none) divides the mesh size."""
    if factor and nmesh % factor:
        raise VelnetInputError(None, f"context factor {factor} does not divide the {nmesh}^3 mesh. "
                                     f"Received: context={factor}, nmesh={nmesh}")


class InputWindows:
    """The network inputs of one box, cut into the windows of given tiles.

    Args:
        inputs: `(N, N, N, C)` per-cell channels of the box, from `box_inputs`; or only the
            x-planes `first, first + 1, ...` (modulo N) of them, `(n, N, N, C)`, as many as
            the windows asked for reach (a rank's share of a box cut over MPI ranks).
        density: rho/rho_mean on the same planes (for the context channel; None without one).
        spec: the `InputSpec`.
        first: the box's x-plane of `inputs[0]`.

    Raises:
        VelnetInputError: a context factor that does not divide N.
    """

    def __init__(self, inputs, density, spec, first=0):
        self.inputs, self.factor, self.first = inputs, spec.context, int(first)
        self.density = None if density is None else np.asarray(density)
        if self.factor:
            check_context(self.density.shape[1], self.factor)
        self._coarse = {}

    def __call__(self, origins, size, margin):
        """float32 `(n, size, size, size, C[+1])`: the periodic windows of the tiles whose
        target corners are `origins` `(n, 3)`, `margin` cells wider on each side (`size` =
        target + 2 margin); then, with a context factor, their context windows (size even)."""
        windows = extract(self.inputs, np.asarray(origins, np.int64) - [self.first, 0, 0], size, -margin)
        if not self.factor:
            return windows
        centres = np.asarray(origins, np.int64) - margin + size // 2
        return np.concatenate([windows, self.context(centres, size)[..., None]], axis=-1)

    def context(self, centres, size):
        """Coarse windows of ln(1 + rho/rho_mean) centred on given cell corners.

        Window i holds ln(1 + mean rho/rho_mean) over f^3 blocks of cells (f the context
        factor), `size` blocks per side, centred on the corner `centres[i]` (periodic):
        block j covers cells `centres[i] + f (j - size // 2)` to f - 1 more on each axis.

        Args:
            centres: int `(n, 3)` window centres, as cell corners.
            size: blocks per side (even).

        Returns:
            float32 `(n, size, size, size)`.
        """
        centres = np.asarray(centres, np.int64)
        shifts = centres % self.factor
        out = np.empty((len(centres), size, size, size), np.float32)
        for shift in np.unique(shifts, axis=0):
            chosen = np.all(shifts == shift, axis=1)
            coarse, first = self._coarse_box(tuple(int(s) for s in shift))
            corners = (centres[chosen] - shift) // self.factor - size // 2 - [first, 0, 0]
            out[chosen] = extract(coarse, corners, size)
        return out

    def _coarse_box(self, shift):
        """ln(1 + block mean of rho/rho_mean), blocks starting at cell `shift`, made once, and the
        box's block index of its first x-block (those blocks the planes held hold whole)."""
        if shift not in self._coarse:
            f, (planes, nmesh) = self.factor, self.density.shape[:2]
            n = nmesh // f
            offset = (shift[0] - self.first) % f  # the first plane held that starts a block
            blocks = n if planes == nmesh else (planes - offset) // f  # (all of them: the box wraps)
            coarse = np.empty((blocks, n, n), np.float32)
            for b in range(blocks):  # a block of planes at a time: no temporary the size of the box
                block = self.density[(offset + f * b + np.arange(f)) % planes].astype(np.float64)
                block = np.roll(block, (-shift[1], -shift[2]), axis=(1, 2))
                coarse[b] = np.log1p(block.reshape(1, f, n, f, n, f).mean(axis=(1, 3, 5)))[0]
            self._coarse[shift] = coarse, (self.first + offset - shift[0]) // f
        return self._coarse[shift]

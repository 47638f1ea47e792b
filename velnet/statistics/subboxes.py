"""T(k) measured in cubic sub-boxes of a box, as Wu et al. 2021 measured it in (120 Mpc/h)^3 boxes: the
sub-boxes, their power spectra, and T(k) with its spread over them.

Each sub-box is Fourier transformed as if it were periodic (`SUBBOX_NOTE`). Under MPI (fields cut
into x-slabs over the ranks) the sub-boxes are gathered a layer to a rank.
"""
import itertools
from dataclasses import replace

import numpy as np

from velnet.fields.mesh import gather_planes
from velnet.statistics.spectra import check_pair, power
from velnet.statistics.statistic import Statistic

SUBBOX_NOTE = ("each sub-box is Fourier transformed as if it were periodic; it is not, so the "
               "jumps at its faces add some spurious power, mostly at high k, to truth and "
               "prediction alike")


def split_subboxes(field, size=120.0):
    """Cut a field into cubic sub-boxes of the whole number of cells nearest `size` Mpc/h.

    The box holds n = N // m sub-boxes of m cells per side; cells beyond n m are unused.

    Returns:
        list of `Field`s with box_size = m cells, attrs["origin"] the first cell (i, j, k);
        under MPI those of the x-layers of sub-boxes this rank gathers (collective).
    """
    return [sub for _, sub in _subboxes(field, size)]


def _subbox_cells(field, size):
    """Cells m per side of the sub-boxes nearest `size` Mpc/h."""
    return int(min(field.nmesh, max(1, round(size / field.cell_size))))


def _subboxes(field, size):
    """`(number, sub-box)` pairs of the sub-boxes held here, numbered (i, j, k) in C order: all of them
    on one process; under MPI those of x-layer i on rank i modulo the ranks (gathered; collective)."""
    m = _subbox_cells(field, size)
    n = field.nmesh // m
    rank, ranks = (0, 1) if field.comm is None else (field.comm.rank, field.comm.size)
    for i in range(rank, -(-n // ranks) * ranks, ranks):  # every rank takes part in as many gathers
        if field.comm is None:
            layer = field.value[i * m:(i + 1) * m]
        else:
            layer = gather_planes(field.value, field.start, field.comm, i * m, m if i < n else 0, field.nmesh)
        for j, k in itertools.product(range(n), range(n)) if i < n else ():
            value = np.ascontiguousarray(layer[:, j * m:(j + 1) * m, k * m:(k + 1) * m])
            yield (i * n + j) * n + k, replace(field, value=value, box_size=m * field.cell_size, start=0, comm=None,
                                               attrs=dict(field.attrs, origin=[i * m, j * m, k * m]))


def subbox_powers(truth, size=120.0, kedges=None):
    """The power spectrum of each sub-box held here (`split_subboxes`), by number (for `subbox_transfer`)."""
    return {number: power(sub, kedges=_subbox_kedges(truth, size, kedges)) for number, sub in _subboxes(truth, size)}


def _subbox_kedges(field, size, kedges):
    m = _subbox_cells(field, size)
    return (np.asarray(kedges, dtype=float) if kedges is not None
            else 2 * np.pi / (m * field.cell_size) * np.arange(0.5, m // 2 + 1))


def subbox_transfer(predictions, truth, size=120.0, kedges=None, truth_powers=None):
    """T(k) measured in sub-boxes, as the paper did in (120 Mpc/h)^3 boxes.

    Derived fields (divergence, curl) should be computed on the whole periodic box
    first and split afterwards. Each sub-box is then treated as periodic (see SUBBOX_NOTE).

    Args:
        predictions: dict method name -> predicted `Field`.
        truth: the true `Field` of the same box.
        size: sub-box side in Mpc/h (rounded to whole cells).
        kedges: bin edges in h/Mpc; default `default_kedges` of a sub-box.
        truth_powers: `subbox_powers(truth, size, kedges)` if already measured.

    Returns:
        dict method name -> `Statistic` with columns k_lo, k_hi, k, modes (per sub-box),
        T_mean, T_std (the spread: standard deviation over sub-boxes, NaN for a single
        one) and T_each `(n_k, n_sub)`; attrs n_sub, sub_box_size, sub_box_cells, note.
    """
    for pred in predictions.values():
        check_pair(truth, pred)
    m = _subbox_cells(truth, size)
    kedges = _subbox_kedges(truth, size, kedges)
    truth_powers = truth_powers if truth_powers is not None else subbox_powers(truth, size, kedges)
    first = truth_powers.get(0)  # (held by rank 0)
    if truth.comm is not None:
        first = truth.comm.bcast(first)
    out = {}
    for name, pred in predictions.items():
        t_held = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for number, sub in _subboxes(pred, size):
                t_held[number] = power(sub, kedges=kedges)["power"] / truth_powers[number]["power"]
        if truth.comm is not None:
            t_held = {number: t for part in truth.comm.allgather(t_held) for number, t in part.items()}
        t_each = np.stack([t_held[number] for number in sorted(t_held)], axis=1)
        spread = t_each.std(axis=1, ddof=1) if t_each.shape[1] > 1 else np.full(len(t_each), np.nan)
        columns = {"k_lo": kedges[:-1], "k_hi": kedges[1:], "k": first["k"], "modes": first["modes"],
                   "T_mean": t_each.mean(axis=1), "T_std": spread, "T_each": t_each}
        out[name] = Statistic(columns, dict(first.attrs, kind="sub-box transfer", fields=[pred.name, truth.name],
                                            n_sub=t_each.shape[1], sub_box_size=float(m * truth.cell_size),
                                            sub_box_cells=m, note=SUBBOX_NOTE))
    return out

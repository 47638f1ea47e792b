"""The report of the 2024 halo paper (section 3), for both halo weighting schemes side by side.

`evaluate_halo` measures reconstructions of the real-space dark-matter density, velocity
and momentum (from redshift-space halos) against the truth, over one or more test boxes:

- pixel statistics (Figs. 4-5): |v|, |m|, 1 - cos phi between predicted and true vectors,
  the divergences theta_v = div v and theta_m = div m, mean and standard deviation over
  the cells of all test boxes, with histograms;
- eq. 10: the correlation coefficient C_r = sum_i (f_i - <f>)(f'_i - <f'>) /
  ((N_pix - 1) sigma_f sigma_f') between prediction f and truth f' (for a vector field
  every component of every cell is a pixel) and the relative deviation R = O_f / O_f' - 1
  of an observable O: the standard deviation sigma for every field (the paper leaves O
  open; the mean of a divergence or a vector component is zero up to noise), the mean for
  the magnitudes and the density, and the power spectrum for R(k);
- joint distributions of prediction against truth (Figs. 6-7) and of density against
  speed and divergence (Figs. 8-9);
- power spectra (Figs. 10-12, nbodykit through `velnet.statistics.spectra`) of the density, velocity,
  momentum and both divergences, with linear theory of the redshift-space halos (eq. 2-3;
  for the density, the halo field 1 + delta_s / beta that eq. 2 uses), R(k) and r(k),
  mean and 2-sigma band across test boxes, the band's sigma the spread over the boxes
  rescaled by eq. 11 to the independent volume they hold (`velnet.statistics.spectra.box_error`);
- xi(r_perp, r_par) of the dark matter in real space, true and reconstructed, beside the
  redshift-space halos (Fig. 13, from the meshes: `velnet.statistics.clustering.field_xi`);
- redshift-space distortions (section 3.5): halos moved back along the line of sight by
  the reconstructed velocity, found from their redshift-space positions or read out at
  their true positions (`velnet.physics.rsd`); xi(r_perp, r_par) of the halos in redshift space,
  in real space and corrected (pair counts, `velnet.statistics.clustering.points_xi`), and the
  multipoles P_2, P_4 of the reconstructed real-space density against the truth and the
  redshift-space halos (Fig. 14), and of the corrected halos;
- the training and validation loss per epoch of each network (Fig. 3), when given.

The report folder (report.md, metrics.json, PNG figures) appears only when complete.
"""
import time

import numpy as np

from velnet.errors import VelnetInputError
from velnet.fields.field import los_axis
from velnet.physics.rsd import ROOT_STEP
from velnet.reports.common import report_folder, write_report
from velnet.reports.halo2024_figures import figures
from velnet.reports.halo2024_measures import (
    HALO_NUMBER_DENSITY,
    K_RANGES,
    POLE_RANGE,
    XI_RMIN,
    measure,
    training_summary,
)
from velnet.reports.halo2024_text import report_text
from velnet.statistics import spectra
from velnet.statistics.clustering import XI_DR, XI_RMAX


def _as_list(entries, what):
    if isinstance(entries, dict):
        return [entries]
    entries = list(entries)
    if not entries:
        raise VelnetInputError(None, f"{what} holds no test box")
    return entries


def checked_inputs(truth, predictions, inputs, catalogs):
    """Normalise the arguments to lists per box and check fields, meshes and box counts."""
    truth = _as_list(truth, "truth_fields")
    if not predictions:
        raise VelnetInputError(None, "evaluate_halo needs predictions of at least one weighting scheme")
    predictions = {scheme: _as_list(boxes, f"predictions[{scheme!r}]") for scheme, boxes in predictions.items()}
    inputs = {scheme: _as_list(boxes, f"inputs[{scheme!r}]") for scheme, boxes in (inputs or {}).items()}
    catalogs = list(catalogs) if catalogs is not None else None
    for scheme in inputs:
        if scheme not in predictions:
            raise VelnetInputError(None, f"inputs for scheme {scheme!r}, which has no predictions")
    counts = {len(boxes) for boxes in [truth, *predictions.values(), *inputs.values()]}
    if catalogs is not None:
        counts.add(len(catalogs))
    if len(counts) != 1:
        raise VelnetInputError(None, f"truth, predictions, inputs and catalogues must cover the same test boxes; "
                                     f"received {len(truth)} true boxes and box counts {sorted(counts)}")
    shapes = {"density": False, "velocity": True, "momentum": True}
    for b, box in enumerate(truth):
        reference = box.get("density")
        groups = [("truth", box, shapes)] + [(f"{s} prediction", p[b], shapes) for s, p in predictions.items()]
        groups += [(f"{s} inputs", i[b], {"linear_velocity_s": True, "linear_momentum_s": True})
                   for s, i in inputs.items()]
        for label, fields, needed in groups:
            for name, vector in needed.items():
                field = fields.get(name)
                if field is None:
                    raise VelnetInputError(None, f"box {b}: {label} has no {name!r} field (it holds {sorted(fields)})")
                source = field.attrs.get("path")
                if reference is None or field.is_vector != vector or field.nmesh != reference.nmesh \
                        or not np.isclose(field.box_size, reference.box_size):
                    raise VelnetInputError(source, f"box {b}: {label} {name!r} is {field.value.shape} in a "
                                                   f"{field.box_size} Mpc/h box, not a "
                                                   f"{'vector' if vector else 'scalar'} on the true density's mesh")
                if not np.all(np.isfinite(field.value)):
                    raise VelnetInputError(source, f"box {b}: {label} {name!r} holds NaN or infinite values")
        for scheme, boxes in inputs.items():
            if not any(name.startswith("halos_s_") for name in boxes[b]):
                raise VelnetInputError(None, f"box {b}: {scheme} inputs hold no halo channels 'halos_s_<j>'")
            beta = boxes[b]["linear_velocity_s"].attrs.get("beta")
            if not (isinstance(beta, (int, float)) and beta > 0):
                raise VelnetInputError(boxes[b]["linear_velocity_s"].attrs.get("path"),
                                       f"box {b}: {scheme} linear_velocity_s has no positive 'beta' attribute "
                                       f"(eq. 4). Received: {beta!r}")
    return truth, predictions, inputs, catalogs


def evaluate_halo(truth_fields, predictions_by_scheme, outdir, inputs_by_scheme=None, catalogs=None, los="z",
                  histories=None, independent_volume=None, baselines_by_scheme=None, overwrite=False):
    """Compare halo-paper reconstructions with the truth for each weighting scheme; write a report folder.

    Args:
        truth_fields: one dict, or a list with one per test box, of true `Field`s:
            "density" (rho/rho_mean), "velocity" and "momentum" (km/s), real space.
        predictions_by_scheme: dict scheme ("number", "mass") -> list (one per test box) of
            dicts of predicted "density", "velocity" and "momentum" `Field`s.
        outdir: report folder; written atomically (replaced only when complete).
        inputs_by_scheme: optional dict scheme -> list of the boxes' halo fields (as in a
            `write_halo_fields` file: "halos_s_0".., "linear_velocity_s" with attrs
            "beta", "linear_momentum_s"); adds linear theory and the halos' xi.
        catalogs: optional list of the boxes' halo catalogues (`HaloCatalog` or anything
            with position, velocity, mass, box_size, redshift, cosmology); adds the RSD
            correction and the halos' xi(r_perp, r_par).
        los: the line of sight of the redshift space, 0, 1, 2 or "x", "y", "z".
        histories: optional dict scheme -> dict network ("density", "velocity",
            "momentum") -> rows {"epoch", "loss", "val_loss"} of its training
            (`velnet.training.train.read_history`); adds Fig. 3.
        independent_volume: V_all of eq. 11, (Mpc/h)^3; default the test boxes' total
            volume (separate simulations).
        baselines_by_scheme: optional dict scheme -> dict method name (e.g. "filter",
            "reconstruction") -> list per box of the classical halo reference's predicted
            "density", "velocity" and "momentum" `Field`s; measured beside the U-net, and each
            method compared with the first of them ("Against the classical halo reference").
        overwrite: write into an `outdir` that is not a report folder (`report_folder`).

    Returns:
        the metrics dict written to metrics.json (numbers that do not exist are None).

    Raises:
        VelnetInputError: missing or non-finite fields, fields off the true density's mesh,
            different numbers of boxes, an unknown `los` or an independent volume larger than
            the boxes' (nothing is left behind).
    """
    start = time.time()
    los_name = "xyz"[los_axis(los)]
    truth, predictions, inputs, catalogs = checked_inputs(truth_fields, predictions_by_scheme, inputs_by_scheme,
                                                          catalogs)
    baselines = {s: {m: checked_inputs(truth, {f"{s} {m}": boxes}, None, None)[1][f"{s} {m}"]
                     for m, boxes in by_method.items()}
                 for s, by_method in (baselines_by_scheme or {}).items()}
    unknown = sorted(set(baselines) - set(predictions))
    if unknown:
        raise VelnetInputError(None, f"baselines for schemes {unknown}, which have no predictions")
    density = truth[0]["density"]
    boxes_volume = len(truth) * density.box_size ** 3
    factor = spectra.box_error(1.0, density.box_size ** 3, len(truth), independent_volume)[1]
    histories = {s: {name: rows for name, rows in by_network.items() if rows}
                 for s, by_network in (histories or {}).items()}
    steps = 10 + (len(catalogs) if catalogs is not None else 0)
    with report_folder(outdir, "evaluate (2024 halo paper)", steps, overwrite) as (folder, progress):
        metrics, fields = measure(truth, predictions, inputs, catalogs, los_name, factor, progress, baselines)
        metrics["reference"] = {s: next(iter(by_method)) for s, by_method in baselines.items() if by_method}
        metrics["training"] = training_summary(histories)
        metrics["config"] = {"los": los_name, "k_ranges": K_RANGES, "pole_range": list(POLE_RANGE),
                             "halo_number_density": HALO_NUMBER_DENSITY, "xi_rmax": XI_RMAX, "xi_dr": XI_DR,
                             "xi_rmin": XI_RMIN, "root_step_cells": ROOT_STEP, "box_size": density.box_size,
                             "nmesh": density.nmesh, "redshift": density.redshift, "boxes_volume": boxes_volume,
                             "independent_volume": boxes_volume if independent_volume is None else independent_volume,
                             "eq11_factor": factor}
        progress("figures")
        metrics["figures"] = figures(folder, metrics, fields, histories)
        return write_report(folder, metrics, lambda m: report_text(m, truth, m["figures"]), time.time() - start)

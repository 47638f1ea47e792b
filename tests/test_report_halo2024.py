"""The 2024 halo paper's report: every section and figure, ideal for the truth, Fig. 13, eq. 11, Fig. 3."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field
from velnet.physics.cosmology import HALO2024

pytest.importorskip("nbodykit")

from boxes import gaussian, halo_field  # noqa: E402

from velnet.fields.painting import readout  # noqa: E402
from velnet.physics.linear import linear_velocity  # noqa: E402
from velnet.reports.halo2024 import evaluate_halo  # noqa: E402
from velnet.reports.halo2024_measures import heaviest  # noqa: E402

Z = 0.59
BOX, N = 64.0, 32


HISTORY = [{"epoch": 0, "loss": 1.0, "val_loss": 0.9}, {"epoch": 1, "loss": 0.8, "val_loss": 0.5},
           {"epoch": 2, "loss": 0.6, "val_loss": 0.7}]
"""Rows of a CSVLogger history (`velnet.training.train.read_history`)."""


def truth_box(seed):
    """Lognormal density, its linear velocity and momentum."""
    value, _, _ = gaussian(N, seed)
    density = halo_field(np.exp(0.6 * value - 0.18))
    velocity = linear_velocity(density)
    return {"density": density, "velocity": velocity,
            "momentum": velocity.with_value(density.value[..., None] * velocity.value, "momentum")}


def halo_inputs(truth, beta):
    """Halo channels from the density, and linear theory of their sum divided by beta (eq. 2-3)."""
    density = truth["density"].value
    total = 1 + beta * (density - 1)
    channels = {f"halos_s_{j}": halo_field(total * share, f"halos_s_{j}")
                for j, share in enumerate((0.1, 0.2, 0.3, 0.4))}
    velocity = linear_velocity(halo_field(density))
    velocity.attrs["beta"] = beta
    momentum = velocity.with_value(density[..., None] * velocity.value, "linear_momentum_s")
    return {**channels, "linear_velocity_s": velocity.with_value(velocity.value, "linear_velocity_s"),
            "linear_momentum_s": momentum}


def catalog(truth, seed, count=900):
    """Halos at random positions moving with the true field there."""
    position = np.random.default_rng(seed).uniform(0, BOX, (count, 3))
    return SimpleNamespace(position=position, velocity=readout(truth["velocity"], position),
                           mass=np.random.default_rng(seed).uniform(1e12, 1e14, count), box_size=BOX, redshift=Z,
                           cosmology=HALO2024)


def noisy(truth, seed):
    rng = np.random.default_rng(seed)
    return {name: f.with_value((f.value * (1 + 0.1 * rng.standard_normal(f.value.shape))).astype(np.float32))
            for name, f in truth.items()}


def test_evaluate_halo_writes_the_report_and_is_ideal_for_the_truth(tmp_path, capsys):
    truths = [truth_box(10), truth_box(11)]
    predictions = {"number": truths, "mass": [noisy(t, 20 + i) for i, t in enumerate(truths)]}
    inputs = {scheme: [halo_inputs(t, 2.0) for t in truths] for scheme in predictions}
    catalogs = [catalog(t, 30 + i) for i, t in enumerate(truths)]
    histories = {"number": {"density": HISTORY, "velocity": HISTORY[:2]}}
    out = tmp_path / "report"
    metrics = evaluate_halo(truths, predictions, out, inputs_by_scheme=inputs, catalogs=catalogs, los="z",
                            histories=histories, independent_volume=1.5 * BOX ** 3)
    assert "evaluate (2024 halo paper)" in capsys.readouterr().err  # the progress bar

    names = {p.name for p in out.iterdir()}
    assert {"report.md", "metrics.json", "xi.png", "xi_density.png", "loss_curves.png", "multipoles.png",
            "spectra_velocity.png", "joint_truth_prediction.png", "histograms_momentum.png"} <= names
    assert json.loads((out / "metrics.json").read_text()) == metrics
    report = (out / "report.md").read_text()
    assert "eq. 10" in report and "number: U-net" in report and "mass: linear" in report
    assert "Eq. 11" in report and "(Fig. 13)" in report and "| number | density | 3 | 0.5 (1) | 0.6 |" in report
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # eq. 11: two boxes holding 1.5 boxes of independent volume: sigma x sqrt(3 / 4)
    assert metrics["config"]["eq11_factor"] == pytest.approx(0.75 ** 0.5)
    curve = metrics["spectra"]["velocity"]["mass"]["U-net"]
    np.testing.assert_allclose(curve["error"], np.asarray(curve["std"]) * 0.75 ** 0.5)
    # Fig. 13 of the dark matter: the truth's own xi, and the halos' (biased by beta = 2) far from it
    xi = metrics["density_xi"]
    assert xi["residual"]["number U-net"] == pytest.approx(0.0, abs=1e-12)
    assert xi["residual"]["mass U-net"] < 0.1 < xi["residual"]["number halos_s"]
    assert metrics["training"]["number"]["density"] == {"epochs": 3, "best_epoch": 1, "best_val_loss": 0.5,
                                                        "final_loss": 0.6}

    exact = metrics["agreement"]["number"]["U-net"]
    for row in ("density", "velocity", "abs_v", "theta_v", "momentum", "abs_m", "theta_m"):
        assert exact[row]["C_r"]["mean"] == pytest.approx(1.0, abs=1e-6)
        assert exact[row]["R_std"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["agreement"]["mass"]["U-net"]["velocity"]["C_r"]["mean"] < 0.999
    assert metrics["pixel"]["number"]["U-net"]["one_minus_cos_v"]["mean"] == pytest.approx(0.0, abs=1e-6)
    for q in ("density", "velocity", "momentum", "theta_v", "theta_m"):
        curve = metrics["spectra"][q]["number"]["U-net"]
        np.testing.assert_allclose(curve["R_mean"], 0.0, atol=1e-5)
        assert len(curve["std"]) == len(curve["k"]) and all(s is not None for s in curve["std"])
    # The linear velocity here is the truth itself; its density is 1 + delta_s / beta = the truth too.
    assert metrics["agreement"]["number"]["linear"]["velocity"]["C_r"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["multipoles"]["summary"]["2"]["number"]["U-net"]["diff_mean"] == pytest.approx(0.0, abs=1e-9)

    rsd = metrics["rsd"]
    assert rsd["nhalos"] == [heaviest(c).size for c in catalogs] == [786, 786]
    offsets, residual = rsd["los_offset"], rsd["xi"]["anisotropy_residual"]
    for mode in ("from s", "at r"):
        assert offsets[f"true v, {mode}"]["rms"]["mean"] < 0.05 * offsets["redshift space"]["rms"]["mean"]
        assert offsets[f"number U-net v, {mode}"] == offsets[f"true v, {mode}"]
        assert residual[f"true v, {mode}"] < 0.2
    assert residual["redshift space"] == pytest.approx(1.0)
    # smoothed fields: the same for the same field; here, where no map folds, smoothing only loses small scales
    assert offsets["number U-net v, from s, smoothed"] == offsets["true v, from s, smoothed"]
    assert residual["true v, from s"] < residual["true v, from s, smoothed"] < 0.95


def test_evaluate_halo_rejects_bad_input_and_leaves_nothing(tmp_path):
    truth = truth_box(12)
    out = tmp_path / "report"
    with pytest.raises(VelnetInputError, match="same test boxes"):
        evaluate_halo([truth], {"number": [truth, truth]}, out)
    with pytest.raises(VelnetInputError, match="no 'momentum'"):
        evaluate_halo(truth, {"number": [{"density": truth["density"], "velocity": truth["velocity"]}]}, out)
    small = {name: Field(f.value[:16, :16, :16], name, BOX, Z, HALO2024) for name, f in truth.items()}
    with pytest.raises(VelnetInputError, match="mesh"):
        evaluate_halo(truth, {"number": [small]}, out)
    bad = catalog(truth, 40)
    bad.position[0], bad.mass[0] = np.nan, 1e15  # found only inside the report folder: during the RSD correction
    with pytest.raises(VelnetInputError, match="finite"):
        evaluate_halo(truth, {"number": [truth]}, out, catalogs=[bad])
    assert list(tmp_path.iterdir()) == []


def test_the_report_measures_each_method_against_the_classical_halo_reference(tmp_path):
    truths = [truth_box(13)]
    baselines = {"number": {"filter": [noisy(truths[0], 50)], "reconstruction": [noisy(truths[0], 51)]}}
    metrics = evaluate_halo(truths, {"number": truths}, tmp_path / "report",
                            inputs_by_scheme={"number": [halo_inputs(truths[0], 2.0)]}, baselines_by_scheme=baselines)
    assert metrics["reference"] == {"number": "filter"}
    agree = metrics["agreement"]["number"]
    assert set(agree) == {"U-net", "filter", "reconstruction", "linear"}
    assert agree["U-net"]["velocity"]["mean_abs_error"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert agree["filter"]["velocity"]["mean_abs_error"]["mean"] > 1.0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| number | v (components) | filter (reference) | " in report
    assert "| number | v (components) | U-net | 1.000 | +" in report
    with pytest.raises(VelnetInputError, match="no predictions"):
        evaluate_halo(truths, {"number": truths}, tmp_path / "other", baselines_by_scheme={"mass": baselines["number"]})

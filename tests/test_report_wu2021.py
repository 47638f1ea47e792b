"""The report of Wu et al. 2021 on small synthetic boxes: contents, numbers, atomicity, progress."""
import json

import numpy as np
import pytest

from velnet.errors import VelnetInputError
from velnet.fields.field import Field
from velnet.physics.cosmology import WU2021
from velnet.physics.linear import linear_momentum, linear_prediction

pytest.importorskip("nbodykit")
from velnet.reports.common import Steps  # noqa: E402
from velnet.reports.wu2021 import STEPS, evaluate  # noqa: E402
from velnet.statistics.statistic import Statistic  # noqa: E402

N, BOX = 32, 128.0  # 4 Mpc/h cells: a 40 Mpc/h slice is 10 x 10 cells, three fit easily
SUBBOX = 64.0  # 16 cells: 8 sub-boxes


@pytest.fixture(scope="module")
def box():
    """A lognormal density, a 'true' velocity (linear theory plus small-scale noise) and methods."""
    rng = np.random.default_rng(0)
    k = 2 * np.pi / BOX * np.fft.fftfreq(N, 1 / N)
    k2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, : N // 2 + 1] ** 2
    g = np.fft.irfftn(np.fft.rfftn(rng.normal(0, 1, (N, N, N))) * np.exp(-0.5 * k2 * 6.0**2), s=(N, N, N),
                      axes=(0, 1, 2))
    g /= g.std()
    density = Field(np.exp(g - 0.5).astype(np.float32), "density", BOX, 0.0, WU2021)
    linear = linear_prediction(density)
    truth = linear["velocity"].with_value(
        (0.7 * linear["velocity"].value + rng.normal(0, 30, (N, N, N, 3))).astype(np.float32))
    shifted = truth.with_value(np.roll(truth.value, N // 2, axis=0))  # same spectra, other places
    predictions = {
        "perfect": {"velocity": truth, "momentum": linear_momentum(density, truth)},
        "shifted": {"velocity": shifted, "momentum": linear_momentum(density, truth).with_value(
            np.roll(linear_momentum(density, truth).value, N // 2, axis=0))},
        "linear": linear,
    }
    return density, truth, predictions


@pytest.fixture(scope="module")
def report(box, tmp_path_factory):
    """One evaluation of all three methods: (metrics, report folder)."""
    density, truth, predictions = box
    folder = tmp_path_factory.mktemp("evaluate") / "report"
    return evaluate({"velocity": truth, "density": density}, predictions, folder, subbox_size=SUBBOX), folder


def test_report_folder_holds_report_metrics_figures_and_spectra(report):
    metrics, folder = report
    text = (folder / "report.md").read_text()
    assert json.loads((folder / "metrics.json").read_text()) == metrics  # strict JSON, returned as written
    assert metrics["methods"] == ["perfect", "shifted", "linear"]
    for name in metrics["figures"]:
        assert (folder / name).stat().st_size > 1000
    assert {"slice1_velocity.png", "slice1_momentum.png", "slice3_velocity.png", "spectra.png",
            "error_spectrum.png", "joint_density.png", "histograms.png"} <= set(metrics["figures"])
    back = Statistic.load(folder / "spectra" / "theta_v_linear.json")
    np.testing.assert_allclose(back["T"], metrics["spectra"]["theta_v"]["results"]["linear"]["columns"]["T"])
    for heading in ("Pixel statistics", "P_abs(v)", "P_theta_v", "P_p", "P_curl_p", "worst T",
                    "Where the error lives", "Sub-boxes", "Slices (an extra view)"):
        assert heading in text
    assert len(metrics["slices"]) == 3
    assert metrics["subboxes"]["p"]["results"]["linear"]["attrs"]["n_sub"] == 8
    assert not list(folder.parent.glob(".report*"))  # no temporary folder left behind


def test_perfect_prediction_scores_perfectly(report):
    metrics, _ = report
    for q in ("abs_v", "theta_v", "p", "curl_p"):
        row = metrics["spectra"][q]["table"]["perfect"]
        assert row["T"]["0.2"] == pytest.approx(1.0) and row["r"]["0.6"] == pytest.approx(1.0)
        assert row["T"]["1.0"] is None  # beyond the Nyquist k of 4 Mpc/h cells (0.785 h/Mpc)
        sub = metrics["subboxes"][q]["table"]["perfect"]
        assert sub["T_mean"]["0.6"] == pytest.approx(1.0) and sub["T_std"]["0.6"] == pytest.approx(0.0)
    assert metrics["pixel"]["perfect"]["abs_v_residual"]["mean"] == 0.0
    assert metrics["pixel"]["perfect"]["abs_cos_theta"]["mean"] == pytest.approx(1.0)
    assert metrics["slices"][0]["pixel"]["perfect"]["abs_v_residual"]["mean"] == 0.0
    np.testing.assert_array_equal(metrics["error_spectrum"]["perfect"]["columns"]["rms_error"], 0.0)
    assert np.all(np.asarray(metrics["error_spectrum"]["perfect"]["columns"]["rms_truth"][:5]) > 0)


def test_power_right_phases_wrong_is_stated(report):
    metrics, folder = report
    text = (folder / "report.md").read_text()
    shifted = metrics["spectra"]["theta_v"]["table"]["shifted"]
    assert shifted["T"]["0.6"] == pytest.approx(1.0, rel=1e-6)  # a shift keeps every power spectrum
    assert abs(shifted["r"]["0.6"]) < 0.3
    assert "shifted, P_theta_v: power right, phases wrong" in text
    assert "perfect, P_theta_v: power right" not in text
    # the truth is 0.7 x linear theory plus noise, so linear theory overshoots the power
    assert metrics["spectra"]["theta_v"]["table"]["linear"]["T"]["0.2"] > 1.5


def test_failure_midway_leaves_no_report_and_keeps_the_old_one(box, tmp_path):
    density, truth, predictions = box
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("previous report")
    (out / "metrics.json").write_text("{}")
    # 50 slices cannot fit: found only after the spectra were written into the temporary folder
    with pytest.raises(VelnetInputError, match="fewer than 50"):
        evaluate({"velocity": truth, "density": density}, {"linear": predictions["linear"]}, out,
                 subbox_size=SUBBOX, n_slices=50)
    assert (out / "report.md").read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    with pytest.raises(VelnetInputError, match="fewer than 50"):
        evaluate({"velocity": truth, "density": density}, {"linear": predictions["linear"]}, tmp_path / "new",
                 subbox_size=SUBBOX, n_slices=50)
    assert not (tmp_path / "new").exists()


def test_bad_inputs_are_refused_before_anything_is_written(box, tmp_path):
    density, truth, predictions = box
    small = Field(np.zeros((16, 16, 16, 3), np.float32), "velocity", BOX, 0.0, WU2021)
    with pytest.raises(VelnetInputError, match="'coarse' velocity"):
        evaluate({"velocity": truth, "density": density}, {"coarse": {"velocity": small}}, tmp_path / "r")
    with pytest.raises(VelnetInputError, match="true density"):
        evaluate({"velocity": truth}, predictions, tmp_path / "r")
    with pytest.raises(VelnetInputError, match="reserved"):
        evaluate({"velocity": truth, "density": density}, {"truth": predictions["linear"]}, tmp_path / "r")
    nan = truth.with_value(np.full_like(truth.value, np.nan))
    with pytest.raises(VelnetInputError, match="NaN"):
        evaluate({"velocity": truth, "density": density}, {"bad": {"velocity": nan}}, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_the_steps_show_on_a_progress_bar(capsys):
    steps = Steps(STEPS, "evaluate (Wu et al. 2021)")
    for name in ("derived fields", "pixel statistics"):
        steps(name)
    steps.close()
    err = capsys.readouterr().err
    assert "evaluate (Wu et al. 2021)" in err and f"2/{STEPS}" in err and "pixel statistics" in err

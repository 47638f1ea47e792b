"""The demo's checks read the report's metrics the way the accuracy issue states its bar."""
from experiments.demo import classical_checks, network_checks, power_checks

BANDS = {"k_lo": [0.0, 0.2, 0.4, 0.8], "k_hi": [0.2, 0.4, 0.8, 1.6]}


def metrics(rows):
    """A metrics dict with each method's band errors and mean abs(v_res): name -> (bands, mean)."""
    return {"error_spectrum": {m: {"columns": {**BANDS, "rms_error": e}} for m, (e, _) in rows.items()},
            "pixel": {m: {"abs_v_residual": {"mean": mean}} for m, (_, mean) in rows.items()}}


def test_a_network_must_beat_the_reference_in_every_band_to_0_8():
    m = metrics({"ref": ([5, 10, 15, 20], 40.0), "better": ([4, 9, 14, 25], 38.0), "worse": ([4, 11, 14, 5], 38.0)})
    assert all(passed for _, passed in network_checks(m, "better", "ref"))  # the 0.8-1.6 band does not count
    failed = [check for check, passed in network_checks(m, "worse", "ref") if not passed]
    assert failed == ["0.2-0.4"]


def test_the_classical_bar_is_35_percent_and_every_band():
    m = metrics({"classical": ([5, 10, 15, 20], 40.0), "smooth": ([6, 10, 20, 20], 62.0)})
    assert all(passed for _, passed in classical_checks(m, "classical", "smooth"))
    m = metrics({"classical": ([5, 10, 15, 21], 40.0), "smooth": ([6, 10, 20, 20], 60.0)})
    failed = [check for check, passed in classical_checks(m, "classical", "smooth") if not passed]
    assert failed == ["mean abs(v_res) 33% lower", "0.8-1.6"]


def test_power_checks_take_the_worst_bin_inside_the_range():
    def spectra(t):
        return {"results": {"pp": {"columns": {"k": [0.1, 0.3, 0.5, 0.9, 1.2], "T": t}}}}
    m = {"spectra": {"abs_v": spectra([0.5, 1.05, 0.95, 1.08, 2.0]), "theta_v": spectra([1, 1, 1.12, 1, 1])}}
    (label_v, ok_v), (label_t, ok_t) = power_checks(m, "pp")
    assert ok_v and "worst 1.080" in label_v
    assert not ok_t and "worst 1.120" in label_t

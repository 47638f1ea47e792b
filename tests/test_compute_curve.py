"""The compute curve's restricted correction: kept where it predicts the wanted one, dropped where it is noise."""
import numpy as np

from experiments.compute_curve import figure, restricted, restriction
from velnet.fields.field import Field
from velnet.physics.classical import absolute_kedges
from velnet.physics.cosmology import WU2021

N, BOX = 32, 64.0


def _velocity(seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return Field((scale * rng.standard_normal((N, N, N, 3))).astype(np.float32), "velocity", BOX, 0.0, WU2021)


def test_a_perfect_correction_is_kept_and_noise_is_dropped():
    kedges = absolute_kedges(BOX / N, 16)
    wanted = _velocity(1)
    gain = restriction(wanted, wanted, kedges)
    populated = gain != 0
    assert populated.sum() >= 10
    np.testing.assert_allclose(gain[populated], 1.0, rtol=1e-6)
    noise = restriction(_velocity(2), wanted, kedges)
    assert np.all(np.abs(noise[populated]) < 0.2)


def test_restricted_adds_the_gained_correction_to_the_base():
    kedges = absolute_kedges(BOX / N, 16)
    base, prediction = _velocity(3), _velocity(4)
    np.testing.assert_allclose(restricted(base, prediction, np.ones(16), kedges).value, prediction.value, atol=1e-4)
    np.testing.assert_allclose(restricted(base, prediction, np.zeros(16), kedges).value, base.value, atol=1e-4)


def test_the_curve_figure_is_written(tmp_path):
    def box(network, restricted_error):
        return {"network": {"mean_abs_v_res": network}, "restricted": {"mean_abs_v_res": restricted_error}}

    points = [{"samples": s, "boxes": {"test": box(40.0 - i, 36.5), "halo2024": box(37.0 - i, 33.5)}}
              for i, s in enumerate((1000, 2000, 4000))]
    result = {"classical": {"test": {"mean_abs_v_res": 36.0}, "halo2024": {"mean_abs_v_res": 33.0}},
              "runs": {"window-32": {"points": points}}}
    path = figure(result, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000

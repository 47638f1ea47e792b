"""experiments.halo_oracle: the halo filter on the same halos in redshift space and at their true positions."""
import json

import numpy as np
import pytest
from boxes import halo_field, smooth_box
from test_report_halo2024 import BOX, N

from data_prep.catalogs import HaloCatalog, save_halos
from data_prep.halo_fields import paint_halo_channels
from experiments.halo_oracle import oracle_boxes, run
from velnet.errors import VelnetInputError
from velnet.fields.field import load_fields, save_fields
from velnet.fields.painting import readout
from velnet.physics.cosmology import HALO2024
from velnet.physics.linear import linear_velocity


def truth_box(seed, v_rms=400.0):
    """A smooth lognormal density and its linear velocity scaled to `v_rms` km/s (a 2-3 cell shift along z)."""
    rho = np.exp(0.5 * smooth_box(N, seed))
    density = halo_field(rho / rho.mean())
    v = linear_velocity(density).value
    velocity = halo_field((v * v_rms / np.sqrt(np.mean(v**2))).astype(np.float32), "velocity")
    return {"density": density, "velocity": velocity,
            "momentum": velocity.with_value(density.value[..., None] * velocity.value, "momentum")}


def tracers(truth, seed, per_cell=0.1):
    """Halos Poisson-drawn in proportion to the density squared, moving with the true velocity."""
    rng = np.random.default_rng(seed)
    rho = truth["density"].value.astype(np.float64)
    counts = rng.poisson(per_cell * rho**2 / np.mean(rho**2))
    cells = np.repeat(np.argwhere(counts > 0), counts[counts > 0], axis=0)
    position = (cells + rng.uniform(0, 1, cells.shape)) * BOX / N
    return HaloCatalog(position, readout(truth["velocity"], position), rng.uniform(1e12, 1e14, len(position)),
                       BOX, truth["density"].redshift, HALO2024)


@pytest.fixture
def boxes(tmp_path):
    for folder in ("fields", "halos"):
        (tmp_path / folder).mkdir()
    for seed in (1, 2, 3):
        truth = truth_box(seed)
        catalog = tracers(truth, seed)
        channels, _, meta = paint_halo_channels(catalog, N, "z", "number", (1e-4, 1e-3, 2e-3, 3e-3))
        save_fields(tmp_path / "fields" / f"seed{seed}.h5", [*channels, *truth.values()], {**meta, "beta": 2.0})
        save_halos(tmp_path / "halos" / f"seed{seed}.h5", catalog)
    return tmp_path


def test_the_true_positions_do_better_than_the_reconstruction(boxes):
    mean = run(boxes / "fields", boxes / "halos", [1, 2], [3], boxes / "out")
    true, reconstructed = mean["true positions"], mean["reconstruction"]
    assert true["density"] > reconstructed["density"] + 0.01
    assert true["momentum"] > reconstructed["momentum"]
    assert mean["true velocity field"]["density"] > reconstructed["density"]  # these halos move with the field
    assert 0.5 < reconstructed["velocity"] <= 1.0 and 0.0 < true["one_minus_cos_v"] < 0.5
    record = json.loads((boxes / "out" / "oracle.json").read_text())
    assert record["train"] == [1, 2] and set(record["boxes"]["3"]) == set(mean) == {
        "reconstruction", "true velocity field", "true positions", "true positions alone"}
    assert "| true positions alone |" in (boxes / "out" / "oracle.md").read_text()


def test_the_moved_channels_hold_the_same_halos(boxes):
    observed, moved = oracle_boxes(boxes / "fields" / "seed3.h5", boxes / "halos" / "seed3.h5")
    on_file = load_fields(boxes / "fields" / "seed3.h5", [f"halos_s_{j}" for j in range(4)])
    for j in range(4):
        name = f"halos_s_{j}"
        assert np.array_equal(observed[name].value, on_file[name].value)
        for channels in moved.values():
            assert np.isclose(channels[name].value.sum(), observed[name].value.sum(), rtol=1e-5)
            assert not np.allclose(channels[name].value, observed[name].value)
    # the field moves these halos (which move with it) back towards where they are
    real = moved["true positions"]["halos_s_3"].value.ravel()
    by_field = np.corrcoef(real, moved["true velocity field"]["halos_s_3"].value.ravel())[0, 1]
    assert by_field > np.corrcoef(real, observed["halos_s_3"].value.ravel())[0, 1] + 0.2


def test_another_box_catalogue_is_named_and_nothing_is_written(boxes):
    with pytest.raises(VelnetInputError, match="seed2.h5.*does not paint"):
        oracle_boxes(boxes / "fields" / "seed1.h5", boxes / "halos" / "seed2.h5")
    other = boxes / "theirs"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(VelnetInputError, match="theirs"):
        run(boxes / "fields", boxes / "halos", [1, 2], [3], other)
    for train, test in (([1, 2], [2]), ([1, 1], [3]), ([], [3])):
        with pytest.raises(VelnetInputError, match="must be given, each once, and differ"):
            run(boxes / "fields", boxes / "halos", train, test, boxes / "out")
    assert not (boxes / "out").exists()
    assert (other / "notes.txt").read_text() == "mine"

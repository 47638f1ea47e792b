"""experiments.halo_rsd_smoothing: the anisotropy the true fields remove, against their smoothing."""
import json

import pytest
from test_report_halo2024 import catalog, truth_box

from data_prep.catalogs import HaloCatalog, save_halos
from experiments.halo_rsd_smoothing import run
from velnet.errors import VelnetInputError
from velnet.fields.field import save_fields


@pytest.fixture
def boxes(tmp_path):
    for folder in ("fields", "halos"):
        (tmp_path / folder).mkdir()
    for seed in (1, 2):
        truth = truth_box(seed)
        save_fields(tmp_path / "fields" / f"seed{seed}.h5", [truth["density"], truth["velocity"]])
        c = catalog(truth, seed)
        save_halos(tmp_path / "halos" / f"seed{seed}.h5",
                   HaloCatalog(c.position, c.velocity, c.mass, c.box_size, c.redshift, c.cosmology))
    return tmp_path


def test_the_unsmoothed_true_fields_remove_the_anisotropy_of_halos_moving_with_them(boxes):
    """Halos moving exactly with a field that folds nowhere: all of it removed, less once smoothed."""
    removed = run(boxes / "fields", boxes / "halos", [1, 2], boxes / "out", radii=(0.0, 6.0))
    assert removed[0.0] > 0.8
    assert removed[6.0] < removed[0.0]
    record = json.loads((boxes / "out" / "smoothing.json").read_text())
    assert record["best_radius"] == 0.0 and record["seeds"] == [1, 2]


def test_a_missing_box_is_named_and_nothing_is_written(boxes):
    with pytest.raises(VelnetInputError, match="seed3.h5"):
        run(boxes / "fields", boxes / "halos", [1, 3], boxes / "out", radii=(0.0,))
    assert not (boxes / "out").exists()

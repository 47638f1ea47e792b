"""experiments.halo_filter_radius on synthetic halo fields files: a table per radius, and only its own folder."""
import json

import numpy as np
import pytest
from test_halo_reference import synthetic_box

from experiments.halo_filter_radius import run
from velnet.errors import VelnetInputError
from velnet.fields.field import save_fields


@pytest.fixture
def fields_dir(tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    for seed in (1, 2, 3):
        box = synthetic_box(seed, noise=0.5)
        momentum = box["velocity"].with_value(box["density"].value[..., None] * box["velocity"].value, "momentum")
        save_fields(folder / f"seed{seed}.h5", [*box.values(), momentum], {"los": "z", "beta": 2.0})
    return folder


def test_the_radius_table_scores_each_radius_on_the_validation_boxes(fields_dir, tmp_path):
    rows = run(fields_dir, [1, 2], [3], tmp_path / "out", radii=(0.0, 8.0))
    assert set(rows) == {0.0, 8.0}
    for row in rows.values():
        assert 0.5 < row["velocity"] <= 1.0 and 0.0 <= row["one_minus_cos_v"] < 0.5
    assert abs(rows[0.0]["velocity"] - rows[8.0]["velocity"]) > 1e-4  # the moved channels change the filter
    record = json.loads((tmp_path / "out" / "radius.json").read_text())
    assert record["validate"] == [3] and "| 8 |" in (tmp_path / "out" / "radius.md").read_text()
    again = run(fields_dir, [1, 2], [3], tmp_path / "out", radii=(0.0,))  # its own folder: replaced
    assert np.isclose(again[0.0]["velocity"], rows[0.0]["velocity"])
    assert "| 8 |" not in (tmp_path / "out" / "radius.md").read_text()
    logs = run(fields_dir, [1, 2], [3], tmp_path / "out", radii=(0.0,), log_radii=(2.0, 8.0))
    assert max(abs(logs[0.0][c] - rows[0.0][c]) for c in rows[0.0]) > 1e-6  # the log features enter the fit
    assert json.loads((tmp_path / "out" / "radius.json").read_text())["log_radii"] == [2.0, 8.0]
    assert "smoothed at: 2, 8 Mpc/h" in (tmp_path / "out" / "radius.md").read_text()
    with pytest.raises(VelnetInputError, match="must differ"):
        run(fields_dir, [1, 2], [2], tmp_path / "out", radii=(0.0,))


def test_it_never_writes_over_a_folder_it_did_not_make(fields_dir, tmp_path):
    other = tmp_path / "theirs"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(VelnetInputError, match="theirs"):
        run(fields_dir, [1, 2], [3], other, radii=(0.0,))
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(VelnetInputError, match="seed9.h5"):
        run(fields_dir, [1, 9], [3], tmp_path / "out", radii=(0.0,))
    assert not (tmp_path / "out").exists()

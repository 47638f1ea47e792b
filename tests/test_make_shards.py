"""make_shards: fields files -> shards that read back into the original fields."""
import json

import numpy as np
import pytest

from data_prep.make_shards import make_shards, nearest_power_of_two, verify_shards
from velnet.data.datasets import read_split_arrays
from velnet.data.inputs import InputSpec
from velnet.data.manifest import read_manifest
from velnet.data.tiling import extract, untile
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, save_fields
from velnet.physics.cosmology import HALO2024, WU2021


def write_box(path, nmesh, seed, box_size=None, cosmology=WU2021, nan_in=None):
    """A fields file with a log-normal density and a Gaussian velocity (km/s)."""
    rng = np.random.default_rng(seed)
    density = np.exp(0.5 * rng.standard_normal((nmesh,) * 3)).astype(np.float32)
    velocity = (300.0 * rng.standard_normal((nmesh,) * 3 + (3,))).astype(np.float32)
    values = {"density": density, "velocity": velocity, "momentum": density[..., None] * velocity}
    if nan_in:
        values[nan_in].flat[5] = np.nan
    size = box_size or 2.0 * nmesh
    save_fields(path, [Field(v, k, size, 0.5, cosmology) for k, v in values.items()])
    return path, values


@pytest.mark.parametrize("target", ["velocity", "momentum"])
def test_whole_boxes_read_back_into_the_fields(tmp_path, target):
    boxes = [write_box(tmp_path / f"box{i}.h5", 40, seed=i) for i in range(2)]
    manifest = make_shards([p for p, _ in boxes], tmp_path / "ds", target=target, split="train",
                           tiles_per_shard=5)
    assert read_manifest(tmp_path / "ds", verify=True) == manifest
    assert manifest.input_shape == [32, 32, 32, 1] and manifest.target_shape == [20, 20, 20, 3]
    assert [s["file"] for s in manifest.shards] == [f"train-{i:05d}-of-00004.tfrecord" for i in range(4)]
    assert manifest.split["counts"] == {"train": 16, "val": 0, "test": 0, "guard": 0}
    truth = np.stack([v[target] for _, v in boxes]).astype(np.float64)
    scale = manifest.target_scale
    assert scale == nearest_power_of_two(np.sqrt(np.mean(truth**2)))

    x, y, origins, box_index = read_split_arrays(read_manifest(tmp_path / "ds"), "train")
    for b, (_, values) in enumerate(boxes):
        sel = box_index == b
        ln = np.log1p(values["density"])
        np.testing.assert_array_equal(x[sel][..., 0], extract(ln, origins[sel], 32, -6))
        np.testing.assert_array_equal(untile(x[sel][:, 6:26, 6:26, 6:26, 0], origins[sel], 40), ln)
        np.testing.assert_array_equal(untile(y[sel], origins[sel], 40) * scale, values[target])


def test_one_split_per_box(tmp_path):
    boxes = [write_box(tmp_path / f"box{i}.h5", 40, seed=i) for i in range(3)]
    manifest = make_shards([p for p, _ in boxes], tmp_path / "ds", split=["train", "train", "val"])
    assert manifest.split["counts"] == {"train": 16, "val": 8, "test": 0, "guard": 0}
    train = np.stack([v["velocity"] for _, v in boxes[:2]]).astype(np.float64)
    assert manifest.target_scale == nearest_power_of_two(np.sqrt(np.mean(train**2)))
    _, y, origins, box_index = read_split_arrays(read_manifest(tmp_path / "ds"), "val")
    assert set(box_index) == {2}
    np.testing.assert_allclose(untile(y, origins, 40) * manifest.target_scale,
                               boxes[2][1]["velocity"], rtol=1e-6)
    with pytest.raises(VelnetInputError, match="one per file"):
        make_shards([p for p, _ in boxes], tmp_path / "ds2", split=["train", "val"])


def test_region_split_tiles_land_in_their_regions(tmp_path):
    path, values = write_box(tmp_path / "box.h5", 24, seed=3)
    manifest = make_shards([path], tmp_path / "ds", tile=4, margin=2, fractions=(0.5, 0.25, 0.25))
    counts = manifest.split["counts"]
    assert counts == {"train": 72, "val": 36, "test": 36, "guard": 72}  # 6 slabs: 2/1/1 + 2 guards
    scale = manifest.target_scale
    train_x = set()
    for split in ("train", "val", "test"):
        x, y, origins, _ = read_split_arrays(read_manifest(tmp_path / "ds"), split)
        assert len(x) == counts[split]
        np.testing.assert_allclose(y * scale, extract(values["velocity"], origins, 4), rtol=1e-6)
        cells = {int(c) for o in origins[:, 0] for c in (o - 2 + np.arange(8)) % 24}
        if split == "train":
            train_x = cells
            assert scale == nearest_power_of_two(np.sqrt(np.mean(np.square(
                extract(values["velocity"], origins, 4).astype(np.float64)))))
        else:
            assert not cells & train_x


def test_inconsistent_boxes_are_refused(tmp_path):
    first, _ = write_box(tmp_path / "a.h5", 20, seed=0)
    for name, kwargs in [("size.h5", {"box_size": 100.0}), ("cosmo.h5", {"cosmology": HALO2024})]:
        other, _ = write_box(tmp_path / name, 20, seed=1, **kwargs)
        with pytest.raises(VelnetInputError, match=name):
            make_shards([first, other], tmp_path / "ds", tile=10, margin=2, split="train")
    other, _ = write_box(tmp_path / "mesh.h5", 30, seed=1, box_size=40.0)
    with pytest.raises(VelnetInputError, match="mesh.h5.*nmesh"):
        make_shards([first, other], tmp_path / "ds", tile=10, margin=2, split="train")
    with pytest.raises(VelnetInputError, match=r"a\.h5.*\[4, 5, 10, 20\]"):
        make_shards([first], tmp_path / "ds", tile=8, margin=2, split="train")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("field", ["velocity", "density"])
def test_nan_field_is_refused_without_output(tmp_path, field):
    path, _ = write_box(tmp_path / "nan.h5", 20, seed=0, nan_in=field)
    with pytest.raises(VelnetInputError, match=f"nan.h5.*{field}.*NaN"):
        make_shards([path], tmp_path / "ds", tile=10, margin=2, split="train")
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nan.h5"]


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    path, _ = write_box(tmp_path / "box.h5", 20, seed=0)
    out = tmp_path / "ds"
    first = make_shards([path], out, tile=10, margin=2, split="train")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    # same config and sources: the dataset is already there, nothing is rewritten
    assert make_shards([path], out, tile=10, margin=2, split="train") == first
    # a different dataset is refused and the old one left untouched
    with pytest.raises(VelnetInputError, match="different dataset"):
        make_shards([path], out, tile=5, margin=2, split="train")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == before
    replaced = make_shards([path], out, tile=5, margin=2, split="train", overwrite=True)
    assert replaced.tile["target"] == 5 and read_manifest(out, verify=True) == replaced
    # a folder that is not a dataset is refused too
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    with pytest.raises(VelnetInputError, match="not a velnet dataset"):
        make_shards([path], junk, tile=10, margin=2, split="train")
    assert (junk / "notes.txt").read_text() == "mine"


def test_test_boxes_take_the_training_scale(tmp_path):
    path, values = write_box(tmp_path / "box.h5", 20, seed=0)
    with pytest.raises(VelnetInputError, match="target_scale"):
        make_shards([path], tmp_path / "ds", tile=10, margin=2, split="test")
    manifest = make_shards([path], tmp_path / "ds", tile=10, margin=2, split="test", target_scale=250.0)
    assert manifest.target_scale == 250.0
    _, y, origins, _ = read_split_arrays(read_manifest(tmp_path / "ds"), "test")
    np.testing.assert_allclose(untile(y, origins, 20) * 250.0, values["velocity"], rtol=1e-6)
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["split"]["mode"] == ["test"]


def test_verify_shards_checks_every_tile_against_its_source(tmp_path):
    boxes = [write_box(tmp_path / f"box{i}.h5", 40, seed=i) for i in range(2)]
    make_shards([p for p, _ in boxes], tmp_path / "ds", split=["train", "val"],
                inputs=InputSpec(linear=True, smoothing=2.0))
    assert verify_shards(tmp_path / "ds") == {"train": 8, "val": 8}
    write_box(boxes[1][0], 40, seed=7)
    with pytest.raises(VelnetInputError, match="box1.h5.*changed"):
        verify_shards(tmp_path / "ds")


def test_the_papers_subfield_from_the_command_line(tmp_path):
    """`velnet prep --subfield`: the paper's 240 of 256 scaled down to 36 of 40 with 12^3 targets
    (margin 2, so the 16^3 inputs stay inside the box); shards, manifest and check-shards agree."""
    from velnet.cli import main

    path, values = write_box(tmp_path / "box.h5", 40, seed=9)
    assert main(["prep", str(path), "--split", "train", "--tile", "12", "--margin", "2", "--subfield", "36",
                 "--out", str(tmp_path / "ds")]) == 0
    manifest = read_manifest(tmp_path / "ds", verify=True)
    assert manifest.split["counts"]["train"] == 27 and manifest.tile["subfield"] == 36
    assert manifest.provenance["config"]["subfield"] == 36
    x, y, origins, _ = read_split_arrays(read_manifest(tmp_path / "ds"), "train")
    assert origins.min() == 2 and origins.max() == 26
    scale = manifest.target_scale
    np.testing.assert_array_equal(untile(y, origins - 2, 36) * scale, values["velocity"][2:38, 2:38, 2:38])
    np.testing.assert_array_equal(x[..., 0], extract(np.log1p(values["density"]), origins, 16, -2))
    assert main(["check-shards", str(tmp_path / "ds")]) == 0
    assert main(["prep", str(path), "--split", "train", "--tile", "12", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()

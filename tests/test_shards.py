"""Shards: our protobuf/TFRecord against TensorFlow's, the manifest, and both readers."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from data_prep.make_shards import make_shards
from velnet.data.datasets import ShardDataset, load_split, read_split_arrays
from velnet.data.manifest import read_manifest
from velnet.data.records import (
    SCHEMA,
    decode_example,
    decode_tile,
    encode_example,
    encode_record,
    read_records,
)
from velnet.data.tiling import oh_transform
from velnet.data.writer import ShardWriter
from velnet.errors import VelnetInputError
from velnet.fields.field import Field, save_fields
from velnet.physics.cosmology import WU2021

RNG = np.random.default_rng(11)
SHAPES = SimpleNamespace(input_shape=[8, 8, 8, 1], target_shape=[4, 4, 4, 3])
"""What `decode_tile` reads of a manifest."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two 24^3 boxes, tiles of 4 + 2 x 2 cells, region split 2/1/1 slabs: 144/72/72 tiles."""
    root = tmp_path_factory.mktemp("shards")
    files = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        density = np.exp(0.5 * rng.standard_normal((24,) * 3)).astype(np.float32)
        velocity = (300 * rng.standard_normal((24,) * 3 + (3,))).astype(np.float32)
        fields = [Field(density, "density", 48.0, 0.0, WU2021), Field(velocity, "velocity", 48.0, 0.0, WU2021)]
        files.append(save_fields(root / f"box{seed}.h5", fields))
    make_shards(files, root / "ds", tile=4, margin=2, fractions=(0.5, 0.25, 0.25), tiles_per_shard=20)
    return root / "ds"


@pytest.fixture(scope="module")
def manifest(dataset):
    return read_manifest(dataset)


def _tiles(n):
    return [(RNG.standard_normal((8, 8, 8, 1)).astype(np.float32),
             RNG.standard_normal((4, 4, 4, 3)).astype(np.float32),
             np.array([-1, 5, 300 + i]), i) for i in range(n)]


def test_tensorflow_reads_our_shards(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tiles = _tiles(5)
    writer = ShardWriter(tmp_path)
    writer.append("train-00000-of-00001.tfrecord", [encode_record(*t) for t in tiles])
    spec = {name: tf.io.FixedLenFeature(f.shape, tf.string if f.kind == "bytes" else tf.int64)
            for name, f in SCHEMA.items()}
    records = list(tf.data.TFRecordDataset(str(tmp_path / "train-00000-of-00001.tfrecord")))
    assert len(records) == 5
    for record, (x, y, origin, box) in zip(records, tiles):
        ex = tf.io.parse_single_example(record, spec)
        np.testing.assert_array_equal(tf.io.decode_raw(ex["input"], tf.float32).numpy().reshape(x.shape), x)
        np.testing.assert_array_equal(tf.io.decode_raw(ex["target"], tf.float32).numpy().reshape(y.shape), y)
        np.testing.assert_array_equal(ex["origin"].numpy(), origin)
        assert ex["box"].numpy() == box
        # and the protobuf itself is a valid tf.train.Example
        parsed = tf.train.Example.FromString(record.numpy()).features.feature
        assert list(parsed["origin"].int64_list.value) == list(origin)


def test_we_read_shards_tensorflow_wrote(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tiles = _tiles(4)
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for x, y, origin, box in tiles:
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "input": tf.train.Feature(bytes_list=tf.train.BytesList(value=[x.tobytes()])),
                "target": tf.train.Feature(bytes_list=tf.train.BytesList(value=[y.tobytes()])),
                "origin": tf.train.Feature(int64_list=tf.train.Int64List(value=origin)),
                "box": tf.train.Feature(int64_list=tf.train.Int64List(value=[box])),
            })).SerializeToString())
    got = [decode_tile(data, SHAPES, path) for data in read_records(path)]
    assert len(got) == 4
    for (x, y, origin, box), (gx, gy, gorigin, gbox) in zip(tiles, got):
        np.testing.assert_array_equal(gx, x)
        np.testing.assert_array_equal(gy, y)
        np.testing.assert_array_equal(gorigin, origin)
        assert gbox == box


def test_example_round_trip_without_tensorflow():
    features = {"input": b"\x00\x01" * 300, "target": b"", "origin": [0, -2, 2**40], "box": [127]}
    ex = decode_example(encode_example(features))
    assert ex["input"] == [features["input"]] and ex["target"] == [b""]
    np.testing.assert_array_equal(ex["origin"], [0, -2, 2**40])
    np.testing.assert_array_equal(ex["box"], [127])
    with pytest.raises(VelnetInputError, match="shard.tfrecord.*malformed"):
        decode_tile(b"\x0a\xff\x01", SHAPES, "shard.tfrecord")
    with pytest.raises(VelnetInputError, match="lacks features"):
        decode_tile(encode_example(features)[:0], SHAPES, "shard.tfrecord")


def test_truncated_or_corrupt_shards_are_named(tmp_path):
    path = tmp_path / "train-00000-of-00001.tfrecord"
    ShardWriter(tmp_path).append(path.name, [encode_record(*t) for t in _tiles(3)])
    data = path.read_bytes()
    assert len(list(read_records(path))) == 3
    path.write_bytes(data[:-10])
    with pytest.raises(VelnetInputError, match="train-00000-of-00001.tfrecord.*truncated"):
        list(read_records(path))
    path.write_bytes(data[:5])
    with pytest.raises(VelnetInputError, match="truncated"):
        list(read_records(path))
    broken = bytearray(data)
    broken[100] ^= 0xFF
    path.write_bytes(bytes(broken))
    with pytest.raises(VelnetInputError, match="CRC"):
        list(read_records(path))


def test_manifest_is_validated(dataset, tmp_path):
    manifest = read_manifest(dataset, verify=True)
    assert manifest.task == "wu2021" and manifest.input_spec.channels == 1
    assert manifest.split["counts"] == {"train": 144, "val": 72, "test": 72, "guard": 144}
    assert [s["file"] for s in manifest.shards if s["split"] == "val"] == \
        [f"val-{i:05d}-of-00004.tfrecord" for i in range(4)]
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest.to_dict()))
    assert read_manifest(copy) == manifest  # what it writes reads back the same
    shard = copy / manifest.shards[0]["file"]
    shard.write_bytes(shard.read_bytes()[:-1] + b"\x00")
    read_manifest(copy)  # without verify the damage goes unseen
    with pytest.raises(VelnetInputError, match="sha256"):
        read_manifest(copy, verify=True)
    shard.unlink()
    with pytest.raises(VelnetInputError, match=f"{shard.name}.*not found"):
        read_manifest(copy)
    broken = manifest.to_dict()
    del broken["normalisation"]
    (copy / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(VelnetInputError, match="normalisation"):
        read_manifest(copy)
    (copy / "manifest.json").write_text(json.dumps({**manifest.to_dict(), "task": "halo-vorticity"}))
    with pytest.raises(VelnetInputError, match="manifest.json: task must be one of"):
        read_manifest(copy)
    (copy / "manifest.json").write_text("{")
    with pytest.raises(VelnetInputError, match="JSON"):
        read_manifest(copy)


def _rows(x, y):
    return sorted(a.tobytes() + b.tobytes() for a, b in zip(x, y))


def _collect(batches):
    xs, ys = zip(*((np.asarray(x), np.asarray(y)) for x, y in batches))
    return np.concatenate(xs), np.concatenate(ys)


def test_both_readers_give_the_same_tiles(manifest):
    pytest.importorskip("tensorflow")
    x, y, _, _ = read_split_arrays(manifest, "val")
    ds = load_split(manifest, "val", batch_size=16, shuffle=False)
    shapes = [(b[0].shape, b[1].shape) for b in ds]
    assert shapes[0] == ((16, 8, 8, 8, 1), (16, 4, 4, 4, 3)) and len(shapes) == 5
    assert _rows(*_collect(ds)) == _rows(x, y)
    py = ShardDataset(manifest, "val", batch_size=16, shuffle=False)
    assert len(py) == 5 and py[4][0].shape == (8, 8, 8, 8, 1)
    assert _rows(*_collect(py[i] for i in range(len(py)))) == _rows(x, y)
    assert x.dtype == y.dtype == np.float32


def test_dropping_the_smaller_last_batch(manifest):
    """72 validation tiles in batches of 16: 4 whole batches, the 8 left over dropped."""
    pytest.importorskip("tensorflow")
    tf_sizes = [len(b[0]) for b in load_split(manifest, "val", batch_size=16, drop_remainder=True)]
    py = ShardDataset(manifest, "val", batch_size=16, drop_remainder=True)
    py_sizes = [len(py[i][0]) for i in range(len(py))]
    assert tf_sizes == py_sizes == [16] * 4
    kept = _rows(*_collect(py[i] for i in range(len(py))))
    assert len(kept) == 64 and set(kept) <= set(_rows(*read_split_arrays(manifest, "val")[:2]))


def test_shuffling_is_seeded_and_new_each_epoch(manifest):
    pytest.importorskip("tensorflow")
    first = load_split(manifest, "train", batch_size=144, seed=3)
    epoch1, epoch2 = (next(iter(first))[0].numpy() for _ in range(2))
    again = next(iter(load_split(manifest, "train", batch_size=144, seed=3)))[0].numpy()
    np.testing.assert_array_equal(epoch1, again)
    assert not np.array_equal(epoch1, epoch2) and _rows(epoch1, epoch1) == _rows(epoch2, epoch2)

    py = ShardDataset(manifest, "train", batch_size=144, seed=3)
    e1 = py[0][0]
    np.testing.assert_array_equal(e1, ShardDataset(manifest, "train", batch_size=144, seed=3)[0][0])
    py.on_epoch_end()
    e2 = py[0][0]
    assert not np.array_equal(e1, e2) and _rows(e1, e1) == _rows(e2, e2)


def _check_augmented(manifest, x, y):
    """Each pair is some stored pair under one Oh element, the same for input and target."""
    xs, ys, _, _ = read_split_arrays(manifest, "val")
    lookup = {oh_transform(a, k).tobytes(): (i, k) for i, a in enumerate(xs) for k in range(48)}
    elements = set()
    for a, b in zip(x, y):
        i, k = lookup[a.tobytes()]
        np.testing.assert_array_equal(b, oh_transform(ys[i], k, [(0, 3)]))
        elements.add(k)
    assert len(elements) > 20


def test_augmentation_transforms_pairs_jointly(manifest):
    pytest.importorskip("tensorflow")
    _check_augmented(manifest, *_collect(load_split(manifest, "val", batch_size=8, augment=True)))
    py = ShardDataset(manifest, "val", batch_size=8, augment=True)
    _check_augmented(manifest, *_collect(py[i] for i in range(len(py))))


def test_other_backends_read_without_tensorflow(dataset):
    backend = next((b for b in ("jax", "torch") if importlib.util.find_spec(b)), None)
    if backend is None:
        pytest.skip("neither jax nor torch is installed (Keras's numpy backend needs jax)")
    code = (
        "import sys; from velnet.data.datasets import load_split; from velnet.data.manifest import read_manifest\n"
        f"ds = load_split(read_manifest({str(dataset)!r}), 'test', batch_size=10, augment=True)\n"
        "x, y = ds[0]\n"
        "print(type(ds).__name__, x.shape, y.shape, 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "KERAS_BACKEND": backend},
                         capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True).stdout
    assert out.split()[-1] == "False"
    assert out.startswith("ShardDataset (10, 8, 8, 8, 1) (10, 4, 4, 4, 3)")

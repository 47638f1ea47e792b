"""Training tiles on disk: TFRecord shards of `tf.train.Example`s plus a manifest.

A dataset folder holds `{split}-{i:05d}-of-{n:05d}.tfrecord` shards and `manifest.json`.
Each record is one tile pair, with the features of `SCHEMA`: `input` and `target` (raw
little-endian float32 bytes, channels-last, shapes in the manifest), `origin` (int64 x3,
the target corner in box cells) and `box` (int64, index of the source box in the
manifest's provenance sources). Stored targets are divided by the manifest's target scale
(km/s, or none for a density).

The writer and one reader need no TensorFlow (a GPU node may have only JAX): they speak
the protobuf wire format and TFRecord framing (length, masked crc32c, data, masked
crc32c) themselves, with `google-crc32c`. `load_split` gives a `tf.data.Dataset` on the
TensorFlow backend and a `keras.utils.PyDataset` on the others.

Manifest keys (`Manifest`): format, version, task, cosmology, box_size (Mpc/h), nmesh,
redshift, input_name, target_name, input_shape, target_shape, input_vector_slices,
target_vector_slices, input_spec, tile {input, target, margin}, normalisation
{input_transform, target_scale, target_units, undo}, split {mode, rule, fractions, seed,
counts, per_box}, shards [{file, split, count, sha256}], provenance {sources [{file,
sha256}], config, versions, date}. Manifests written before tasks and input specs existed
are wu2021 datasets of ln(1 + rho/rho_mean) alone.
"""
import dataclasses
import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from .errors import VelnetInputError
from .files import require_file
from .inputs import SPEC_KEY, InputSpec
from .tasks import TileData, get_task
from .tiling import SPLITS, oh_transform

FORMAT = "velnet-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_KEYS = (
    "format", "version", "cosmology", "box_size", "nmesh", "redshift", "input_name",
    "target_name", "input_shape", "target_shape", "input_vector_slices",
    "target_vector_slices", "tile", "normalisation", "split", "shards", "provenance")
"""Keys every manifest holds (task and input_spec have defaults)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of a record: `kind` "bytes" or "int64", and its `shape` (() or (n,))."""

    kind: str
    shape: tuple


SCHEMA = {
    "input": FeatureSpec("bytes", ()),
    "target": FeatureSpec("bytes", ()),
    "origin": FeatureSpec("int64", (3,)),
    "box": FeatureSpec("int64", ()),
}
"""The record layout shared by the writer, the TensorFlow parser and the numpy parser."""


def shard_name(split, index, count):
    """File name of shard `index` of `count` of a split: `train-00003-of-00012.tfrecord`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


# --- Protobuf wire format (tf.train.Example) and TFRecord framing ---------------------------

def _varint(value):
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features):
    """Serialise a `tf.train.Example` whose features follow `SCHEMA`.

    Args:
        features: dict name -> bytes (kind "bytes") or int sequence (kind "int64").

    Returns:
        The protobuf bytes.
    """
    entries = b""
    for name, spec in SCHEMA.items():
        value = features[name]
        if spec.kind == "bytes":
            feature = _delimited(1, _delimited(1, bytes(value)))  # Feature.bytes_list
        else:
            packed = b"".join(_varint(int(v)) for v in np.ravel(value))
            feature = _delimited(3, _delimited(1, packed))  # Feature.int64_list, packed
        entries += _delimited(1, _delimited(1, name.encode()) + _delimited(2, feature))
    return _delimited(1, entries)  # Example.features


def _read_varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("protobuf ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield (field number, wire type, value) of a protobuf message; value is an int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
            if pos > len(buf):
                raise ValueError("protobuf field runs past the end of its message")
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _int64s(buf):
    """Values of an Int64List, packed or not."""
    out = []
    for number, wire, value in _fields(buf):
        if number != 1:
            continue
        if wire == 0:
            out.append(value)
        else:
            pos = 0
            while pos < len(value):
                v, pos = _read_varint(value, pos)
                out.append(v)
    return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in out], dtype=np.int64)


def decode_example(data):
    """Parse a serialised `tf.train.Example` with bytes and int64 features.

    Returns:
        dict name -> list of bytes (bytes_list) or int64 array (int64_list).

    Raises:
        ValueError: malformed protobuf or a feature kind other than bytes or int64.
    """
    out = {}
    data = memoryview(data)  # slices without copies
    for _, _, features in (f for f in _fields(data) if f[0] == 1):
        for _, _, entry in (f for f in _fields(features) if f[0] == 1):
            parts = {number: value for number, _, value in _fields(entry)}
            name = bytes(parts.get(1, b"")).decode()
            for kind, value in ((n, v) for n, _, v in _fields(parts.get(2, b""))):
                if kind == 1:
                    out[name] = [bytes(v) for n, _, v in _fields(value) if n == 1]
                elif kind == 3:
                    out[name] = _int64s(value)
                else:
                    raise ValueError(f"feature {name!r} is not a bytes or int64 list")
    return out


def _masked_crc(data):
    import google_crc32c

    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data):
    """Wrap bytes in TFRecord framing: uint64 length, masked crc32c, data, masked crc32c."""
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", _masked_crc(head)) + data + struct.pack("<I", _masked_crc(data))


def encode_record(x, y, origin, box):
    """One framed TFRecord of a tile pair.

    Args:
        x: input tile, float32 channels-last.
        y: target tile (already normalised), float32 channels-last.
        origin: target corner, 3 ints (cells).
        box: index of the source box.

    Returns:
        bytes ready to append to a shard file.
    """
    return frame(encode_example({
        "input": np.ascontiguousarray(x, dtype="<f4").tobytes(),
        "target": np.ascontiguousarray(y, dtype="<f4").tobytes(),
        "origin": origin, "box": [box]}))


def record_index(path):
    """Offsets and lengths of the records of a TFRecord file, checking the length CRCs.

    Returns:
        list of `(offset, length)` of each record's data, in bytes.

    Raises:
        VelnetInputError: the file is missing, truncated or has a corrupt header.
    """
    path = require_file(path, "TFRecord shard")
    size, pos, out = path.stat().st_size, 0, []
    with open(path, "rb") as f:
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                raise VelnetInputError(path, f"truncated: record header at byte {pos} is cut short")
            (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if crc != _masked_crc(head[:8]):
                raise VelnetInputError(path, f"corrupt record header at byte {pos} (length CRC mismatch)")
            if pos + 16 + length > size:
                raise VelnetInputError(
                    path, f"truncated: record at byte {pos} needs {length + 16} bytes, {size - pos} left")
            out.append((pos + 12, length))
            pos += 16 + length
            f.seek(pos)
    return out


def read_record(f, path, offset, length):
    """The data of one record from an open file, checking its CRC (see `record_index`)."""
    f.seek(offset)
    data = f.read(length + 4)
    if len(data) < length + 4:
        raise VelnetInputError(path, f"truncated: record at byte {offset - 12} is cut short")
    if struct.unpack("<I", data[length:])[0] != _masked_crc(data[:length]):
        raise VelnetInputError(path, f"corrupt record at byte {offset - 12} (data CRC mismatch)")
    return data[:length]


def read_records(path):
    """Yield the data of every record of a TFRecord file, checking CRCs and truncation."""
    index = record_index(path)
    with open(path, "rb") as f:
        for offset, length in index:
            yield read_record(f, path, offset, length)


def decode_tile(data, manifest, path=None):
    """A record's tile pair as numpy arrays.

    Args:
        data: serialised `tf.train.Example` of a record.
        manifest: the dataset's `Manifest` (for the shapes).
        path: shard file, named in errors.

    Returns:
        `(x, y, origin, box)`: float32 input and stored target with the manifest's
        shapes, int64 `(3,)` origin and int box index.

    Raises:
        VelnetInputError: the record does not match `SCHEMA` and the manifest's shapes.
    """
    try:
        ex = decode_example(data)
    except ValueError as err:
        raise VelnetInputError(path, f"malformed tf.train.Example: {err}") from None
    missing = set(SCHEMA) - set(ex)
    if missing:
        raise VelnetInputError(path, f"record lacks features {sorted(missing)}")
    arrays = []
    for name in ("input", "target"):
        shape = tuple(manifest.input_shape if name == "input" else manifest.target_shape)
        raw = ex[name][0] if len(ex[name]) == 1 else b""
        if len(raw) != 4 * math.prod(shape):
            raise VelnetInputError(path, f"record {name!r} holds {len(raw)} bytes, not float32 {shape}")
        arrays.append(np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32))
    if ex["origin"].shape != (3,) or ex["box"].shape != (1,):
        raise VelnetInputError(path, "record 'origin' must hold 3 ints and 'box' one")
    return arrays[0], arrays[1], ex["origin"], int(ex["box"][0])


# --- Writing ---------------------------------------------------------------------------------

class ShardWriter:
    """Append framed records to the shard files of a dataset folder, counting and hashing them.

    Args:
        folder: the (temporary) dataset folder.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self._counts, self._hashes = {}, {}

    def append(self, name, records):
        """Append records (from `encode_record`) to shard file `name`."""
        self._hashes.setdefault(name, hashlib.sha256())
        with open(self.folder / name, "ab") as f:
            for record in records:
                f.write(record)
                self._hashes[name].update(record)
        self._counts[name] = self._counts.get(name, 0) + len(records)

    def entries(self):
        """Manifest entries `{file, split, count, sha256}` of the shards written, by name."""
        return [{"file": name, "split": name.split("-")[0], "count": self._counts[name],
                 "sha256": self._hashes[name].hexdigest()} for name in sorted(self._counts)]


def sha256(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- The manifest ----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Manifest(TileData):
    """A shard dataset's `manifest.json`, parsed and checked once (`read_manifest`).

    Attributes: those of `TileData` (task, shapes, input spec, tile, normalisation, the
    boxes' metadata) and format, version, split, shards, provenance (see the module
    docstring); `folder` is the dataset folder (not stored).
    """

    format: str
    version: int
    split: dict
    shards: list
    provenance: dict
    folder: Path = field(default=None, compare=False)

    @property
    def path(self):
        """The manifest file."""
        return Path(self.folder) / MANIFEST

    def to_dict(self):
        """The JSON object of `manifest.json`."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "folder"}
        out[SPEC_KEY] = self.input_spec.to_dict()
        return out

    @classmethod
    def from_dict(cls, manifest, folder):
        """Check a manifest's JSON object and type it.

        Raises:
            VelnetInputError: naming the manifest file: missing keys, another format
                version, an unknown task or input spec, or inconsistent counts.
        """
        path = Path(folder) / MANIFEST
        if not isinstance(manifest, dict):
            raise VelnetInputError(path, "must hold a JSON object")
        missing = [k for k in MANIFEST_KEYS if k not in manifest]
        if missing:
            raise VelnetInputError(path, f"lacks keys {missing}")
        if manifest["format"] != FORMAT or manifest["version"] != FORMAT_VERSION:
            raise VelnetInputError(
                path, f"is {manifest['format']!r} version {manifest['version']}; this velnet reads "
                      f"{FORMAT!r} version {FORMAT_VERSION}")
        for key, sub in (("tile", ("input", "target", "margin")),
                         ("normalisation", ("input_transform", "target_scale")),
                         ("split", ("counts",))):
            lacking = [s for s in sub if s not in manifest[key]]
            if lacking:
                raise VelnetInputError(path, f"{key!r} lacks keys {lacking}")
        for shard in manifest["shards"]:
            lacking = [k for k in ("file", "split", "count", "sha256") if k not in shard]
            if lacking:
                raise VelnetInputError(path, f"shard entry {shard} lacks keys {lacking}")
        for split in SPLITS:
            total = sum(s["count"] for s in manifest["shards"] if s["split"] == split)
            if total != manifest["split"]["counts"].get(split, 0):
                raise VelnetInputError(
                    path, f"shards of {split!r} hold {total} records, split counts say "
                          f"{manifest['split']['counts'].get(split, 0)}")
        unknown = sorted(set(manifest) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise VelnetInputError(path, f"has unknown keys {unknown}")
        get_task(manifest.get("task", "wu2021"), path)
        return cls(**{**manifest, SPEC_KEY: InputSpec.from_dict(manifest, path), "folder": Path(folder)})


def read_manifest(dataset_dir, verify=False):
    """Read and check a dataset's `manifest.json`, and that its shards are there.

    Args:
        dataset_dir: the dataset folder.
        verify: also check every shard's sha256 (reads all shards).

    Returns:
        The `Manifest`.

    Raises:
        VelnetInputError: missing or unreadable manifest, a malformed one (see
            `Manifest.from_dict`), missing shard files or (with `verify`) a checksum mismatch.
    """
    path = require_file(Path(dataset_dir) / MANIFEST, "dataset manifest")
    try:
        stored = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise VelnetInputError(path, f"not valid JSON ({err})") from None
    manifest = Manifest.from_dict(stored, dataset_dir)
    for shard in manifest.shards:
        shard_path = require_file(Path(dataset_dir) / shard["file"], "shard listed in the manifest")
        if verify and sha256(shard_path) != shard["sha256"]:
            raise VelnetInputError(shard_path, "sha256 differs from the manifest: the shard changed or is damaged")
    return manifest


# --- Reading ---------------------------------------------------------------------------------

def split_files(manifest, split):
    """Paths of the shards of one split, in name order.

    Raises:
        VelnetInputError: unknown split or no records in it.
    """
    if split not in SPLITS:
        raise VelnetInputError(manifest.folder, f"split must be one of {SPLITS}. Received: split={split!r}")
    files = [Path(manifest.folder) / s["file"] for s in manifest.shards if s["split"] == split and s["count"]]
    if not files:
        raise VelnetInputError(manifest.folder, f"dataset has no {split!r} tiles")
    return files


def read_split_arrays(manifest, split):
    """All tiles of a split as numpy arrays, without TensorFlow.

    Args:
        manifest: the dataset's `Manifest`.
        split: "train", "val" or "test".

    Returns:
        `(x, y, origins, boxes)`: inputs `(n, *input_shape)` and stored (normalised) targets
        `(n, *target_shape)` float32, target corners int64 `(n, 3)` and box indices int64
        `(n,)`, sorted by box, then origin. Multiply `y` by the manifest's target scale for
        physical units.
    """
    tiles = [decode_tile(data, manifest, path)
             for path in split_files(manifest, split) for data in read_records(path)]
    x, y, origins, boxes = (np.stack(a) for a in zip(*tiles))
    order = np.lexsort((*origins.T[::-1], boxes))
    return x[order], y[order], origins[order], boxes[order]


def load_split(manifest, split, batch_size, shuffle=True, seed=0, augment=False, shuffle_buffer=2048,
               drop_remainder=False):
    """Batches of `(x, y)` tile pairs of one split, for `model.fit`.

    On the TensorFlow backend a `tf.data.Dataset` (parallel TFRecord reads -> parse ->
    optional Oh augmentation -> shuffle -> batch -> prefetch); on the JAX and PyTorch
    backends a `keras.utils.PyDataset` reading shards without TensorFlow. Both reshuffle
    each epoch from `seed`, and both augment input and target with the same drawn element.

    Args:
        manifest: the dataset's `Manifest`.
        split: "train", "val" or "test".
        batch_size: tiles per batch (the last batch may be smaller).
        shuffle: shuffle the tiles, anew each epoch.
        seed: seed of the shuffling and augmentation.
        augment: apply a random element of the cube's symmetry group Oh to each pair.
        shuffle_buffer: tiles in the tf.data shuffle buffer (shard order is shuffled too).
        drop_remainder: leave out the last batch when it is smaller (for several devices,
            where every batch must divide among them).

    Returns:
        A dataset of float32 `(B, *input_shape)`, `(B, *target_shape)` batches with
        normalised targets.
    """
    if keras.backend.backend() == "tensorflow":
        return _tf_dataset(manifest, split, batch_size, shuffle, seed, augment, shuffle_buffer, drop_remainder)
    return ShardDataset(manifest, split, batch_size, shuffle=shuffle, seed=seed, augment=augment,
                        drop_remainder=drop_remainder)


def _tf_dataset(manifest, split, batch_size, shuffle, seed, augment, shuffle_buffer, drop_remainder):
    import tensorflow as tf

    files = [str(p) for p in split_files(manifest, split)]
    count = manifest.split["counts"][split]
    shapes = {"input": tuple(manifest.input_shape), "target": tuple(manifest.target_shape)}
    vectors = {"input": manifest.input_vector_slices, "target": manifest.target_vector_slices}
    spec = {name: tf.io.FixedLenFeature(f.shape, tf.string if f.kind == "bytes" else tf.int64)
            for name, f in SCHEMA.items()}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        return tuple(tf.reshape(tf.io.decode_raw(ex[k], tf.float32), shapes[k]) for k in shapes)

    def rotate(pair, draw):
        element = draw % 48
        return tuple(tf.ensure_shape(oh_transform(t, element, vectors[k], xp=tf.experimental.numpy), shapes[k])
                     for t, k in zip(pair, shapes))

    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.TFRecordDataset(names, num_parallel_reads=min(len(files), 8))
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))
    if augment:
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, draws)).map(rotate, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.shuffle(min(count, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


class ShardDataset(keras.utils.PyDataset):
    """Batches of a split read without TensorFlow, for the JAX and PyTorch backends.

    Args:
        manifest: the dataset's `Manifest`.
        split: "train", "val" or "test".
        batch_size: tiles per batch (the last batch may be smaller).
        shuffle: shuffle the tiles, anew each epoch.
        seed: seed of the shuffling and augmentation.
        augment: apply a random element of Oh to each pair (same element to x and y).
        drop_remainder: leave out the last batch when it is smaller.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size` of `PyDataset`.
    """

    def __init__(self, manifest, split, batch_size, shuffle=True, seed=0, augment=False,
                 drop_remainder=False, **kwargs):
        super().__init__(**kwargs)
        self.manifest = manifest
        self.records = [(path, offset, length)
                        for path in split_files(manifest, split)
                        for offset, length in record_index(path)]
        expected = manifest.split["counts"][split]
        if len(self.records) != expected:
            raise VelnetInputError(manifest.folder, f"{split!r} shards hold {len(self.records)} records, "
                                                    f"the manifest says {expected}")
        self.batch_size, self.shuffle, self.seed, self.augment = batch_size, shuffle, seed, augment
        self.drop_remainder = drop_remainder
        self.epoch = 0
        self._set_order()

    def _set_order(self):
        n = len(self.records)
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __len__(self):
        whole, part = divmod(len(self.records), self.batch_size)
        return whole + (bool(part) and not self.drop_remainder)

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        xs, ys = [], []
        for i in self.order[index * self.batch_size:(index + 1) * self.batch_size]:
            path, offset, length = self.records[i]
            with open(path, "rb") as f:
                x, y, _, _ = decode_tile(read_record(f, path, offset, length), self.manifest, path)
            if self.augment:
                element = int(rng.integers(48))
                x = oh_transform(x, element, self.manifest.input_vector_slices)
                y = oh_transform(y, element, self.manifest.target_vector_slices)
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)

    def on_epoch_end(self):
        self.epoch += 1
        self._set_order()

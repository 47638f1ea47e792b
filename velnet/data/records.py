"""The TFRecord codec of velnet's shards: one `tf.train.Example` per tile pair, without TensorFlow.

Each record is one tile pair, with the features of `SCHEMA`: `input` and `target` (raw
little-endian float32 bytes, channels-last, shapes in the manifest), `origin` (int64 x3,
the target corner in box cells) and `box` (int64, index of the source box in the
manifest's provenance sources). Stored targets are divided by the manifest's target scale
(km/s, or none for a density).

The codec speaks the protobuf wire format and TFRecord framing (length, masked crc32c,
data, masked crc32c) itself, with `google-crc32c`, so that a GPU node with only JAX reads
and writes shards.
"""
import math
import struct
from dataclasses import dataclass

import numpy as np

from velnet.errors import VelnetInputError
from velnet.files import require_file


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

"""Reading a split of a shard dataset: numpy arrays, a `tf.data.Dataset`, or a `keras.utils.PyDataset`.

`load_split` gives a `tf.data.Dataset` on the TensorFlow backend and a `ShardDataset` (no
TensorFlow) on the others; both reshuffle each epoch from a seed and can augment each tile
pair with an element of the cube's symmetry group Oh.
"""
import keras
import numpy as np

from velnet.data.manifest import split_files
from velnet.data.records import SCHEMA, decode_tile, read_record, read_records, record_index
from velnet.data.tiling import oh_transform
from velnet.errors import VelnetInputError


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
        self.reorder()

    def reorder(self):
        """Draw the order of the records for the current epoch (from the seed and epoch)."""
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
        self.reorder()

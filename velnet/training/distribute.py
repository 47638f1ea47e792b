"""Data-parallel training: on several devices of one process, or on several worker processes
(machines), each with the backend's own engine (TensorFlow's Mirrored and MultiWorkerMirrored
strategies, JAX's `keras.distribution.DataParallel` over `jax.distributed`).

`velnet.training.train.train` takes the scope of `data_parallel`, makes batch normalisation
global (`synchronize_batch_norm`) and feeds each worker its share of each global batch
(`worker_share`); worker i > 0 writes under `WORKERS_DIR/<i>/` of the run folder.
"""
import contextlib
import json
import logging
import os

import keras

log = logging.getLogger(__name__)

WORKERS_DIR = "workers"
"""Where worker i > 0 of a multi-worker run writes (`workers/<i>/`)."""


def data_parallel(devices=None):
    """A scope in which to build, compile and fit a model data-parallel on several devices.

    TensorFlow: a `tf.distribute.MirroredStrategy` scope (one process) or a
    `MultiWorkerMirroredStrategy` one (several); JAX: a `keras.distribution.DataParallel`
    scope, over the devices of every process of `jax.distributed` for several. Each batch is
    split across the devices (the batch size is the global one, a multiple of the device
    count; `train` then leaves out each split's last, smaller batch) and the gradients are
    averaged. BatchNormalization statistics are over the whole batch (`train` makes them so on
    TensorFlow, `synchronize_batch_norm`; JAX's DataParallel computes them so), so training
    on several devices or workers is training on one with the same batches. One device
    also trains on the smaller last batch, so the losses agree where the training split
    divides into whole batches.

    Args:
        devices: None or 1: one device (Keras's default placement); "auto": every GPU or
            TPU (one device when there is none; CPUs are not split); an int n: the first
            n devices of the preferred kind (accelerators, else CPUs, e.g. logical CPUs
            made with `tf.config.set_logical_device_configuration`); "workers": every
            device of every worker process of a cluster, each process making this same
            call. TensorFlow reads the cluster from TF_CONFIG
            (`{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type":
            "worker", "index": i}}`), JAX from KERAS_DISTRIBUTION_JOB_ADDRESSES (worker 0's
            "host:port"), KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID
            (`keras.distribution.initialize`).

    Returns:
        `(scope, names)`: a context manager and the names of the devices used (empty
        for one device).

    Raises:
        ValueError: a bad `devices`, more devices than there are, several devices on a
            backend other than TensorFlow and JAX, or "workers" without the cluster's
            environment variables.
    """
    if devices is None or devices == 1:
        return contextlib.nullcontext(), []
    backend = keras.backend.backend()
    if devices == "workers":
        return _workers(backend)
    found = keras.distribution.list_devices()
    if devices == "auto":
        names = [d for d in found if not d.lower().startswith("cpu")]
    elif isinstance(devices, int) and not isinstance(devices, bool) and 1 < devices <= len(found):
        names = found[:devices]
    else:
        raise ValueError(f'`devices` must be None, "auto", "workers" or an integer from 1 to {len(found)} '
                         f"(devices found: {found}). Received: devices={devices!r}")
    if len(names) < 2:
        return contextlib.nullcontext(), []
    log.info("data-parallel training on %s (%s backend)", names, backend)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.distribute.MirroredStrategy([f"/{name}" for name in names]).scope(), names
    if backend == "jax":
        return keras.distribution.DataParallel(devices=names).scope(), names
    raise ValueError(f"Training on several devices needs the TensorFlow or JAX backend. "
                     f"Received: backend={backend!r}, devices={devices!r}")


def _workers(backend):
    """`data_parallel("workers")`: the backend's multi-worker engine over the cluster its variables name."""
    index, count = _cluster(backend)
    if backend == "tensorflow":
        import tensorflow as tf
        strategy = _keras_reduce(tf.distribute.MultiWorkerMirroredStrategy())
        names = [f"replica {i}" for i in range(strategy.num_replicas_in_sync)]
        scope = strategy.scope()
    else:
        keras.distribution.initialize()
        names = keras.distribution.list_devices()
        scope = keras.distribution.DataParallel(devices=names).scope()
    log.info("data-parallel training as worker %d of %d: %d devices in all (%s backend)", index, count, len(names),
             backend)
    return scope, names


def _keras_reduce(strategy):
    """A MultiWorkerMirroredStrategy whose `reduce` takes what Keras 3.15 hands it (TensorFlow 2.21):
    a structure of values (the first batch of `fit`, which MirroredStrategy reduces whole) and
    scalars with `axis=0` (the logs of each step)."""
    import tensorflow as tf

    reduce = strategy.reduce

    def each(op, value, axis=None):
        def one(v):
            return reduce(op, v, axis if strategy.experimental_local_results(v)[0].shape.rank else None)
        return tf.nest.map_structure(one, value)

    strategy.reduce = each
    return strategy


def _cluster(backend):
    """`(index, count)` of this worker among the cluster's, from the backend's variables."""
    try:
        if backend == "tensorflow":
            config = json.loads(os.environ["TF_CONFIG"])
            return int(config["task"]["index"]), len(config["cluster"]["worker"])
        if backend == "jax":
            return (int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"]),
                    int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"]))
    except (KeyError, TypeError, ValueError) as err:
        variables = ("TF_CONFIG" if backend == "tensorflow" else "KERAS_DISTRIBUTION_JOB_ADDRESSES, "
                     "KERAS_DISTRIBUTION_NUM_PROCESSES, KERAS_DISTRIBUTION_PROCESS_ID")
        raise ValueError(f'devices="workers" needs the cluster in {variables} (see velnet.training.distribute.'
                         f"data_parallel); reading it failed: {err!r}") from None
    raise ValueError(f"Training on several workers needs the TensorFlow or JAX backend. Received: backend={backend!r}")


def synchronize_batch_norm(network):
    """Make a network's BatchNormalization layers take their statistics over the global batch of every
    device (TensorFlow computes them per device otherwise; on JAX they are so already)."""
    if keras.backend.backend() == "tensorflow":
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True


def worker_share(dataset):
    """What this worker feeds of each global batch: TensorFlow splits the batches of a `tf.data` dataset
    among the workers itself, told to split batches (not shard files, whose tiles would then differ from
    one process's); a JAX process feeds its rows of each batch of a `keras.utils.PyDataset`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return dataset.with_options(options)
    return _ProcessRows(dataset, *_cluster("jax"))


class _ProcessRows(keras.utils.PyDataset):
    """Rows `index * B / count ..` of each batch of B of a `keras.utils.PyDataset`: one JAX process's share."""

    def __init__(self, dataset, index, count):
        super().__init__()
        self.dataset, self.index, self.count = dataset, index, count

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        rows = len(x) // self.count
        return x[self.index * rows:(self.index + 1) * rows], y[self.index * rows:(self.index + 1) * rows]

    def on_epoch_end(self):
        self.dataset.on_epoch_end()


def worker_index(devices):
    """This process's index among the workers of `devices="workers"` (0, the one that writes the run
    folder, otherwise)."""
    return _cluster(keras.backend.backend())[0] if devices == "workers" else 0

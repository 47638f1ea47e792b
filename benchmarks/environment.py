"""What a benchmark ran on: date, host, CPU, accelerator, backend and package versions."""
import datetime
import importlib.metadata
import importlib.util
import platform
import socket
import sys

import keras


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def keras_device():
    """Keras's default device, with the accelerator's model name when there is one."""
    device = keras.distribution.list_devices()[0]
    backend = keras.backend.backend()
    if device.startswith("cpu"):
        return f"{device} ({cpu_model()})"
    if backend == "tensorflow":
        import tensorflow as tf
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        return f"{device} ({details.get('device_name', '?')})"
    if backend == "jax":
        import jax
        return f"{device} ({jax.devices()[0].device_kind})"
    if backend == "torch":
        import torch
        return f"{device} ({torch.cuda.get_device_name(0)})"
    return device


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe():
    """Lines naming the date, host, devices and versions, to print above the results."""
    backend = keras.backend.backend()
    backend_package = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax", "jaxlib"),
                       "torch": ("torch",)}.get(backend, ())
    versions = {"python": sys.version.split()[0], "keras": keras.__version__}
    for name in (*backend_package, "torch", "numpy"):
        if _version(name):
            versions[name] = _version(name)
    lines = [
        f"date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"host: {socket.gethostname()} ({platform.platform()})",
        f"keras backend: {backend}, device: {keras_device()}",
    ]
    if importlib.util.find_spec("torch"):
        import torch
        torch_device = (f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available()
                        else f"cpu ({cpu_model()})")
        lines.append(f"torch device: {torch_device}")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines

"""What a run did: its config, package versions and timings, written beside its outputs."""
import datetime
import importlib.metadata
import json
import platform
import sys

from velnet.files import atomic_file

PACKAGES = ("velnet", "numpy", "h5py", "matplotlib", "keras", "tensorflow-cpu", "tensorflow",
            "jax", "jaxlib", "torch", "keras-tuner", "google-crc32c", "nbodykit", "fastpm", "pmesh",
            "bigfile", "classylss", "mpi4py")


def versions(packages=PACKAGES):
    """Installed versions of the packages velnet uses (absent ones are left out)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_record(path, command, config, timings=None, **extra):
    """Write a JSON run record (command, config, versions, timings in seconds, date)."""
    record = {"command": command, "config": config, "timings_s": timings or {},
              "versions": versions(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **extra}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def is_record(path, command):
    """Whether `path` is a run record that `write_record` wrote for `command`."""
    try:
        return json.loads(open(path).read()).get("command") == command
    except (OSError, ValueError, AttributeError):
        return False

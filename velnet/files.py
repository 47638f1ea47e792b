"""Atomic outputs: a failed step leaves nothing half-written behind."""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from velnet.errors import VelnetInputError


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = _with_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path):
    """Yield a temporary folder beside `path`; it becomes `path` only on success.

    An existing `path` is replaced only after the new one is complete.
    """
    path = _with_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _with_parent(path):
    """`path` as a Path, its folder made; VelnetInputError naming it where that fails."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VelnetInputError(path, f"cannot be written: its folder {path.parent} cannot be made "
                                     f"({err.strerror or err})") from None
    return path


def _umask():
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def require_file(path, what="file"):
    """Return `path` as a Path, or raise VelnetInputError if it is missing or empty."""
    path = Path(path)
    if not path.exists():
        raise VelnetInputError(path, f"{what} not found")
    if path.is_file() and path.stat().st_size == 0:
        raise VelnetInputError(path, f"{what} is empty")
    return path

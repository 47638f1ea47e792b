"""Outputs that never destroy what they did not make, written all or nothing.

`check_output` decides whether a command may write at a path: never over one of its inputs,
never a file over a folder or a folder over a file, and over an existing output only when it
is the command's own kind (a previous run of it) or the user asked with `--overwrite`.
`atomic_file` and `atomic_dir` then write beside the target and rename at the end, so a
failed step leaves nothing half-written behind.
"""
import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from velnet.errors import VelnetInputError, from_os_error

OWNED = ".velnet-owned"
"""In a folder a command shares with other files (`atomic_dir(merge=True)`): the entries it wrote there."""
OVERWRITE_HINT = "rerun with --overwrite (Python: overwrite=True) to replace it, or choose another --out"


def open_h5(path, mode="r"):
    """`h5py.File(path, mode)` whose file descriptor a child process does not inherit.

    HDF5 opens files without close-on-exec and locks them. MPI initialised later in the same
    process (pmesh and nbodykit do it at their first mesh) starts its launcher daemon, which would
    inherit every file open at that moment and keep its lock for the life of the process, so that
    reading an output back in that process (`velnet.reconstruct` then `load_fields`, an experiment's
    `predict` then `evaluate`) would fail with "unable to lock file".
    """
    import h5py

    h5 = h5py.File(path, mode)
    if h5.driver != "sec2":  # only sec2's handle is a file descriptor
        return h5
    try:
        handle = h5.id.get_vfd_handle()
        fcntl.fcntl(handle, fcntl.F_SETFD, fcntl.fcntl(handle, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    except BaseException:
        h5.close()
        raise
    return h5


def check_output(path, what, is_own, inputs=(), overwrite=False, folder=False):
    """Raise VelnetInputError unless a command that makes `what` may write it at `path`.

    Always refused: `path` is one of `inputs`, or a folder where a file is made (or a file
    where a folder is made). Without `overwrite`, also refused: an existing file or non-empty
    folder that `is_own(path)` does not recognise as this command's own kind of output.

    Args:
        path: the output path (`--out`).
        what: what the command writes, in words ("a prediction fields file", "a report folder").
        is_own: callable(Path) -> bool: whether an existing `path` is an earlier output of this
            command, which it may replace.
        inputs: the paths the command reads.
        overwrite: replace an existing output of another kind (a folder: only the files the
            command writes are replaced, the others are kept).
        folder: the output is a folder (else a file).

    Returns:
        True when `path` is an existing folder of another kind that `overwrite` lets the
        command write into (replacing only its own files: `atomic_dir(path, merge=True)`).
    """
    path = Path(path)
    refuse_inputs(path, inputs)
    if not path.exists():
        return False
    if path.is_dir() != folder:
        found = "a folder" if path.is_dir() else "a file"
        raise VelnetInputError(path, f"is {found}, not {what}: choose another --out "
                                     f"(velnet never deletes {found} it did not make)")
    if (folder and not any(path.iterdir())) or is_own(path):
        return False
    if not overwrite:
        hint = (f"rerun with --overwrite (Python: overwrite=True) to write into it (only {what}'s own files there "
                "are replaced), or choose another --out") if folder else OVERWRITE_HINT
        raise VelnetInputError(path, f"exists and is not {what} made by this command; {hint}")
    return folder


def refuse_inputs(path, inputs):
    """Raise VelnetInputError when the output `path` is one of `inputs` (None entries skipped)."""
    for source in inputs:
        if source is not None and _same(path, source):
            raise VelnetInputError(path, f"is also an input ({source}): velnet never writes over its inputs; "
                                         "choose another --out")


def _same(a, b):
    """Whether two paths name the same file or folder (through links too)."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    Raises:
        VelnetInputError: `path` is a folder, or its folder cannot be made or written.
    """
    path = _with_parent(path)
    if path.is_dir():
        raise VelnetInputError(path, "is a folder, but the output is a file: choose another --out")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as err:
        raise from_os_error(err, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path, merge=False):
    """Yield a temporary folder beside `path`; it becomes `path` only on success.

    An existing `path` is replaced only after the new one is complete; with `merge`, only the
    entries of the new folder replace those of `path` (its other files are kept, and those the
    last merge wrote but this one does not are removed: `OWNED` lists them).

    Raises:
        VelnetInputError: `path` is a file, or its folder cannot be made or written.
    """
    path = _with_parent(path)
    if path.exists() and not path.is_dir():
        raise VelnetInputError(path, "is a file, but the output is a folder: choose another --out")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    except OSError as err:
        raise from_os_error(err, path) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if merge:
            earlier, entries = owned_entries(path), sorted(entry.name for entry in tmp.iterdir())
            for name in entries:
                _replace(tmp / name, path / name)
            for name in earlier - set(entries):
                remove_path(path / name)
            (path / OWNED).write_text("\n".join(entries) + "\n")
        else:
            _replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def owned_entries(path):
    """The names of the entries a merge wrote into the folder `path` (`OWNED`); empty if none."""
    try:
        return set((Path(path) / OWNED).read_text().split("\n")) - {""}
    except OSError:
        return set()


def _replace(new, path):
    """Move `new` onto `path`; an existing `path` is removed only once `new` is in place."""
    if not path.exists():
        os.replace(new, path)
        return
    old = path.with_name(f".{path.name}.old")
    remove_path(old)
    os.replace(path, old)
    os.replace(new, path)
    remove_path(old)


def remove_path(path):
    """Delete a file, link or folder (with its contents); nothing if there is none."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


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


def declares_format(path, name):
    """Whether the JSON file `path` declares `"format": name` in its first 4 KiB (False if unreadable)."""
    try:
        with open(path) as f:
            return f'"format": "{name}"' in f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False


def require_file(path, what="file"):
    """Return `path` as a Path, or raise VelnetInputError if it is missing or empty."""
    path = Path(path)
    if not path.exists():
        raise VelnetInputError(path, f"{what} not found")
    if path.is_file() and path.stat().st_size == 0:
        raise VelnetInputError(path, f"{what} is empty")
    return path


def write_json(path, state):
    """Write `state` as indented JSON to `path`, atomically (`atomic_file`); returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n")
    return path


def read_json_object(path, what):
    """The JSON object in the file `path`, a velnet `what` file ("classical estimator", ...).

    Raises:
        VelnetInputError: naming the file: missing, empty, not JSON or not a JSON object.
    """
    path = require_file(path, f"{what} file")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise VelnetInputError(path, f"not a velnet {what} file (not JSON: {err})") from None
    if not isinstance(state, dict):
        raise VelnetInputError(path, f"not a velnet {what} file (not a JSON object)")
    return state

"""The one exception velnet raises for bad input: it names the file and the problem."""
import errno

OS_PROBLEMS = {
    errno.EACCES: "permission denied: fix its permissions or choose another place",
    errno.EPERM: "permission denied: fix its permissions or choose another place",
    errno.EROFS: "is on a read-only file system: choose another place",
    errno.ENOENT: "not found",
    errno.EISDIR: "is a folder where a file was expected",
    errno.ENOTDIR: "part of the path is a file where a folder was expected",
    errno.ENOSPC: "no space left on the disk: free some, or write elsewhere",
    errno.EDQUOT: "disk quota exceeded: free some space, or write elsewhere",
    errno.ENAMETOOLONG: "the path is too long",
}
"""What an operating-system error means to a user, by errno."""


class VelnetInputError(ValueError):
    """Bad input: a missing, truncated or inconsistent file, or an unusable setting.

    Args:
        path: the file or folder at fault (or None when no file is involved).
        problem: what is wrong, in words a user can act on.
    """

    def __init__(self, path, problem):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def from_os_error(err, path=None):
    """The `VelnetInputError` of an `OSError`: its file (or `path`) and what the error means.

    Args:
        err: an `OSError` (permission denied, no space left, a folder where a file should be, ...).
        path: the file to name when `err` names none.
    """
    problem = OS_PROBLEMS.get(err.errno) or (err.strerror or str(err) or type(err).__name__)
    return VelnetInputError(err.filename or path, problem)

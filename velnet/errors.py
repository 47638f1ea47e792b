"""The one exception velnet raises for bad input: it names the file and the problem."""


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

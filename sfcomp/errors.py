"""The one exception type sfcomp raises for bad input: its message is a single line naming the file."""
from __future__ import annotations

import os


class SfcompError(Exception):
    """A user-facing error: the CLI prints `error: <message>` and exits 2."""


class BadInputError(SfcompError):
    """Input that is malformed: a corrupt tar, a bad uid, a truncated parquet, an unsorted subset..."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def __reduce__(self):  # picklable, so an error raised in a worker process reaches the parent intact
        return (type(self), (self.path, self.problem))

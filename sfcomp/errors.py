"""The one exception type sfcomp raises for bad input: its message is a single line naming the file."""
from __future__ import annotations

import errno
import io
import os
import re
import sys


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


def json_kind(value) -> str:
    """What a parsed JSON value is, in JSON's words: "null", "an array", "a string", ..."""
    kinds = ((type(None), "null"), (bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
             (list, "an array"), (dict, "an object"))
    return next((k for t, k in kinds if isinstance(value, t)), type(value).__name__)


# ---------------------------------------------------------------- the CLI's error boundary

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_TEMP_NAME = re.compile(r"^\.tmp-(.+?)\.(?:parts\.)?[^.]+$")
_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")
_PATH_LOCALS = ("path", "file", "filename", "fname", "tar_path", "parquet_path", "url")
# numpy's .npy/.npz readers and np.memmap: a ValueError raised in these is a malformed file, not a bug
_NUMPY_READERS = ("numpy/lib/_format_impl.py", "numpy/lib/format.py", "numpy/lib/_npyio_impl.py",
                  "numpy/lib/npyio.py", "numpy/_core/memmap.py", "numpy/core/memmap.py")
_NUMPY_FORMAT_ERRORS = {ValueError, SyntaxError}
_NUMPY_READ_FUNCS = {"load", "read_array", "open_memmap", "read_magic", "read_array_header_1_0",
                     "read_array_header_2_0", "_read_array_header", "__new__", "__getitem__"}


def _one_line(text) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _frames(e: BaseException) -> list:
    """The traceback's frames, innermost first."""
    out, tb = [], e.__traceback__
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out[::-1]


def _file_in_traceback(e: BaseException) -> str | None:
    """The file being read where `e` was raised: in the innermost frame that has one, an open file object or a
    local named like a path (`path`, `file`, `tar_path`, ...)."""
    for frame in _frames(e):
        f_locals = frame.f_locals
        for value in f_locals.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
        for name in _PATH_LOCALS:
            value = f_locals.get(name)
            if isinstance(value, (str, os.PathLike)) and os.fspath(value):
                return os.fspath(value)
    return None


def _user_path(path: str | None) -> str | None:
    """The file the user named for a temp file sfcomp writes on its way (`DIR/.tmp-NAME.XXXX` or a spill folder
    `DIR/.tmp-NAME.parts.XXXX/...`, see sfcomp.atomic): DIR/NAME."""
    if path is None:
        return None
    parts = path.split(os.sep)
    for i, part in enumerate(parts):
        m = _TEMP_NAME.match(part)
        if m:
            return os.sep.join(parts[:i] + [m.group(1)])
    return path


def _input_problem(e: BaseException) -> str | None:
    """What is wrong with the input, for an exception that means malformed or unreadable input; None for any
    other exception (a bug: it keeps its traceback)."""
    import json
    import tarfile
    import tokenize
    import zipfile

    _NUMPY_FORMAT_ERRORS.add(tokenize.TokenError)  # numpy parses a .npy header with tokenize, and lets this out

    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text ({e})"
    if isinstance(e, json.JSONDecodeError):
        return f"invalid JSON ({e})"
    pa = sys.modules.get("pyarrow")
    if pa is not None and isinstance(e, pa.ArrowInvalid):
        return f"unreadable arrow/parquet data ({e})"
    if isinstance(e, zipfile.BadZipFile):
        return f"not a valid zip/npz file ({e})"
    if isinstance(e, tarfile.TarError):
        return f"unreadable tar ({e})"
    if isinstance(e, EOFError):
        return f"truncated: unexpected end of file{f' ({e})' if str(e) else ''}"
    if type(e) in _NUMPY_FORMAT_ERRORS and any(f.f_code.co_name in _NUMPY_READ_FUNCS
                                     and f.f_code.co_filename.replace(os.sep, "/").endswith(_NUMPY_READERS)
                                     for f in _frames(e)):
        return f"unreadable .npy/.npz ({e.args[0] if len(e.args) > 1 else e})"  # TokenError: (msg, position)
    return None


def error_line(e: BaseException) -> str | None:
    """The one stderr line (`error: FILE: problem`) for bad input or a failed read/write; None for a bug."""
    if isinstance(e, SfcompError):
        return f"error: {_one_line(e)}"
    if isinstance(e, OSError):
        if e.errno == errno.EPIPE:  # stdout closed early (`sfcomp ... | head`): click's own handling
            return None
        problem = e.strerror or (str(e.args[0]) if e.args else type(e).__name__)
        if e.errno in _DISK_FULL:
            problem = f"disk full ({e.strerror})"
        elif e.errno is None and _SHORT_WRITE.search(problem):  # numpy's tofile drops the errno
            problem = f"disk full? the write was cut short ({problem})"
        if e.filename2 is not None:
            problem += f" (-> {os.fsdecode(e.filename2)})"
        where = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes, os.PathLike)) else None
        where = _user_path(where or _file_in_traceback(e))
        return _one_line(f"error: {where}: {problem}" if where else f"error: {type(e).__name__}: {problem}")
    problem = _input_problem(e)
    if problem is None:
        return None
    where = _user_path(_file_in_traceback(e))
    return _one_line(f"error: {where}: {problem}" if where else f"error: {type(e).__name__}: {e}")

"""Atomic file writes: write to a temp file in the same folder, fsync, then rename over the target.

A crash leaves either the old file or the new one, never half of one, plus at worst a stray
`.tmp-<name>.*` file beside it, which `remove_stale_temps` (called by the writers that resume) deletes.
A writer holds an flock on its temp file (or spill folder) until it is renamed or removed, so that a second
run writing the same output skips it as live rather than deleting it under the first (the lock dies with
the process, so a killed run's temp is removable at once). A file written with a sidecar (a subset, a score
file) is written inside `writing_pair`, so that two writes of one output at once end as one writer's pair.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", buffering: int = -1) -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit it replaces `path`, on error it is removed, and so are the
    folders above it that this call made (a refused write leaves nothing behind)."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from None
    held = _hold(os.dup(fd))  # a second descriptor keeps the lock from the close below through the rename
    try:
        with os.fdopen(fd, mode, buffering) as f:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would have
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        cause = _probe_errno(tmp) if isinstance(e, OSError) and e.errno is None else None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        for d in made:  # innermost first; a folder something else has written into stays
            with contextlib.suppress(OSError):
                d.rmdir()
        if cause is not None:  # numpy's tofile reports a short write without its errno: give it back
            raise OSError(cause, os.strerror(cause), os.fspath(path)) from e
        if isinstance(e, OSError):
            raise _naming(e, path)
        raise
    finally:
        _release(held)


@contextlib.contextmanager
def temp_dir_beside(path: str | os.PathLike, tag: str = "parts") -> Iterator[Path]:
    """A spill folder `.tmp-<name>.<tag>.*` beside `path`, held (flock) while in use and removed after."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}.{tag}.", dir=path.parent))
    held = _hold(os.open(tmp, os.O_RDONLY))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _release(held)


class _FolderLock:
    """One folder's flock for this process: a thread lock for the threads in it, the flock across processes."""

    def __init__(self) -> None:
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_FOLDER_LOCKS: dict[str, _FolderLock] = {}
_FOLDER_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def writing_pair(path: str | os.PathLike) -> Iterator[None]:
    """Held while one writer writes `path` and its sidecar: an flock on their folder, waited for, so that two
    writes of one output at once run one after the other (the last one's pair stays) rather than leaving one
    run's file beside the other's sidecar. Re-entrant in a thread; a folder without flock is written unguarded."""
    path = Path(path)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # removed again if the write fails
    _make_parent(path)
    key = os.path.realpath(path.parent)
    with _FOLDER_LOCKS_GUARD:
        lock = _FOLDER_LOCKS.setdefault(key, _FolderLock())
    try:
        with lock.thread_lock:
            if lock.depth == 0:
                lock.fd = _wait_for(os.open(key, os.O_RDONLY))
            lock.depth += 1
            try:
                yield
            finally:
                lock.depth -= 1
                if lock.depth == 0:
                    _release(lock.fd)
                    lock.fd = None
    except BaseException:
        for d in made:  # innermost first; a folder something else has written into stays
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _wait_for(fd: int) -> int | None:
    """`fd`, flock'd once the holder lets go; None (fd closed) where the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return None
    return fd


def _hold(fd: int) -> int | None:
    """`fd`, flock'd, for the caller to _release; None (fd closed) where the file system has no flock, and the
    temp is then unguarded, as before locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _release(held: int | None) -> None:
    if held is not None:
        os.close(held)


def in_use(p: Path) -> bool:
    """Whether a live writer holds `p` (a temp file or spill folder). Where flock cannot answer, no."""
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the lock just taken
    return False


def _probe_errno(tmp: str) -> int | None:
    """Why a write to `tmp` (about to be deleted) fails: append one byte and see (ENOSPC, EFBIG, ...)."""
    try:
        with open(tmp, "ab", buffering=0) as f:
            f.write(b"\0")
    except OSError as e:
        return e.errno if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO) else None
    return None


def _make_parent(path: Path) -> None:
    from .errors import BadInputError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        above = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
        raise BadInputError(path, f"cannot create its folder: {above} is not a folder") from None


def _naming(e: OSError, path: Path) -> OSError:
    """`e` naming the file the caller asked for rather than our temp file (or nothing, as a failed write says),
    so that the CLI's line is `error: PATH: No space left on device`."""
    name = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes)) else None
    if name is None or os.path.basename(name).startswith(f".tmp-{path.name}."):
        e.filename = os.fspath(path)
        e.filename2 = None
    return e


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def remove_stale_temps(out_path: str | os.PathLike) -> int:
    """Remove what a killed earlier write of `out_path` left beside it: `.tmp-<name>.*` files (atomic_open) and
    `.tmp-<name>.parts.*` spill folders (temp_dir_beside); those a live writer holds stay. Returns how many
    were removed."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        return 0
    n = 0
    for p in out_path.parent.glob(f".tmp-{glob.escape(out_path.name)}.*"):
        if in_use(p):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n

"""Atomic file writes: write to a temp file in the same folder, fsync, then rename over the target.

A crash leaves either the old file or the new one, never half of one, plus at worst a stray
`.tmp-<name>.*` file beside it, which `remove_stale_temps` (called by the writers that resume) deletes.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would have
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def write_npy(path: str | os.PathLike, array) -> None:
    import numpy as np

    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def remove_stale_temps(out_path: str | os.PathLike) -> int:
    """Remove what a killed earlier write of `out_path` left beside it: `.tmp-<name>.*` files (atomic_open) and
    `.tmp-<name>.parts.*` spill folders. Returns how many were removed."""
    out_path = Path(out_path)
    if not out_path.parent.is_dir():
        return 0
    n = 0
    for p in out_path.parent.glob(f".tmp-{glob.escape(out_path.name)}.*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n

"""Suite-wide check that no command changed an input: every pool built by `_e_harness.make_pool` is digested
(sha256 of every file, and the file list) when it is made and again when the session ends; any difference
fails the session. sfcomp's own default cache folder inside a pool (.sfcomp-cache) is an output, not input."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

_POOLS: dict[Path, dict[str, str]] = {}
OWN_OUTPUTS = (".sfcomp-cache",)


def digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (links not followed), sfcomp's own outputs left out."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in OWN_OUTPUTS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def register(root: Path) -> None:
    _POOLS[Path(root).resolve()] = digest(Path(root))


def changed() -> tuple[int, int, list[str]]:
    """(pools checked, files checked, one line per pool whose bytes or file list changed)."""
    problems, files = [], 0
    for root, before in _POOLS.items():
        if not root.exists():
            problems.append(f"{root}: the pool folder is gone")
            continue
        after = digest(root)
        files += len(after)
        if after != before:
            diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(f"{root}: {len(diff)} files changed, e.g. {diff[:3]}")
    return len(_POOLS), files, problems

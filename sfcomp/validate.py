"""Validate a subset file against DataComp's rules and, optionally, a pool's metadata and shards."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from . import uids as U
from .errors import BadInputError
from .pool import Pool, ShardErrors


@dataclass
class SubsetReport:
    path: str
    requested: int  # entries in the file (with repeats)
    unique: int
    duplicates: int
    in_metadata: int | None = None  # requested entries whose uid is in the pool's metadata
    present: int | None = None  # requested entries whose sample was actually downloaded into the shards
    pool_metadata: int | None = None
    pool_present: int | None = None
    sidecar: str | None = None  # the sfcomp sidecar beside it (`OUT.npy.json`), checked to describe this file

    def as_dict(self) -> dict:
        return asdict(self)


def validate_subset(path: str | os.PathLike, pool: str | os.PathLike | None = None,
                    allow_duplicates: bool = False, check_shards: bool = True,
                    allow_empty: bool = False) -> SubsetReport:
    """Raise BadInputError (one line, naming the file) on any violation; return counts otherwise.

    Violations: wrong dtype, not 1-D, empty (unless allowed), unsorted, duplicates (unless allowed), uids absent
    from the pool's metadata, and an sfcomp sidecar beside it whose `output_sha256` names other bytes (its
    provenance would describe another subset).
    Uids in the metadata but never downloaded are normal and only counted.
    """
    path = os.fspath(path)
    arr = np.asarray(U.read_subset(path))
    U.refuse_empty(len(arr), path, "0 uids", allow_empty, writing=False)
    U.check_subset(path, arr, allow_duplicates=allow_duplicates)
    dups = U.count_duplicates(arr)
    report = SubsetReport(path=path, requested=len(arr), unique=len(arr) - dups, duplicates=dups,
                          sidecar=check_sidecar(path))
    if pool is None:
        return report
    p = Pool(pool)
    meta = U.sort_uids(p.metadata_uids())
    report.pool_metadata = len(meta)
    in_meta = U.isin_sorted(arr, meta)
    report.in_metadata = int(in_meta.sum())
    if report.in_metadata < len(arr):
        i = int(np.argmin(in_meta))
        missing = len(arr) - report.in_metadata
        raise BadInputError(path, f"{missing} uids are not in the pool's metadata ({p.metadata_dir}), "
                                  f"first: {U.uids_to_hex(arr[i:i + 1])[0]}")
    if check_shards:
        present = U.sort_uids(p.present_uids(ShardErrors()))
        report.pool_present = len(present)
        report.present = int(U.isin_sorted(arr, present).sum())
    return report


def check_sidecar(path: str | os.PathLike) -> str | None:
    """The path of the sfcomp sidecar beside subset `path` (one with `output_sha256`: export-subset's, sfcomp
    baseline's) if there is one and it describes these bytes; None if there is none (a subset from elsewhere needs
    none); BadInputError naming the sidecar if it describes another."""
    import json

    from .export import sha256_file
    from .scorefile import sidecar_path

    side = sidecar_path(path)
    try:
        with open(side, "rb") as f:
            meta = json.loads(f.read())
    except (FileNotFoundError, ValueError):  # none, or not JSON: not sfcomp's (its sidecars are written atomically)
        return None
    except OSError as e:
        raise BadInputError(side, f"unreadable subset sidecar ({e.strerror or e})") from None
    if not isinstance(meta, dict) or "output_sha256" not in meta:
        return None  # not one of sfcomp's (export-subset's or sfcomp baseline's): nothing to check it against
    want = meta["output_sha256"]
    got = sha256_file(path)
    if want != got:
        raise BadInputError(side, f"describes another subset: its output_sha256 is {str(want)[:12]}..., "
                                  f"{os.path.basename(path)} hashes to {got[:12]}... (the .npy was replaced, or two "
                                  "runs wrote it at once); export it again to pair them")
    return os.fspath(side)

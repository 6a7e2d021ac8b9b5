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

    def as_dict(self) -> dict:
        return asdict(self)


def validate_subset(path: str | os.PathLike, pool: str | os.PathLike | None = None,
                    allow_duplicates: bool = False, check_shards: bool = True,
                    allow_empty: bool = False) -> SubsetReport:
    """Raise BadInputError (one line, naming the file) on any violation; return counts otherwise.

    Violations: wrong dtype, not 1-D, empty (unless allowed), unsorted, duplicates (unless allowed), uids absent
    from the pool's metadata.
    Uids in the metadata but never downloaded are normal and only counted.
    """
    path = os.fspath(path)
    arr = np.asarray(U.read_subset(path))
    U.refuse_empty(len(arr), path, "0 uids", allow_empty, writing=False)
    U.check_subset(path, arr, allow_duplicates=allow_duplicates)
    dups = U.count_duplicates(arr)
    report = SubsetReport(path=path, requested=len(arr), unique=len(arr) - dups, duplicates=dups)
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

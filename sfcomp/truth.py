"""POOL/truth.parquet (what a synthetic pool knows about each sample: clean, noise_type, class, ...) joined to uids.

The one reader and join of truth: the loop's round report, `clean_precision` of a subset (train-eval's run.json,
the bench), the sweep's metrics and the oracle subset all go through `read_truth` and `Truth.locate`. Rows are
kept sorted by uid; a uid absent from truth is located at -1.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import uids as U

TRUTH_FILE = "truth.parquet"


def truth_path(pool_root: str | os.PathLike) -> str:
    return f"{os.fspath(pool_root).rstrip('/')}/{TRUTH_FILE}"


def has_truth(pool_root: str | os.PathLike) -> bool:
    """A local pool with truth.parquet (a pool behind a URL has none for sfcomp's purposes)."""
    path = truth_path(pool_root)
    return "://" not in path and os.path.exists(path)


@dataclass(frozen=True)
class Truth:
    """truth.parquet sorted by uid: `uids` (u8,u8) and each other column, row-aligned with them."""
    uids: np.ndarray
    columns: dict[str, np.ndarray]
    path: str

    def locate(self, query: np.ndarray) -> np.ndarray:
        """Row of each query uid in this table, -1 where truth has no such uid."""
        return locate(self.uids, np.asarray(query))

    def aligned(self, query: np.ndarray, columns: Sequence[str] | None = None) -> dict[str, np.ndarray] | None:
        """The columns row-aligned with `query`; None when some query uid is absent from truth."""
        rows = self.locate(query)
        if (rows < 0).any():
            return None
        return {c: self.columns[c][rows] for c in (columns or self.columns)}

    def clean_uids(self) -> np.ndarray:
        """The uids truth marks clean (sorted)."""
        return self.uids[np.asarray(self.columns["clean"]).astype(bool)]


def read_truth(path: str | os.PathLike, columns: Sequence[str] | None = None) -> Truth:
    """Read truth.parquet (`columns`: besides uid; default all), sorted by uid; bad files raise BadInputError."""
    from .pool import read_metadata_file

    path = os.fspath(path)
    t = read_metadata_file(path, None if columns is None else ["uid", *columns]).to_pandas()
    u = U.hex_to_uids(t["uid"].to_numpy(), path)
    order = U.uid_order(u["f0"], u["f1"])
    return Truth(u[order], {c: t[c].to_numpy()[order] for c in t.columns if c != "uid"}, path)


def locate(sorted_ref: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each `query` uid in `sorted_ref` (sorted by uid), -1 where absent."""
    ref0, ref1 = sorted_ref["f0"], sorted_ref["f1"]
    lo = np.searchsorted(ref0, query["f0"], side="left")
    hi = np.searchsorted(ref0, query["f0"], side="right")
    out = np.full(len(query), -1, np.int64)
    single = np.flatnonzero(hi - lo == 1)
    hit = ref1[lo[single]] == query["f1"][single]
    out[single[hit]] = lo[single[hit]]
    for i in np.flatnonzero(hi - lo > 1):  # uids sharing their top 64 bits: astronomically rare, checked exactly
        same = np.flatnonzero(ref1[lo[i]: hi[i]] == query["f1"][i])
        if len(same):
            out[i] = lo[i] + same[0]
    return out


def clean_precision(subset_uids: np.ndarray, truth: Truth) -> float | None:
    """Share of the subset's distinct uids that truth marks clean (uids absent from truth ignored); None when
    truth knows none of them."""
    sub = U.unique_sorted(U.sort_uids(np.asarray(subset_uids)))
    rows = truth.locate(sub)
    rows = rows[rows >= 0]
    if not len(rows):
        return None
    return float(np.asarray(truth.columns["clean"])[rows].astype(bool).mean())


def subset_clean_precision(subset_file: str | os.PathLike, truth_file: str | os.PathLike) -> float | None:
    """clean_precision of a subset file against a truth.parquet."""
    return clean_precision(U.read_subset(Path(subset_file)), read_truth(truth_file, ["clean"]))

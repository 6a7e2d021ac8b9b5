"""no_filter: every uid of every parquet (DataComp's `no_filter`)."""
from __future__ import annotations

from . import reader as R
from .spec import Baseline, Run


def _all_uids(path: str) -> tuple:
    t = R.read_columns(path, ["uid"])
    return R.uids_of(t, path), {"rows": t.num_rows}


def select(run: Run) -> list:
    return run.map(_all_uids)


BASELINES = (Baseline("no_filter", "every uid of every parquet", select),)

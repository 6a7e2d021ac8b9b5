"""random: a seeded uniform sample of `int(N * fraction)` rows (DataComp's "random 25%" row of its tables)."""
from __future__ import annotations

import numpy as np

from . import reader as R
from .options import FRACTION, SEED
from .spec import Baseline, Run


def _rows(path: str, rows: np.ndarray) -> tuple:
    t = R.read_columns(path, ["uid"])
    keep = np.zeros(t.num_rows, dtype=bool)
    keep[rows] = True
    return R.uids_of(t, path, keep), {"rows": t.num_rows}


def select(run: Run) -> list:
    a, n_pool = run.args, run.n_pool
    n_keep = int(n_pool * a.fraction)
    seed = 0 if a.seed is None else a.seed
    rows = np.sort(np.random.default_rng(seed).choice(n_pool, size=n_keep, replace=False))
    bounds = np.concatenate([[0], np.cumsum(run.file_rows)])
    per_file = [(rows[(rows >= lo) & (rows < hi)] - lo,) for lo, hi in zip(bounds[:-1], bounds[1:])]
    run.sidecar["random"] = {"seed": seed, "n_keep": n_keep, "rule": "numpy default_rng(seed).choice(N, "
                             "int(N*fraction), replace=False) over rows in sorted-file, row order"}
    return R.map_per_file(_rows, run.files, per_file, run.workers)


BASELINES = (Baseline("random", "a seeded random fraction of the rows", select, options=(FRACTION, SEED),
                      required=(FRACTION,)),)

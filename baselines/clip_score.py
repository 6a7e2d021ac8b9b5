"""clip_score: keep `score >= threshold` on one OpenAI CLIP score column (DataComp's `clip_score`).

`--arch b32|l14` picks the column; exactly one of `--threshold T` / `--fraction F`. A fraction becomes ONE
threshold over the whole pool (`rules.threshold_for_fraction`): a first pass collects only that score column
(float32: 51 MB at small scale), then a second keeps `score >= threshold` file by file. `score_threshold` is
shared with image_based_intersect_clip_score.
"""
from __future__ import annotations

import numpy as np

from . import reader as R
from . import rules
from .options import ARCH, FRACTION, SCORE_COLUMN, THRESHOLD
from .spec import Baseline, BaselineArgs, Run


def _scores(path: str, column: str) -> np.ndarray:
    return R.column_numpy(R.read_columns(path, [column]), column)


def _at_least(path: str, column: str, threshold: float) -> tuple:
    t = R.read_columns(path, ["uid", column])
    keep = rules.at_least(R.column_numpy(t, column), threshold)
    return R.uids_of(t, path, keep), {"rows": t.num_rows}


def fraction_threshold(files: list[str], column: str, fraction: float, workers: int) -> tuple[np.floating, int]:
    """Whole-pool threshold for `fraction`, holding only the one score column."""
    parts = R.map_files(_scores, files, workers, column)
    scores = np.concatenate(parts)
    del parts
    return rules.threshold_for_fraction(scores, fraction), len(scores)


def score_threshold(run: Run) -> tuple[float, str]:
    """The run's threshold on `--arch`'s column (from --threshold, or --fraction over the whole pool);
    recorded in the sidecar."""
    a = run.args
    column = SCORE_COLUMN[a.arch]
    threshold = a.threshold
    if a.fraction is not None:
        threshold, _ = fraction_threshold(run.files, column, a.fraction, run.workers)
    run.sidecar["threshold"] = float(threshold)
    run.sidecar["score_column"] = column
    return threshold, column


def score_column(a: BaselineArgs) -> tuple[str, ...]:
    return (SCORE_COLUMN[a.arch],) if a.arch else ()


def select(run: Run) -> list:
    threshold, column = score_threshold(run)
    return run.map(_at_least, column, threshold)


BASELINES = (Baseline("clip_score", "CLIP score >= a threshold, or the top fraction of the pool", select,
                      columns=score_column, options=(ARCH, THRESHOLD, FRACTION), required=(ARCH,),
                      one_of=((FRACTION, THRESHOLD),)),)

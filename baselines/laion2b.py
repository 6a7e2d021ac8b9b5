"""laion2b: gcld3 English and `clip_b32_similarity_score >= 0.28` (DataComp's LAION-2B reproduction).

Without gcld3 installed, the fastText model stands in (and the sidecar says so); `--fasttext-model` picks it.
"""
from __future__ import annotations

from . import langid as L
from . import reader as R
from . import rules
from .options import FASTTEXT_MODEL, SCORE_COLUMN
from .spec import Baseline, Run

COLUMN = SCORE_COLUMN["b32"]


def _laion2b(path: str, spec: L.LangIdSpec) -> tuple:
    t = R.read_columns(path, ["uid", "text", COLUMN])
    score = rules.at_least(R.column_numpy(t, COLUMN), rules.LAION2B_B32_THRESHOLD)
    keep = L.english_where(spec, R.column_texts(t), score)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "score_rule": int(score.sum())}


def select(run: Run) -> list:
    run.sidecar["threshold"] = rules.LAION2B_B32_THRESHOLD
    run.sidecar["score_column"] = COLUMN
    return run.map(_laion2b, run.lang)


BASELINES = (Baseline("laion2b", "gcld3 English and CLIP B/32 score >= 0.28", select, columns=("text", COLUMN),
                      options=(FASTTEXT_MODEL,), language_id="gcld3"),)

"""basic_filter: English (fastText), more than 2 words and 5 characters, images >= 200 px with aspect <= 3
(DataComp's `basic_filter`; the rules are in rules.py)."""
from __future__ import annotations

from . import langid as L
from . import reader as R
from . import rules
from .options import FASTTEXT_MODEL
from .spec import Baseline, Run


def _basic(path: str, spec: L.LangIdSpec) -> tuple:
    t = R.read_columns(path, ["uid", "text", "original_width", "original_height"])
    texts = R.column_texts(t)
    caption = rules.basic_caption_mask(texts)
    image = rules.image_size_mask(R.column_numpy(t, "original_width", float),
                                  R.column_numpy(t, "original_height", float))
    keep = L.english_where(spec, texts, caption & image)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "caption_rule": int(caption.sum()),
                                      "image_rule": int(image.sum())}


def select(run: Run) -> list:
    return run.map(_basic, run.lang)


BASELINES = (Baseline("basic_filter", "English, caption length and image size rules", select,
                      columns=("text", "original_width", "original_height"), options=(FASTTEXT_MODEL,),
                      language_id="fasttext"),)

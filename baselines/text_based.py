"""text_based: fastText English and some word whose first WordNet synset is an ImageNet-21k class
(DataComp's `text_based`)."""
from __future__ import annotations

from . import langid as L
from . import reader as R
from . import rules
from .options import FASTTEXT_MODEL, SYNSET_LIST, WORDNET_DIR
from .spec import Baseline, Run

_WORDNET: dict = {}  # per worker process: (wordnet_dir, synset_list) -> (WordNet, offsets)


def _wordnet(wordnet_dir: str | None, synset_list: str | None):
    key = (wordnet_dir, synset_list)
    if key not in _WORDNET:
        from .wordnet import WordNet, imagenet21k_offsets

        _WORDNET[key] = (WordNet(wordnet_dir), imagenet21k_offsets(synset_list)[0])
    return _WORDNET[key]


def _text_based(path: str, spec: L.LangIdSpec, wordnet_dir: str | None, synset_list: str | None) -> tuple:
    wn, offsets = _wordnet(wordnet_dir, synset_list)
    t = R.read_columns(path, ["uid", "text"])
    texts = R.column_texts(t)
    entity = rules.text_entity_mask(texts, wn.first_synset_offset, offsets)
    keep = L.english_where(spec, texts, entity)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "entity_rule": int(entity.sum())}


def select(run: Run) -> list:
    from .wordnet import find_wordnet_dir, imagenet21k_offsets

    a = run.args
    offsets, source = imagenet21k_offsets(a.synset_list)  # fail here, before the workers, on a bad file
    run.sidecar["wordnet"] = {"dir": str(find_wordnet_dir(a.wordnet_dir)), "version": "WordNet 3.0 (as NLTK's)",
                              "synset_list": source, "synsets": len(offsets)}
    return run.map(_text_based, run.lang, a.wordnet_dir, a.synset_list)


BASELINES = (Baseline("text_based", "English captions naming an ImageNet-21k class (WordNet)", select,
                      columns=("text",), options=(FASTTEXT_MODEL, SYNSET_LIST, WORDNET_DIR),
                      language_id="fasttext"),)

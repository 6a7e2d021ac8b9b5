"""WordNet 3.0 read offline from Debian's files (`apt-get install wordnet-base`: /usr/share/wordnet), and the
ImageNet-21k synset list shipped by timm; together they give the text-based baseline's lookup.

DataComp calls NLTK 3.8.1's `wordnet.synsets(word)[0].offset()`. That is: lower-case the word; for each part
of speech in the order noun, verb, adjective, adverb, find the word's base forms with NLTK's `morphy`
(exception lists, then suffix rules applied repeatedly) and take the index's synset offsets. The first synset
is the first offset of the first base form of the first part of speech that has one. This module re-implements
exactly that, from the `index.*` and `*.exc` files only (the offsets are written in the index).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from sfcomp.errors import BadInputError

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/share/wordnet/dict", "/usr/local/share/wordnet")
POS_ORDER = ("n", "v", "a", "r")
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# NLTK's MORPHOLOGICAL_SUBSTITUTIONS, in its order.
_SUBSTITUTIONS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}


def find_wordnet_dir(explicit: str | os.PathLike | None = None) -> Path:
    candidates = [explicit] if explicit else [os.environ.get("WORDNET_DIR"), *WORDNET_DIRS]
    for c in candidates:
        if c and (Path(c) / "index.noun").is_file():
            return Path(c)
    where = explicit or ", ".join(WORDNET_DIRS)
    raise BadInputError(where, "WordNet 3.0 dictionary files not found (install the Debian package "
                               "`wordnet-base`, or set WORDNET_DIR to a folder holding index.noun)")


class WordNet:
    """Lemma -> first-synset offset, as NLTK 3.8.1's `wordnet.synsets(word)[0].offset()`."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = find_wordnet_dir(root)
        self.index: dict[str, dict[str, list[int]]] = {}
        self.exceptions: dict[str, dict[str, list[str]]] = {}
        for pos, suffix in _FILES.items():
            self._load_index(pos, self.root / f"index.{suffix}")
            self._load_exceptions(pos, self.root / f"{suffix}.exc")
        self.first_synset_offset = lru_cache(maxsize=1 << 20)(self._first_synset_offset)

    def _load_index(self, pos: str, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise BadInputError(path, f"unreadable WordNet index ({e})") from None
        for i, line in enumerate(lines):
            if not line or line.startswith(" "):  # licence header
                continue
            f = line.split()
            try:
                lemma, n_synsets, n_pointers = f[0], int(f[2]), int(f[3])
                start = 4 + n_pointers + 2  # skip pointer symbols, sense_cnt, tagsense_cnt
                offsets = [int(x) for x in f[start : start + n_synsets]]
            except (IndexError, ValueError):
                raise BadInputError(path, f"line {i + 1}: not a WordNet index line") from None
            if len(offsets) != n_synsets or n_synsets == 0:
                raise BadInputError(path, f"line {i + 1}: expected {n_synsets} synset offsets")
            self.index.setdefault(lemma, {})[pos] = offsets

    def _load_exceptions(self, pos: str, path: Path) -> None:
        table: dict[str, list[str]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                terms = line.split()
                if terms:
                    table[terms[0]] = terms[1:]
        self.exceptions[pos] = table

    def _known(self, forms: list[str], pos: str) -> list[str]:
        out, seen = [], set()
        for f in forms:
            if pos in self.index.get(f, ()) and f not in seen:
                out.append(f)
                seen.add(f)
        return out

    def morphy(self, form: str, pos: str) -> list[str]:
        """NLTK's `_morphy(form, pos)`: base forms of `form` that WordNet knows for `pos`."""
        subs = _SUBSTITUTIONS[pos]

        def apply_rules(forms: list[str]) -> list[str]:
            return [f[: -len(old)] + new for f in forms for old, new in subs if f.endswith(old)]

        exc = self.exceptions[pos]
        if form in exc:
            return self._known([form] + exc[form], pos)
        forms = apply_rules([form])
        found = self._known([form] + forms, pos)
        if found:
            return found
        while forms:
            forms = apply_rules(forms)
            found = self._known(forms, pos)
            if found:
                return found
        return []

    def _first_synset_offset(self, word: str) -> int | None:
        w = word.lower()
        for pos in POS_ORDER:
            forms = self.morphy(w, pos)
            if forms:
                return self.index[forms[0]][pos][0]
        return None


def imagenet21k_offsets(path: str | os.PathLike | None = None) -> tuple[frozenset[int], str]:
    """ImageNet-21k synset offsets (`n01234567` -> 1234567) and where they came from.

    Default: timm's `imagenet21k_goog_synsets.txt` (21,843 wnids: Google's ImageNet-21k list, the one DataComp
    downloads as imagenet21k_wordnet_ids.txt).
    """
    if path is None:
        import importlib.metadata
        import importlib.util

        spec = importlib.util.find_spec("timm")  # its file only: importing timm would import torch
        if spec is None or spec.origin is None:
            raise BadInputError("timm", "the ImageNet-21k synset list comes from timm: pip install timm, "
                                        "or pass --synset-list FILE")
        path = Path(spec.origin).parent / "data" / "_info" / "imagenet21k_goog_synsets.txt"
        source = f"timm {importlib.metadata.version('timm')}: data/_info/imagenet21k_goog_synsets.txt"
    else:
        source = str(path)
    try:
        lines = [x.strip() for x in Path(path).read_text().splitlines() if x.strip()]
    except OSError as e:
        raise BadInputError(path, f"unreadable synset list ({e})") from None
    bad = [x for x in lines if len(x) < 2 or x[0] != "n" or not x[1:].isdigit()]
    if bad:
        raise BadInputError(path, f"not a WordNet id list (line {bad[0]!r}; expected e.g. n01440764)")
    return frozenset(int(x[1:]) for x in lines), source

"""DataComp's baseline rules as pure functions over metadata columns (numpy arrays / lists of str).

Each rule returns a boolean keep-mask, row-aligned with its inputs. The semantics are DataComp's
(`baselines/apply_filter.py` at mlfoundations/datacomp 4a8df19), including their quirks:
  * every comparison is `>=` / `<=` as written there, done in the score column's own dtype (float32);
  * basic: words by `str.split()` (> 2), characters by `len` (> 5), `min(w, h) >= 200`, `max / min <= 3.0`;
  * image-based caption filter: tokens by fastText's tokenizer (> 1), `len > 5`;
  * a fraction becomes ONE threshold over the whole pool, the (n+1)-th largest score, n = int(N * f), ties kept.
A missing caption (null) counts as the empty string: it fails every caption rule (DataComp would crash on it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

BASIC_MIN_WORDS = 2  # strictly more than
BASIC_MIN_CHARS = 5  # strictly more than
BASIC_MIN_SIDE = 200
BASIC_MAX_ASPECT = 3.0
IMAGE_CAPTION_MIN_TOKENS = 1  # strictly more than
LAION2B_B32_THRESHOLD = 0.28

# fastText's Dictionary::readWord splits on exactly these bytes; a newline also yields an end-of-sentence token.
_FASTTEXT_SPACES = frozenset(" \n\r\t\v\f\0")
FASTTEXT_EOS = "</s>"


def threshold_for_fraction(scores: np.ndarray, fraction: float) -> np.floating:
    """DataComp's `-np.sort(-scores)[int(N * fraction)]`: the (n+1)-th largest score over the whole pool.

    Keeping `scores >= threshold` then keeps at least n rows (more when the threshold value is tied).
    Computed with np.partition, which gives the identical value without a full sort. NaN scores rank below
    every number, as in np.sort. Edge case: when n == N (fraction 1.0), where DataComp's indexing fails,
    the threshold is -inf, which keeps every row with a numeric score.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n_total = len(scores)
    if n_total == 0:
        raise ValueError("no scores: the pool is empty")
    n = int(n_total * fraction)
    if n >= n_total:
        return scores.dtype.type(-np.inf)
    neg = np.negative(scores)
    return -np.partition(neg, n)[n]


def at_least(scores: np.ndarray, threshold: float) -> np.ndarray:
    """`scores >= threshold`, compared in the scores' dtype as pandas/numpy do for a float32 column."""
    scores = np.asarray(scores)
    t = np.asarray(threshold).astype(scores.dtype) if scores.dtype.kind == "f" else threshold
    return scores >= t


def image_size_mask(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """`min(w, h) >= 200` and `max(w, h) / min(w, h) <= 3.0` (missing sizes fail)."""
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    lo = np.minimum(w, h)
    hi = np.maximum(w, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = hi / lo
    return (lo >= BASIC_MIN_SIDE) & (aspect <= BASIC_MAX_ASPECT)


def _texts(texts: Iterable[str | None]) -> list[str]:
    return ["" if t is None else t for t in texts]


def basic_caption_mask(texts: Sequence[str | None]) -> np.ndarray:
    """`len(text.split()) > 2 and len(text) > 5` (Python's unicode whitespace, code-point length)."""
    t = _texts(texts)
    words = np.fromiter((len(x.split()) for x in t), dtype=np.int64, count=len(t))
    chars = np.fromiter((len(x) for x in t), dtype=np.int64, count=len(t))
    return (words > BASIC_MIN_WORDS) & (chars > BASIC_MIN_CHARS)


def fasttext_tokens(text: str) -> list[str]:
    """fastText's tokenizer (`fasttext.tokenize`): split on ' \\n\\r\\t\\v\\f\\0' only; each newline that ends
    a token run adds an end-of-sentence token `</s>`. Unicode spaces (e.g. U+00A0) are NOT separators."""
    tokens: list[str] = []
    word: list[str] = []
    for c in text:
        if c in _FASTTEXT_SPACES:
            if word:
                tokens.append("".join(word))
                word = []
                if c == "\n":  # fastText puts the newline back; it becomes </s> on the next read
                    tokens.append(FASTTEXT_EOS)
            elif c == "\n":
                tokens.append(FASTTEXT_EOS)
            continue
        word.append(c)
    if word:
        tokens.append("".join(word))
    return tokens


def fasttext_token_count(text: str) -> int:
    if not any(c in _FASTTEXT_SPACES for c in text):
        return 1 if text else 0
    return len(fasttext_tokens(text))


def image_caption_mask(texts: Sequence[str | None], is_english: np.ndarray) -> np.ndarray:
    """The image-based baseline's caption filter: English, more than one fastText token, `len(text) > 5`."""
    t = _texts(texts)
    tokens = np.fromiter((fasttext_token_count(x) for x in t), dtype=np.int64, count=len(t))
    chars = np.fromiter((len(x) for x in t), dtype=np.int64, count=len(t))
    return np.asarray(is_english, dtype=bool) & (tokens > IMAGE_CAPTION_MIN_TOKENS) & (chars > BASIC_MIN_CHARS)


def text_entity_mask(texts: Sequence[str | None], first_synset_offset: Callable[[str], int | None],
                     entity_offsets: set[int] | frozenset[int]) -> np.ndarray:
    """True where some `split()` word's FIRST WordNet synset offset is in `entity_offsets` (ImageNet-21k ids).

    Offsets are compared as bare integers, whatever the synset's part of speech, as DataComp does.
    """
    t = _texts(texts)
    out = np.zeros(len(t), dtype=bool)
    for i, x in enumerate(t):
        for word in x.split():
            off = first_synset_offset(word)
            if off is not None and off in entity_offsets:
                out[i] = True
                break
    return out


"""Captions -> token ids (open_clip's BPE), with bounded work per caption whatever one caption holds.

open_clip's BPE is quadratic in the length of a word (a 30,000-letter word takes seconds, 100,000 over a
minute), and web captions can be megabytes, though only `context_length` tokens are kept. So a caption longer
than `max_caption_chars(context_length)` is cut first: its whitespace runs collapsed (as open_clip's own
cleaning does) and its text cut to that many characters. The bound is 32 characters a token (open_clip's longest
BPE token is 32 characters), so the kept tokens are those of the whole caption for any caption whose kept tokens
are made of text; shorter captions are passed unchanged.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

CHARS_PER_TOKEN = 32
_NON_SPACE = re.compile(r"\S+")
_TOKENIZERS: dict[int, object] = {}


def max_caption_chars(context_length: int) -> int:
    return CHARS_PER_TOKEN * int(context_length)


def cut_caption(text: str, max_chars: int) -> str:
    """`text` when it has at most `max_chars` characters; else its first words, whitespace collapsed, cut to
    `max_chars` (work proportional to what is kept, plus one scan over leading whitespace)."""
    if len(text) <= max_chars:
        return text
    words, n = [], 0
    for m in _NON_SPACE.finditer(text):
        word = text[m.start() : min(m.end(), m.start() + max_chars)]  # no copy of a megabyte-long word
        words.append(word)
        n += len(word) + 1
        if n > max_chars:
            break
    return " ".join(words)[:max_chars]


def tokenizer(context_length: int):
    """open_clip's SimpleTokenizer for `context_length` (one per process and length)."""
    if context_length not in _TOKENIZERS:
        from open_clip.tokenizer import SimpleTokenizer

        _TOKENIZERS[context_length] = SimpleTokenizer(context_length=context_length)
    return _TOKENIZERS[context_length]


def tokenize_captions(texts: Sequence[str], context_length: int, batch: int = 8192) -> np.ndarray:
    """Token ids (N, context_length) int32 of `texts`, each cut to `max_caption_chars` first."""
    tok = tokenizer(context_length)
    limit = max_caption_chars(context_length)
    parts = [tok([cut_caption(t, limit) for t in texts[i : i + batch]]).numpy().astype(np.int32)
             for i in range(0, len(texts), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, context_length), np.int32)

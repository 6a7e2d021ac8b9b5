"""Web-alt-text-like captions for labelled images: templates, synonyms, and attributes read from pixels.

A clean caption names the image's real class (through one of its synonyms) and, often, attributes measured on
the pixels: tone (dark / mid / light), fit (how much of the frame the item fills, relative to its class) and
surface (plain or patterned, from the spread of the item's pixel values). So a model trained on clean pairs has
something real to learn beyond the class word. The words come from a source's `CaptionVocab`
(`CaptionVocab.plain(classnames)` when a source gives only class names). All randomness comes from the caller's
numpy Generator (same seed, same captions).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Words of a vocabulary that states none.
TONE_WORDS = {"dark": ["dark", "black", "deep-toned"], "mid": ["grey", "mid-tone", "muted"],
              "light": ["light", "white", "pale"]}
FIT_WORDS = {"small": ["small", "compact", "narrow"], "medium": ["medium", "regular", "standard"],
             "large": ["large", "big", "wide"]}
SURFACE_WORDS = {"plain": ["plain", "simple", "solid"], "patterned": ["patterned", "textured", "detailed"]}
TEMPLATES = ["{n}", "{t} {n}", "a {t} {n}", "photo of a {t} {n}", "{f} {s} {n}", "a {f} {t} {n}",
             "picture of a {s} {n}", "{n}, {t}", "close up of a {t} {s} {n}", "my {f} {n}"]
# A background darker than this (on the 0-255 luminance scale) is not part of the item.
BACKGROUND_LEVEL = 24


@dataclass(frozen=True)
class CaptionVocab:
    """The words of generated captions. `synonyms[label]` are the nouns for a class (the first is its plain
    name, used by eval captions); templates use {t} tone, {f} fit, {s} surface, {n} noun and one placeholder
    per `fillers` key (words drawn from its list)."""
    synonyms: Sequence[Sequence[str]]
    templates: Sequence[str] = tuple(TEMPLATES)
    tone_words: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(TONE_WORDS))
    fit_words: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(FIT_WORDS))
    surface_words: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(SURFACE_WORDS))
    fillers: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def plain(cls, classnames: Sequence[str]) -> CaptionVocab:
        return cls(synonyms=[[c] for c in classnames])

    @property
    def n_classes(self) -> int:
        return len(self.synonyms)

    def caption(self, label: int, attrs: dict[str, str], rng: np.random.Generator) -> str:
        """One clean, web-like caption for a class with pixel attributes (random template, words and casing)."""
        def pick(xs):
            return xs[int(rng.integers(len(xs)))]
        template = pick(self.templates)
        # every word is drawn whether the template uses it or not: the draws per caption stay fixed
        words = dict(t=pick(self.tone_words[attrs["tone"]]), f=pick(self.fit_words[attrs["fit"]]),
                     s=pick(self.surface_words[attrs["surface"]]), n=pick(self.synonyms[label]))
        words.update({k: pick(v) for k, v in self.fillers.items()})
        text = template.format(**words)
        r = rng.random()
        if r < 0.15:
            text = text.title()
        elif r < 0.2:
            text = text.upper()
        elif r < 0.6:
            text = text[0].upper() + text[1:]
        return text

    def eval_caption(self, label: int, attrs: dict[str, str], rng: np.random.Generator) -> str:
        """A plain descriptive caption (no boilerplate) for the retrieval eval set."""
        def pick(xs):
            return xs[int(rng.integers(len(xs)))]
        return f"a photo of a {pick(self.tone_words[attrs['tone']])} {pick(self.fit_words[attrs['fit']])} " \
               f"{pick(self.surface_words[attrs['surface']])} {self.synonyms[label][0]}"


def luminance(image: np.ndarray) -> np.ndarray:
    """(H,W) grayscale as it is; (H,W,3) RGB -> (H,W) float32 luma (ITU-R BT.601 weights)."""
    if image.ndim == 2:
        return image
    return image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def pixel_attributes(image: np.ndarray, label: int, class_coverage: np.ndarray | None = None) -> dict[str, str]:
    """Tone, fit and surface of one uint8 image (any size, gray or RGB); `class_coverage` = per-class (p33, p66)
    coverage cuts."""
    lum = luminance(image)
    mask = lum > BACKGROUND_LEVEL
    pix = lum[mask] if mask.any() else lum.reshape(-1)
    mean = float(pix.mean())
    tone = "dark" if mean < 95 else ("light" if mean > 165 else "mid")
    cover = float(mask.mean())
    lo, hi = class_coverage[label] if class_coverage is not None else (0.3, 0.5)
    fit = "small" if cover < lo else ("large" if cover > hi else "medium")
    surface = "patterned" if float(pix.std()) > 62 else "plain"
    return {"tone": tone, "fit": fit, "surface": surface}


def coverage(images: np.ndarray) -> np.ndarray:
    """Share of each image's pixels brighter than the background."""
    if images.dtype != object and images.ndim == 3:
        return (images > BACKGROUND_LEVEL).mean(axis=(1, 2))
    return np.array([float((luminance(im) > BACKGROUND_LEVEL).mean()) for im in images])


def class_coverage_cuts(images: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, 2) coverage tertiles per class, so "small"/"large" mean relative to the item's class."""
    cover = coverage(images)
    return np.array([np.quantile(cover[labels == c], [1 / 3, 2 / 3]) if (labels == c).any() else (0.3, 0.5)
                     for c in range(n_classes)])


def random_attributes(rng: np.random.Generator) -> dict[str, str]:
    return {"tone": ["dark", "mid", "light"][int(rng.integers(3))],
            "fit": ["small", "medium", "large"][int(rng.integers(3))],
            "surface": ["plain", "patterned"][int(rng.integers(2))]}

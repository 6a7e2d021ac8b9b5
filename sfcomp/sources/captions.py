"""Web-alt-text-like captions for Fashion-MNIST images: many templates, synonyms, and attributes read from pixels.

A clean caption names the image's real class (through one of several synonyms) and, often, attributes measured
on the pixels: tone (dark / mid / light), fit (how much of the frame the item fills) and surface (plain or
patterned, from the spread of the item's pixel values). So a model trained on clean pairs has something real to
learn beyond the class word. All randomness comes from the caller's numpy Generator (same seed, same captions).
"""
from __future__ import annotations

import numpy as np

# Synonyms per Fashion-MNIST class (index = label).
SYNONYMS: list[list[str]] = [
    ["t-shirt", "tee", "t shirt", "graphic tee", "crew neck tee", "short sleeve top", "tank top"],
    ["trousers", "pants", "jeans", "slacks", "chinos", "joggers", "leggings"],
    ["pullover", "sweater", "jumper", "knit sweater", "sweatshirt", "hoodie", "cardigan"],
    ["dress", "maxi dress", "midi dress", "summer dress", "shift dress", "gown", "sundress"],
    ["coat", "jacket", "winter coat", "parka", "trench coat", "overcoat", "puffer jacket"],
    ["sandal", "sandals", "flip flops", "strappy sandals", "slides", "summer sandals", "heeled sandals"],
    ["shirt", "button-down shirt", "blouse", "flannel shirt", "oxford shirt", "dress shirt", "long sleeve shirt"],
    ["sneaker", "sneakers", "trainers", "running shoes", "canvas shoes", "low top sneakers", "kicks"],
    ["bag", "handbag", "tote bag", "purse", "shoulder bag", "backpack", "clutch"],
    ["ankle boot", "ankle boots", "chelsea boots", "booties", "leather boots", "heeled boots", "combat boots"],
]

TONE_WORDS = {
    "dark": ["black", "dark", "charcoal", "navy", "dark grey"],
    "mid": ["grey", "heather grey", "stone", "taupe", "mid-tone"],
    "light": ["white", "light", "cream", "ivory", "pale"],
}
FIT_WORDS = {  # by share of the frame the item covers, relative to its class
    "small": ["slim", "fitted", "petite", "narrow", "skinny"],
    "medium": ["classic", "regular fit", "everyday", "standard", "casual"],
    "large": ["oversized", "loose", "wide", "relaxed fit", "chunky"],
}
SURFACE_WORDS = {
    "plain": ["plain", "solid", "simple", "minimal", "basic"],
    "patterned": ["patterned", "printed", "textured", "striped", "graphic"],
}
AUDIENCE = ["women's", "men's", "unisex", "kids'", "ladies", "girls'", "boys'"]
BRANDS = ["Nordvik", "Alba & Co", "Urbanline", "KIRA", "Maison Leto", "Fernhill", "Brightwear", "Oskar",
          "Petrova", "Lumen Studio", "Halvard", "Casa Rio", "Tidewell", "Monarch Lane", "Juniper"]
SIZES = ["XS", "S", "M", "L", "XL", "XXL", "size 8", "size 10", "size 12", "EU 38", "EU 42", "one size"]
CONDITIONS = ["new with tags", "brand new", "pre-owned", "like new", "vintage", "gently used", "NWT"]
SHOPS = ["free shipping", "in stock", "sale", "limited edition", "new arrival", "best seller", "clearance"]

# Templates: {t} tone, {f} fit, {s} surface, {n} noun, {a} audience, {b} brand, {z} size, {c} condition, {p} shop.
TEMPLATES: list[str] = [
    "{t} {n}",
    "{a} {t} {n}",
    "{b} {f} {n} in {t}",
    "{t} {s} {n} - {z}",
    "{a} {f} {n} {p}",
    "photo of a {t} {n}",
    "{b} {a} {n}, {t}, {z}",
    "{c} {t} {n} {z}",
    "buy {a} {n} online - {b}",
    "{f} {s} {n}",
    "{n} ({t}) {c}",
    "my new {t} {n}",
    "{b} {n} {z} {t} {p}",
    "close up of {t} {s} {n}",
    "{a} {n} | {b} | {p}",
    "{t} {f} {n} for sale",
    "product image: {s} {t} {n}",
    "{n} in {t}, {f}, {z}",
    "vintage {t} {n}" ,
    "{b} {s} {n}",
    "{t} {n} on white background",
    "selling my {c} {n}, {z}",
    "{a} {s} {t} {n} {z} {p}",
    "the perfect {f} {n}",
    "{n}",
    "{t} {n} - {b} - {c}",
]


def pixel_attributes(image: np.ndarray, label: int, class_coverage: np.ndarray | None = None) -> dict[str, str]:
    """Tone, fit and surface of one (28,28) uint8 image; `class_coverage` = per-class (p33, p66) coverage cuts."""
    mask = image > 24
    pix = image[mask] if mask.any() else image.reshape(-1)
    mean = float(pix.mean())
    tone = "dark" if mean < 95 else ("light" if mean > 165 else "mid")
    cover = float(mask.mean())
    lo, hi = class_coverage[label] if class_coverage is not None else (0.3, 0.5)
    fit = "small" if cover < lo else ("large" if cover > hi else "medium")
    surface = "patterned" if float(pix.std()) > 62 else "plain"
    return {"tone": tone, "fit": fit, "surface": surface}


def class_coverage_cuts(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(10, 2) coverage tertiles per class, so "slim"/"oversized" mean relative to the item's class."""
    cover = (images > 24).mean(axis=(1, 2))
    return np.array([np.quantile(cover[labels == c], [1 / 3, 2 / 3]) if (labels == c).any() else (0.3, 0.5)
                     for c in range(10)])


def caption(label: int, attrs: dict[str, str], rng: np.random.Generator) -> str:
    """One clean, web-like caption for a class with pixel attributes (random template, words and casing)."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    text = pick(TEMPLATES).format(
        t=pick(TONE_WORDS[attrs["tone"]]), f=pick(FIT_WORDS[attrs["fit"]]),
        s=pick(SURFACE_WORDS[attrs["surface"]]), n=pick(SYNONYMS[label]), a=pick(AUDIENCE), b=pick(BRANDS),
        z=pick(SIZES), c=pick(CONDITIONS), p=pick(SHOPS),
    )
    r = rng.random()
    if r < 0.15:
        text = text.title()
    elif r < 0.2:
        text = text.upper()
    elif r < 0.6:
        text = text[0].upper() + text[1:]
    return text


def random_attributes(rng: np.random.Generator) -> dict[str, str]:
    return {"tone": ["dark", "mid", "light"][int(rng.integers(3))],
            "fit": ["small", "medium", "large"][int(rng.integers(3))],
            "surface": ["plain", "patterned"][int(rng.integers(2))]}


def clean_caption_for_eval(label: int, attrs: dict[str, str], rng: np.random.Generator) -> str:
    """A plain descriptive caption (no shop boilerplate) for the retrieval eval set."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    return f"a photo of a {pick(TONE_WORDS[attrs['tone']])} {pick(FIT_WORDS[attrs['fit']])} " \
           f"{pick(SURFACE_WORDS[attrs['surface']])} {SYNONYMS[label][0]}"

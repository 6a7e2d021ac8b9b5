"""Fashion-MNIST (Zalando, MIT licence) from the Debian package `dataset-fashion-mnist`: the demo pool's source.

28x28 grayscale clothing photos on black, 10 classes; captions written like shop alt-text (clothing synonyms,
brands, sizes). Everything Fashion-MNIST-specific lives here; make-pool sees only the `Source` protocol.

The package puts the four idx files at /usr/share/datasets/fashion-mnist/*.gz. Where they are missing, sfcomp
installs the package with apt when it runs as root, and otherwise fails with a one-line message saying how.
`SFCOMP_FASHION_MNIST_DIR` points elsewhere (a folder holding the same four files).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import SfcompError
from .base import Items, Source, apt_install
from .captions import CaptionVocab

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The dataset's own class names, then the everyday names captions use.
CLASSNAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
              "Ankle boot"]
# Plain lower-case names for zero-shot prompts ("a photo of a {c}").
PROMPT_CLASSNAMES = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                     "ankle boot"]
ZEROSHOT_TEMPLATES = [
    "a photo of a {c}.",
    "a photo of the {c}.",
    "a product photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a close-up photo of a {c}.",
    "a {c} for sale.",
    "an item of clothing: {c}.",
]
# Largest side of the image as served (the "original" size: 1x to ~14x the 28 px item), and how often each appears.
SERVED_SIDES = [28, 56, 84, 112, 168, 224, 256, 320, 400]
SERVED_SIDE_P = [0.06, 0.10, 0.10, 0.14, 0.16, 0.18, 0.12, 0.08, 0.06]

# ---- caption words: web-alt-text of clothing shops -------------------------------------------------------------
# Synonyms per class (index = label).
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
    "vintage {t} {n}",
    "{b} {s} {n}",
    "{t} {n} on white background",
    "selling my {c} {n}, {z}",
    "{a} {s} {t} {n} {z} {p}",
    "the perfect {f} {n}",
    "{n}",
    "{t} {n} - {b} - {c}",
]
CAPTIONS = CaptionVocab(synonyms=SYNONYMS, templates=TEMPLATES, tone_words=TONE_WORDS, fit_words=FIT_WORDS,
                        surface_words=SURFACE_WORDS,
                        fillers={"a": AUDIENCE, "b": BRANDS, "z": SIZES, "c": CONDITIONS, "p": SHOPS})


def data_dir() -> Path:
    return Path(os.environ.get("SFCOMP_FASHION_MNIST_DIR", DEFAULT_DIR))


def _missing(folder: Path) -> list[Path]:
    return [folder / name for pair in FILES.values() for name in pair if not (folder / name).is_file()]


def ensure_installed(install: bool = True) -> Path:
    """The folder holding the idx files; installs the Debian package when missing and running as root."""
    folder = data_dir()
    if not _missing(folder):
        return folder
    how = f"install it with `sudo apt-get install {DEBIAN_PACKAGE}` (Debian/Ubuntu) or set " \
          f"SFCOMP_FASHION_MNIST_DIR to a folder holding {', '.join(FILES['train'] + FILES['test'])}"
    if folder != DEFAULT_DIR:
        raise SfcompError(f"{folder}: Fashion-MNIST files missing ({_missing(folder)[0].name}); {how}")
    if install:
        installed, why = apt_install(DEBIAN_PACKAGE)
        if installed and not _missing(folder):
            return folder
        if installed or why:
            raise SfcompError(f"{folder}: Fashion-MNIST missing and `apt-get install {DEBIAN_PACKAGE}` failed "
                              f"({why or 'the files are still missing'}); {how}")
    raise SfcompError(f"{folder}: Fashion-MNIST missing (Debian package {DEBIAN_PACKAGE} not installed); {how}")


def _read_idx(path: Path, offset: int) -> np.ndarray:
    try:
        with gzip.open(path) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)
    except (OSError, EOFError) as e:
        raise SfcompError(f"{path}: unreadable Fashion-MNIST file ({e})") from None


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`(images (N,28,28) uint8, labels (N,) uint8)` of split "train" (60,000) or "test" (10,000)."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = ensure_installed()
    img_name, lab_name = FILES[split]
    images = _read_idx(folder / img_name, 16).reshape(-1, 28, 28)
    labels = _read_idx(folder / lab_name, 8)
    if len(images) != len(labels):
        raise SfcompError(f"{folder / img_name}: {len(images)} images but {len(labels)} labels")
    return images, labels


class FashionMNIST(Source):
    name = "fashion-mnist"
    classnames = PROMPT_CLASSNAMES
    pool_split, eval_split = "train", "test"
    reference_size = 5000
    zeroshot_templates = ZEROSHOT_TEMPLATES
    served_sides, served_side_p = SERVED_SIDES, SERVED_SIDE_P

    def load(self, split: str) -> Items:
        images, labels = load(split)
        return Items(images=images, labels=labels)

    def caption_vocab(self) -> CaptionVocab:
        return CAPTIONS

    def input_paths(self) -> list[Path]:
        return [data_dir()]

"""The demo pool's noise model: which samples are noisy, of what kind, and their noisy captions.

Noise types (see docs/DEMO_POOL.md):
  misaligned_swap    the caption of another pool image of a different class (of another image: unlabelled sources)
  misaligned_class   a fresh caption for a different class (with random attributes; a source with its own
                     texts: the text of an image of another class)
  filename           a camera / CMS file name ("IMG_4821.JPG", "product_20931_main.png")
  boilerplate        shop or page boilerplate ("Click to enlarge", "Add to cart")
  random_words       3-8 random English words unrelated to the item
  non_english        shop phrases in other languages (not about the item)
  random_string      a unique random string of letters and digits, memorisable by a model
  junk_repeated      one of a dozen fixed alt-texts, repeated across the pool
  neardup_conflict   a near-duplicate of another pool image (shifted, re-toned) with another class's caption
and "duplicate" (an exact copy of another sample: image bytes and caption; clean as its source).
Profiles (noise_profiles.json) give the mix of types; `--noise` gives the noisy share.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SfcompError

PROFILES_PATH = Path(__file__).with_name("noise_profiles.json")
NOISE_TYPES = ["misaligned_swap", "misaligned_class", "filename", "boilerplate", "random_words", "non_english",
               "random_string", "junk_repeated", "neardup_conflict"]

BOILERPLATE = ["Click to enlarge", "Add to cart", "image not available", "Product image", "Free shipping on "
               "orders over $50", "View larger image", "Loading...", "Shop now", "See more details",
               "Sold out", "Photo 1 of 4", "Thumbnail", "Quick view", "Customer photo", "No image",
               "Share this item", "Back to top", "placeholder", "Image may contain", "Zoom"]
RANDOM_WORDS = ["river", "engine", "theory", "violin", "harbor", "pepper", "galaxy", "ticket", "cabinet", "orbit",
                "tulip", "battery", "glacier", "museum", "lemon", "planet", "whisper", "ladder", "canyon", "pilot",
                "sandwich", "thunder", "candle", "robot", "meadow", "compass", "falcon", "marble", "volcano",
                "bicycle", "garden", "castle", "tractor", "piano", "island", "rocket", "window", "forest",
                "kitchen", "dolphin", "basket", "mirror", "statue", "tunnel", "anchor", "feather", "carpet"]
NON_ENGLISH = ["Kostenloser Versand ab 50 Euro", "Envío gratis en todos los pedidos", "Livraison offerte dès 49 €",
               "Jetzt kaufen und sparen", "Nuova collezione disponibile", "Spedizione gratuita",
               "Nieuw binnen in onze winkel", "Bestel vandaag, morgen in huis", "Frete grátis para todo o Brasil",
               "Новинки сезона", "Бесплатная доставка", "新品上市 限时优惠", "送料無料 セール中", "무료 배송 이벤트",
               "Zobacz więcej produktów", "Ürün detayları için tıklayın", "Produkt dostępny od ręki",
               "Voir le produit", "Más información aquí", "Ofertas de la semana"]
JUNK_REPEATED = ["image", "Untitled", "default.jpg", "product photo", "No description available", "IMG",
                 "Click here", "photo", "main image", "1", "pic", "item"]
FILENAME_PATTERNS = ["IMG_{d4}.JPG", "DSC{d5}.jpg", "product_{d5}_main.png", "{h8}.jpg", "image-{d3}.jpeg",
                     "P{d7}.JPG", "photo_{d4}_{d2}.jpg", "upload_{h6}_large.webp", "item{d6}.png", "Screenshot {d4}"]
_ALNUM = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))


def load_profiles(path: str | Path = PROFILES_PATH) -> dict[str, dict]:
    with open(path) as f:
        profiles = json.load(f)
    for name, p in profiles.items():
        unknown = set(p["noise_types"]) - set(NOISE_TYPES)
        if unknown:
            raise SfcompError(f"{path}: profile {name!r} has unknown noise types {sorted(unknown)}")
    return profiles


def get_profile(name: str) -> dict:
    profiles = load_profiles()
    if name not in profiles:
        raise SfcompError(f"unknown noise mix {name!r} (choose from: {', '.join(profiles)})")
    return profiles[name]


def assign_types(n: int, noise_frac: float, profile: dict, rng: np.random.Generator) -> np.ndarray:
    """Array of n type names ("clean" or a noise type): exactly round(n*noise_frac) noisy, split by the profile."""
    if not 0.0 <= noise_frac <= 1.0:
        raise SfcompError(f"--noise must be in [0, 1], got {noise_frac}")
    n_noisy = int(round(n * noise_frac))
    names = list(profile["noise_types"])
    w = np.array([profile["noise_types"][k] for k in names], float)
    w = w / w.sum()
    raw = w * n_noisy
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n_noisy - counts.sum()]:  # largest remainders
        counts[i] += 1
    types = np.array(["clean"] * (n - n_noisy) + [k for k, c in zip(names, counts) for _ in range(c)], dtype=object)
    return types[rng.permutation(n)]


def _digits(rng: np.random.Generator, k: int) -> str:
    return "".join(str(int(x)) for x in rng.integers(0, 10, k))


def _hex(rng: np.random.Generator, k: int) -> str:
    return "".join("0123456789abcdef"[int(x)] for x in rng.integers(0, 16, k))


def filename_caption(rng: np.random.Generator) -> str:
    pat = FILENAME_PATTERNS[int(rng.integers(len(FILENAME_PATTERNS)))]
    for k in range(2, 8):
        pat = pat.replace(f"{{d{k}}}", _digits(rng, k)).replace(f"{{h{k}}}", _hex(rng, k))
    return pat


def random_string_caption(rng: np.random.Generator) -> str:
    words = [("".join(_ALNUM[rng.integers(0, len(_ALNUM), int(rng.integers(3, 9)))]))
             for _ in range(int(rng.integers(2, 5)))]
    return " ".join(words)


def junk_caption(kind: str, rng: np.random.Generator) -> str:
    """A caption for an uninformative noise type."""
    def pick(xs):
        return xs[int(rng.integers(len(xs)))]
    if kind == "filename":
        return filename_caption(rng)
    if kind == "boilerplate":
        return pick(BOILERPLATE)
    if kind == "random_words":
        return " ".join(pick(RANDOM_WORDS) for _ in range(int(rng.integers(3, 9))))
    if kind == "non_english":
        return pick(NON_ENGLISH)
    if kind == "random_string":
        return random_string_caption(rng)
    if kind == "junk_repeated":
        return pick(JUNK_REPEATED)
    raise ValueError(f"not an uninformative noise type: {kind}")


def perturb(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A near-duplicate of a uint8 image ((H,W) or (H,W,3)): a 1-2 px shift, a tone change and faint pixel noise."""
    dy, dx = rng.integers(-2, 3, 2)
    if dy == 0 and dx == 0:
        dx = 1
    out = np.roll(image, (int(dy), int(dx)), axis=(0, 1)).astype(np.float32)
    out = out * rng.uniform(0.8, 1.15) + rng.normal(0, 6, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)

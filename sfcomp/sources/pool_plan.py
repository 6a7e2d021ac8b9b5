"""Plan a noisy demo pool from labelled images: uids, captions, noise, image variants, served sizes, failures.

Everything is drawn from one seeded numpy Generator, so the same arguments give the same pool, byte for byte.
The plan is a table (one row per pool sample, in final pool order) plus the (N, 28, 28) pixels each sample shows.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from . import captions as C
from . import noise as NZ

# Largest side of the image as served (the "original" size), and how often each appears.
SERVED_SIDES = np.array([28, 56, 84, 112, 168, 224, 256, 320, 400])
SERVED_SIDE_P = np.array([0.06, 0.10, 0.10, 0.14, 0.16, 0.18, 0.12, 0.08, 0.06])
ASPECTS = np.array([1.0, 0.75, 4 / 3, 3.5])  # width / height; 3.5 is a banner the basic filter rejects
ASPECT_P = np.array([0.78, 0.09, 0.09, 0.04])


@dataclass
class PoolPlan:
    table: "object"          # pandas DataFrame, columns below
    pixels: np.ndarray       # (N, 28, 28) uint8, what each sample's image shows
    ref_indices: np.ndarray  # source indices held out for the reference CLIP models (never in the pool)


def random_uids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct 128-bit uids as 32-char lower-case hex (U32)."""
    while True:
        words = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)
        hexes = np.array([f"{int(a):016x}{int(b):016x}" for a, b in words], dtype="U32")
        if len(np.unique(hexes)) == n:
            return hexes


def encode_image(gray28: np.ndarray, width: int, height: int, fmt: str) -> bytes:
    """The served file: the item scaled to fit a width x height canvas (black padding), RGB, jpg or png."""
    from PIL import Image

    side = min(width, height)
    item = Image.fromarray(gray28, "L").resize((side, side), Image.BILINEAR if side > 28 else Image.NEAREST)
    canvas = Image.new("L", (width, height), 0)
    canvas.paste(item, ((width - side) // 2, (height - side) // 2))
    buf = io.BytesIO()
    if fmt == "png":
        canvas.convert("RGB").save(buf, format="PNG", compress_level=1)
    else:
        canvas.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def corrupt_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """An undecodable file: the real header, then garbage (a broken upload)."""
    head = data[:64]
    return head + rng.integers(0, 256, max(200, len(data) // 3), dtype=np.uint8).tobytes()


def plan_pool(images: np.ndarray, labels: np.ndarray, size: int, noise_frac: float, profile: dict,
              seed: int, ref_size: int = 5000, fail_404: float = 0.03, fail_corrupt: float = 0.01) -> PoolPlan:
    """Plan a pool of `size` samples from `images`/`labels` (the dataset's train split).

    `ref_size` images are held out first (for the reference CLIP models). The pool uses each remaining image
    once; a pool larger than that re-posts images as slightly altered copies ("repost" variants, captioned
    afresh). Exact duplicates (`profile["duplicate_frac"]`) copy another sample's image and caption.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_src = len(images)
    if ref_size >= n_src:
        raise ValueError(f"ref_size {ref_size} leaves no images for the pool ({n_src} in all)")
    order = rng.permutation(n_src)
    ref_indices, supply = np.sort(order[:ref_size]), order[ref_size:]
    cuts = C.class_coverage_cuts(images[supply[:10000]], labels[supply[:10000]])

    n_dup = int(round(size * profile.get("duplicate_frac", 0.0)))
    n_base = size - n_dup
    src = supply[np.arange(n_base) % len(supply)]
    variant = np.where(np.arange(n_base) < len(supply), "original", "repost").astype(object)
    pixels = images[src].copy()
    for i in np.flatnonzero(variant == "repost"):
        pixels[i] = NZ.perturb(pixels[i], rng)
    cls = labels[src].astype(np.int64)

    attrs = [C.pixel_attributes(pixels[i], int(cls[i]), cuts) for i in range(n_base)]
    clean_text = [C.caption(int(cls[i]), attrs[i], rng) for i in range(n_base)]
    types = NZ.assign_types(n_base, noise_frac, profile, rng)
    text = list(clean_text)

    clean_idx = np.flatnonzero(types == "clean")
    by_class = [np.flatnonzero(cls == c) for c in range(10)]
    for i in np.flatnonzero(types != "clean"):
        kind = types[i]
        if kind == "misaligned_swap":
            other = int(rng.integers(9))
            other = other + (other >= cls[i])
            text[i] = clean_text[int(rng.choice(by_class[other]))] if len(by_class[other]) else \
                C.caption(other, C.random_attributes(rng), rng)
        elif kind == "misaligned_class":
            other = int(rng.integers(9))
            other = other + (other >= cls[i])
            text[i] = C.caption(other, C.random_attributes(rng), rng)
        elif kind == "neardup_conflict":
            j = int(clean_idx[rng.integers(len(clean_idx))]) if len(clean_idx) else i
            pixels[i] = NZ.perturb(pixels[j], rng)
            src[i], cls[i], variant[i] = src[j], cls[j], "neardup"
            other = int(rng.integers(9))
            other = other + (other >= cls[i])
            text[i] = C.caption(other, C.pixel_attributes(pixels[i], int(cls[i]), cuts), rng)
        else:
            text[i] = NZ.junk_caption(kind, rng)

    # exact duplicates of random base samples
    dup_of = rng.integers(0, n_base, n_dup) if n_base else np.zeros(0, int)
    src_all = np.concatenate([src, src[dup_of]])
    cls_all = np.concatenate([cls, cls[dup_of]])
    types_all = np.concatenate([types, np.array(["duplicate"] * n_dup, dtype=object)])
    clean_all = np.concatenate([types == "clean", (types == "clean")[dup_of]])
    variant_all = np.concatenate([variant, np.array(["duplicate"] * n_dup, dtype=object)])
    text_all = text + [text[j] for j in dup_of]
    pixels_all = np.concatenate([pixels, pixels[dup_of]])
    base_of = np.concatenate([np.arange(n_base), dup_of])  # duplicates share their source's served file

    # served file: size, aspect, format; failures
    side_base = rng.choice(SERVED_SIDES, n_base, p=SERVED_SIDE_P)
    aspect_base = rng.choice(ASPECTS, n_base, p=ASPECT_P)
    fmt_base = np.where(rng.random(n_base) < 0.8, "jpg", "png").astype(object)
    width = np.where(aspect_base >= 1, side_base, np.round(side_base * aspect_base)).astype(np.int64)
    height = np.where(aspect_base >= 1, np.round(side_base / aspect_base), side_base).astype(np.int64)
    u = rng.random(size)
    fail = np.where(u < fail_404, "404", np.where(u < fail_404 + fail_corrupt, "corrupt", "ok")).astype(object)

    uids = random_uids(rng, size)
    perm = rng.permutation(size)  # final pool order: duplicates land anywhere
    table = pd.DataFrame({
        "uid": uids,
        "text": np.array(text_all, dtype=object)[perm],
        "class": cls_all[perm],
        "clean": clean_all[perm],
        "noise_type": types_all[perm],
        "variant": variant_all[perm],
        "source_index": src_all[perm].astype(np.int64),
        "base": base_of[perm],
        "original_width": width[base_of][perm],
        "original_height": height[base_of][perm],
        "format": fmt_base[base_of][perm],
        "fail": fail,
    })
    return PoolPlan(table=table, pixels=pixels_all[perm], ref_indices=ref_indices)


def encode_served(plan: PoolPlan, rng_seed: int) -> tuple[list[bytes], np.ndarray]:
    """The bytes served for each sample (duplicates share their source's bytes) and their sha256 hex."""
    t = plan.table
    rng = np.random.default_rng(rng_seed)
    by_base: dict[int, bytes] = {}
    out = []
    for i in range(len(t)):
        b = int(t["base"].iat[i])
        if b not in by_base:
            by_base[b] = encode_image(plan.pixels[i], int(t["original_width"].iat[i]),
                                      int(t["original_height"].iat[i]), t["format"].iat[i])
        data = by_base[b]
        if t["fail"].iat[i] == "corrupt":
            data = corrupt_bytes(data, rng)
        out.append(data)
    sha = np.array([hashlib.sha256(d).hexdigest() for d in out], dtype=object)
    return out, sha

"""Plan a noisy demo pool from a source's items: uids, captions, noise, image variants, served sizes, failures.

Everything is drawn from one seeded numpy Generator, so the same arguments give the same pool, byte for byte.
The plan is a table (one row per pool sample, in final pool order) plus the pixels each sample shows (the
source's own sizes and channels; see base.Items). Items with a text keep it as their clean caption; items
without one get a generated caption from their class (captions.CaptionVocab).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

from ..errors import SfcompError
from . import captions as C
from . import noise as NZ
from .base import SERVED_SIDE_P, SERVED_SIDES, as_images, fit_size

ASPECTS = np.array([1.0, 0.75, 4 / 3, 3.5])  # width / height; 3.5 is a banner the basic filter rejects
ASPECT_P = np.array([0.78, 0.09, 0.09, 0.04])


@dataclass
class PoolPlan:
    table: object          # pandas DataFrame, columns below
    pixels: np.ndarray       # (N,H,W[,3]) uint8 (or an object array of them), what each sample's image shows
    ref_indices: np.ndarray  # source indices held out for the reference CLIP models (never in the pool)


def random_uids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct 128-bit uids as 32-char lower-case hex (U32)."""
    while True:
        words = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)
        hexes = np.array([f"{int(a):016x}{int(b):016x}" for a, b in words], dtype="U32")
        if len(np.unique(hexes)) == n:
            return hexes


def encode_image(item: np.ndarray, width: int, height: int, fmt: str) -> bytes:
    """The served file: the item (H,W gray or H,W,3 RGB uint8) scaled to fit a width x height canvas (black
    padding), RGB, jpg or png. Enlarged items are resampled bilinearly, others nearest (the web's thumbnails)."""
    from PIL import Image

    mode = "L" if item.ndim == 2 else "RGB"
    h0, w0 = item.shape[:2]
    w1, h1 = fit_size(w0, h0, width, height)
    resample = Image.BILINEAR if w1 > w0 or h1 > h0 else Image.NEAREST
    scaled = Image.fromarray(item, mode).resize((w1, h1), resample)
    canvas = Image.new(mode, (width, height), 0)
    canvas.paste(scaled, ((width - w1) // 2, (height - h1) // 2))
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


def plan_pool(images: np.ndarray, labels: np.ndarray | None, size: int, noise_frac: float, profile: dict,
              seed: int, ref_size: int = 5000, fail_404: float = 0.03, fail_corrupt: float = 0.01, *,
              texts: list[str] | None = None, vocab: C.CaptionVocab | None = None,
              served_sides=SERVED_SIDES, served_side_p=SERVED_SIDE_P) -> PoolPlan:
    """Plan a pool of `size` samples from a source's pool split (`images`, `labels`, `texts`, see base.Items).

    `ref_size` images are held out first (for the reference CLIP models). The pool uses each remaining image
    once; a pool larger than that re-posts images as slightly altered copies ("repost" variants, captioned
    afresh). Exact duplicates (`profile["duplicate_frac"]`) copy another sample's image and caption. Without
    `texts`, clean captions are generated from the labels with `vocab`. Misaligned captions come from another
    class where there are labels, else from another sample.
    """
    import pandas as pd

    images = as_images(images)
    generated = texts is None
    if generated:
        if labels is None:
            raise ValueError("items without texts need labels (captions are generated from the class)")
        vocab = vocab or C.CaptionVocab.plain([f"class {c}" for c in range(int(np.max(labels)) + 1)])
    n_classes = vocab.n_classes if vocab is not None else (int(np.max(labels)) + 1 if labels is not None else 0)
    if labels is not None and len(labels) and not 0 <= int(np.min(labels)) <= int(np.max(labels)) < n_classes:
        raise ValueError(f"labels span {int(np.min(labels))}..{int(np.max(labels))}, outside the source's "
                         f"{n_classes} classes")
    classed = labels is not None and n_classes >= 2
    rng = np.random.default_rng(seed)
    n_src = len(images)
    if ref_size >= n_src:
        raise SfcompError(f"the reference split ({ref_size} items) leaves no images for the pool: the source's pool "
                          f"split has {n_src} in all")
    order = rng.permutation(n_src)
    ref_indices, supply = np.sort(order[:ref_size]), order[ref_size:]
    cuts = C.class_coverage_cuts(images[supply[:10000]], labels[supply[:10000]], n_classes) if generated else None

    n_dup = int(round(size * profile.get("duplicate_frac", 0.0)))
    n_base = size - n_dup
    src = supply[np.arange(n_base) % len(supply)]
    variant = np.where(np.arange(n_base) < len(supply), "original", "repost").astype(object)
    pixels = images[src].copy()
    for i in np.flatnonzero(variant == "repost"):
        pixels[i] = NZ.perturb(pixels[i], rng)
    cls = labels[src].astype(np.int64) if labels is not None else np.full(n_base, -1, np.int64)

    if generated:
        attrs = [C.pixel_attributes(pixels[i], int(cls[i]), cuts) for i in range(n_base)]
        clean_text = [vocab.caption(int(cls[i]), attrs[i], rng) for i in range(n_base)]
    else:
        clean_text = [texts[int(k)] for k in src]
    types = NZ.assign_types(n_base, noise_frac, profile, rng)
    text = list(clean_text)

    def other_class(c: int) -> int:
        o = int(rng.integers(n_classes - 1))
        return o + (o >= c)

    def other_sample(i: int) -> int:
        if n_base < 2:
            return i
        o = int(rng.integers(n_base - 1))
        return o + (o >= i)

    def text_of_class(c: int, i: int) -> str:
        """The clean caption of a random sample of class c (another sample's, when c has none)."""
        return clean_text[int(rng.choice(by_class[c]))] if len(by_class[c]) else clean_text[other_sample(i)]

    clean_idx = np.flatnonzero(types == "clean")
    by_class = [np.flatnonzero(cls == c) for c in range(n_classes)]
    for i in np.flatnonzero(types != "clean"):
        kind = types[i]
        if kind == "misaligned_swap":
            if not classed:
                text[i] = clean_text[other_sample(i)]
                continue
            other = other_class(cls[i])
            if len(by_class[other]) or not generated:
                text[i] = text_of_class(other, i)
            else:
                text[i] = vocab.caption(other, C.random_attributes(rng), rng)
        elif kind == "misaligned_class":
            if not classed:
                text[i] = clean_text[other_sample(i)]
                continue
            other = other_class(cls[i])
            text[i] = vocab.caption(other, C.random_attributes(rng), rng) if generated else text_of_class(other, i)
        elif kind == "neardup_conflict":
            j = int(clean_idx[rng.integers(len(clean_idx))]) if len(clean_idx) else i
            pixels[i] = NZ.perturb(pixels[j], rng)
            src[i], cls[i], variant[i] = src[j], cls[j], "neardup"
            if not classed:
                text[i] = clean_text[other_sample(j)]
                continue
            other = other_class(cls[i])
            text[i] = vocab.caption(other, C.pixel_attributes(pixels[i], int(cls[i]), cuts), rng) if generated \
                else text_of_class(other, i)
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
    side_base = rng.choice(np.asarray(served_sides), n_base, p=np.asarray(served_side_p, float))
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

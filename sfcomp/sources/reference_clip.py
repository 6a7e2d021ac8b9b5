"""Reference CLIP models: the demo pool's stand-in for the OpenAI CLIP models behind DataComp's metadata.

DataComp's pool ships `clip_b32_similarity_score` / `clip_l14_similarity_score` and the npz embeddings, computed
by OpenAI's ViT-B/32 and ViT-L/14: models trained elsewhere, on other data. No pretrained weights may be used
here, so the demo pool gets two small CLIP models trained from scratch (presets `ref-b32`, 512-d, and `ref-l14`,
768-d) on a CLEAN split of the source's pool-split images that is held OUT of the pool (never a pool sample),
each image with a clean caption. They are far weaker than OpenAI's models but play the same role: an outside
model whose image-text cosine the CLIP-score baselines threshold. Training goes through sfcomp.model /
sfcomp.train / sfcomp.score (the same code as the in-loop models).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REFERENCE_PRESETS = {"b32": "ref-b32", "l14": "ref-l14"}


def _fit_one(image: np.ndarray, size: int) -> np.ndarray:
    """One (H,W) or (H,W,3) uint8 image -> (size,size,3): shrunk to fit when larger (bilinear), black-padded."""
    from .base import fit_size

    h, w = image.shape[:2]
    if h > size or w > size:
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize(fit_size(w, h, size, size), Image.BILINEAR))
        h, w = image.shape[:2]
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = image[..., None] if image.ndim == 2 else image
    return out


def to_rgb(images: np.ndarray, size: int) -> np.ndarray:
    """Images of a source (see base.Items) -> (N,size,size,3) uint8: centred on black, shrunk first when larger
    than `size`, grayscale repeated over three channels."""
    n = len(images)
    if images.dtype != object and images.shape[1] <= size and images.shape[2] <= size:
        h, w = images.shape[1:3]
        top, left = (size - h) // 2, (size - w) // 2
        if images.ndim == 3:
            out = np.zeros((n, size, size), np.uint8)
            out[:, top : top + h, left : left + w] = images
            return np.repeat(out[..., None], 3, axis=3)
        out = np.zeros((n, size, size, 3), np.uint8)
        out[:, top : top + h, left : left + w] = images
        return out
    return np.stack([_fit_one(im, size) for im in images]) if n else np.zeros((0, size, size, 3), np.uint8)


def at_image_size(preset: dict, size: int) -> dict:
    """The preset at another input side, keeping its patch grid (so b32's coarse and l14's fine patches stay)."""
    vision = preset["model_cfg"]["vision_cfg"]
    grid = vision["image_size"] // vision["patch_size"]
    vision["image_size"] = preset["image_size"] = int(size)
    vision["patch_size"] = max(1, int(size) // grid)
    return preset


def train_reference(arch: str, images: np.ndarray, texts: list[str], seed: int, out_dir: str | os.PathLike,
                    steps: int | None = None, batch_size: int | None = None, progress: bool = True,
                    image_size: int | None = None):
    """Train (or load, when `out_dir/ref-<arch>.pt` exists) the reference model `arch` ("b32" | "l14") on
    `images` (a source's, see base.Items), at the preset's image size or `image_size`."""
    import torch

    from ..atomic import atomic_open, write_json
    from ..model import create_model, load_preset, tokenize
    from ..train import train_on_arrays

    preset = load_preset(REFERENCE_PRESETS[arch])
    if steps is not None:
        preset["steps"] = int(steps)
        preset["warmup"] = min(preset["warmup"], max(1, steps // 10))
    if batch_size is not None:
        preset["batch_size"] = int(batch_size)
    if image_size is not None and int(image_size) != preset["image_size"]:
        preset = at_image_size(preset, image_size)
    model, tokenizer = create_model(preset, seed=seed)
    ckpt = Path(out_dir) / f"{preset['name']}.pt"
    saved_preset = ckpt.with_suffix(".json")
    if ckpt.exists() and saved_preset.exists() and json.loads(saved_preset.read_text()) == preset:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        model.eval()
        return model, tokenizer, preset
    imgs = to_rgb(images, preset["image_size"])
    toks = tokenize(tokenizer, texts)
    model = train_on_arrays(model, imgs, toks, preset, preset["steps"], seed=seed, device="cpu",
                            progress=progress, desc=f"reference {preset['name']}")
    with atomic_open(ckpt, "wb") as f:
        torch.save(model.state_dict(), f)
    write_json(saved_preset, preset)  # written last: a checkpoint counts only with its preset beside it
    return model, tokenizer, preset


def load_reference(folder: str | os.PathLike, arch: str):
    """(model, tokenizer, preset) of a trained reference model saved in `folder` (e.g. POOL/reference)."""
    import torch

    from ..model import create_model

    path = Path(folder) / f"{REFERENCE_PRESETS[arch]}.pt"
    preset = json.loads(path.with_suffix(".json").read_text())
    model, tokenizer = create_model(preset)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return model, tokenizer, preset


def embed(model, tokenizer, preset: dict, images: np.ndarray, texts: list[str],
          batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(img, txt) embeddings, float32, L2-normalised."""
    from ..model import tokenize
    from ..score import embed_arrays

    parts_i, parts_t = [], []
    for s in range(0, len(texts), 8192):  # bounded memory for the padded RGB copies
        imgs = to_rgb(images[s : s + 8192], preset["image_size"])
        toks = tokenize(tokenizer, texts[s : s + 8192])
        i, t = embed_arrays(model, imgs, toks, batch_size=batch_size, device="cpu", preset=preset)
        parts_i.append(i)
        parts_t.append(t)
    return np.concatenate(parts_i), np.concatenate(parts_t)


def to_float16_unit(x: np.ndarray) -> np.ndarray:
    """float16 rows of unit L2 norm (normalised in float32, then cast), as DataComp's npz stores them."""
    x = x.astype(np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x.astype(np.float16)

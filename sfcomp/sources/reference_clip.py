"""Reference CLIP models: the demo pool's stand-in for the OpenAI CLIP models behind DataComp's metadata.

DataComp's pool ships `clip_b32_similarity_score` / `clip_l14_similarity_score` and the npz embeddings, computed
by OpenAI's ViT-B/32 and ViT-L/14: models trained elsewhere, on other data. No pretrained weights may be used
here, so the demo pool gets two small CLIP models trained from scratch (presets `ref-b32`, 512-d, and `ref-l14`,
768-d) on a CLEAN split of Fashion-MNIST train images that is held OUT of the pool (never a pool sample), each
image with a clean caption. They are far weaker than OpenAI's models but play the same role: an outside
model whose image-text cosine the CLIP-score baselines threshold. Training goes through sfcomp.model /
sfcomp.train / sfcomp.score (the same code as the in-loop models).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

REFERENCE_PRESETS = {"b32": "ref-b32", "l14": "ref-l14"}


def to_rgb(images28: np.ndarray, size: int) -> np.ndarray:
    """(N,28,28) uint8 -> (N,size,size,3) uint8: black-padded to `size` (Fashion-MNIST's background is black)."""
    n = len(images28)
    if size < 28:
        raise ValueError(f"reference image size {size} < 28")
    pad = size - 28
    out = np.zeros((n, size, size), np.uint8)
    out[:, pad // 2 : pad // 2 + 28, pad // 2 : pad // 2 + 28] = images28
    return np.repeat(out[..., None], 3, axis=3)


def train_reference(arch: str, images28: np.ndarray, texts: list[str], seed: int, out_dir: str | os.PathLike,
                    steps: int | None = None, batch_size: int | None = None, progress: bool = True):
    """Train (or load, when `out_dir/ref-<arch>.pt` exists) the reference model `arch` ("b32" | "l14")."""
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
    model, tokenizer = create_model(preset, seed=seed)
    ckpt = Path(out_dir) / f"{preset['name']}.pt"
    saved_preset = ckpt.with_suffix(".json")
    if ckpt.exists() and saved_preset.exists() and json.loads(saved_preset.read_text()) == preset:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        model.eval()
        return model, tokenizer, preset
    imgs = to_rgb(images28, preset["image_size"])
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


def embed(model, tokenizer, preset: dict, images28: np.ndarray, texts: list[str],
          batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(img, txt) embeddings, float32, L2-normalised."""
    from ..model import tokenize
    from ..score import embed_arrays

    parts_i, parts_t = [], []
    for s in range(0, len(texts), 8192):  # bounded memory for the padded RGB copies
        imgs = to_rgb(images28[s : s + 8192], preset["image_size"])
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

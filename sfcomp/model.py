"""In-loop CLIP models: presets are JSON data (sfcomp/presets/*.json), one factory over open_clip.

A preset is a dict:
    name, model_cfg (open_clip CLIP config: embed_dim, vision_cfg, text_cfg), image_size, context_length,
    mean, std (pixel normalisation), batch_size, lr, wd, warmup, steps | epochs, beta1, beta2, eps,
    grad_clip, precision ("fp32" | "amp_bf16"), cache (true: decode the pool once into a memory-mapped cache;
    false: stream shards), score_batch_size, num_workers.
No pretrained weights are ever loaded; open_clip's BPE tokenizer ships with the package (works offline).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from .errors import BadInputError

PRESET_DIR = Path(__file__).parent / "presets"
REQUIRED_KEYS = ("name", "model_cfg", "image_size", "context_length", "batch_size", "lr", "wd", "warmup",
                 "beta2", "cache")
DEFAULTS: dict[str, Any] = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "beta1": 0.9,
    "eps": 1e-6,
    "grad_clip": None,
    "precision": "fp32",
    "score_batch_size": 1024,
    "num_workers": 0,
}


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str | os.PathLike | dict) -> dict:
    """A preset dict from a name (`tiny`, `datacomp-b32`, `ref-*`) or a JSON file path; defaults filled in."""
    if isinstance(name_or_path, dict):
        preset = dict(name_or_path)
        source = f"preset {preset.get('name', '?')!r}"
    else:
        path = Path(name_or_path)
        if not path.suffix == ".json" or not path.exists():
            named = PRESET_DIR / f"{name_or_path}.json"
            if not named.exists():
                if path.suffix == ".json":
                    raise BadInputError(path, "preset file does not exist")
                raise BadInputError(None, f"unknown preset {str(name_or_path)!r} "
                                          f"(available: {', '.join(available_presets())}, or a .json path)")
            path = named
        try:
            preset = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise BadInputError(path, f"preset is not valid JSON ({e})") from None
        source = str(path)
    missing = [k for k in REQUIRED_KEYS if k not in preset]
    if missing:
        raise BadInputError(source, f"preset lacks key {missing[0]!r}")
    if "steps" not in preset and "epochs" not in preset:
        raise BadInputError(source, "preset needs 'steps' or 'epochs'")
    for k, v in DEFAULTS.items():
        preset.setdefault(k, v)
    cfg = preset["model_cfg"]
    if cfg.get("vision_cfg", {}).get("image_size", preset["image_size"]) != preset["image_size"]:
        raise BadInputError(source, "model_cfg.vision_cfg.image_size differs from image_size")
    if cfg.get("text_cfg", {}).get("context_length", preset["context_length"]) != preset["context_length"]:
        raise BadInputError(source, "model_cfg.text_cfg.context_length differs from context_length")
    return preset


def create_model(preset: dict | str, seed: int | None = None):
    """(model, tokenizer) for a preset: a randomly initialised open_clip CLIP and its BPE tokenizer.

    With `seed`, initialisation is deterministic and does not touch the global RNG state.
    """
    import torch
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    preset = load_preset(preset)
    cfg = json.loads(json.dumps(preset["model_cfg"]))  # deep copy: open_clip may mutate
    cfg["vision_cfg"].setdefault("image_size", preset["image_size"])
    cfg["text_cfg"].setdefault("context_length", preset["context_length"])

    def build():
        return open_clip.CLIP(**cfg, output_dict=True)

    if seed is None:
        model = build()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
    tokenizer = SimpleTokenizer(context_length=preset["context_length"])
    return model, tokenizer


def tokenize(tokenizer, texts: Sequence[str], batch: int = 8192) -> np.ndarray:
    """Token ids (N, context_length) int32 for `texts`, each cut first so BPE's work stays bounded (sfcomp.text)."""
    from .text import cut_caption, max_caption_chars

    limit = max_caption_chars(tokenizer.context_length)
    parts = []
    for i in range(0, len(texts), batch):
        parts.append(tokenizer([cut_caption(t, limit) for t in texts[i : i + batch]]).numpy().astype(np.int32))
    if not parts:
        return np.zeros((0, tokenizer.context_length), np.int32)
    return np.concatenate(parts)




def to_model_input(images_u8, preset: dict, device="cpu"):
    """uint8 (N, H, W, 3) array/tensor -> normalised float (N, 3, H, W) tensor on `device`.

    Conversion happens on the device (a uint8 copy is 4x smaller than float32 to move).
    """
    import torch

    if isinstance(images_u8, np.ndarray):  # memmap views are read-only: torch wants a writable buffer
        images_u8 = np.require(images_u8, requirements=["C", "W"])
    x = torch.as_tensor(images_u8)
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(preset["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(preset["std"], device=device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def to_token_tensor(tokens, device="cpu"):
    """Token ids (N, ctx) array/tensor -> int64 tensor on `device`."""
    import torch

    if isinstance(tokens, np.ndarray):
        tokens = np.require(tokens, requirements=["C", "W"])
    return torch.as_tensor(tokens).to(device, non_blocking=True).long()

"""In-loop CLIP models: presets are JSON data (sfcomp/presets/*.json), one factory over open_clip.

A preset is a dict:
    name, model_cfg (open_clip CLIP config: embed_dim, vision_cfg, text_cfg), image_size, context_length,
    mean, std (pixel normalisation), batch_size, lr, wd, warmup, steps | epochs, beta1, beta2, eps,
    grad_clip, precision ("fp32" | "amp_bf16"), cache (true: decode the pool once into a memory-mapped cache;
    false: stream shards), score_batch_size, num_workers.
A preset file may hold `"extends": BASE` (a preset name, or a .json path relative to the file): it is BASE with
this file's keys merged in, nested dicts (model_cfg, vision_cfg, text_cfg) key by key, so a narrower copy of
`datacomp-b32` names only the widths it changes.
No pretrained weights are ever loaded; open_clip's BPE tokenizer ships with the package (works offline).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import numpy as np

from .errors import BadInputError

LR_SCHEDULES = ("cosine", "const")  # a preset's lr_schedule (open_clip's --lr-scheduler names); the first is the default

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


PRECISIONS = ("fp32", "amp_bf16")  # amp_bf16: bf16 autocast on CUDA (fp32 elsewhere)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


# key -> (what it must be, test); None where the preset may leave a key null
_VALUE_RULES: dict[str, tuple[str, Any]] = {
    "name": ("a string", lambda v: isinstance(v, str)),
    "model_cfg": ("an object (open_clip's CLIP config)", lambda v: isinstance(v, dict)),
    "image_size": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "context_length": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "batch_size": ("an integer >= 2 (a contrastive batch)", lambda v: _is_int(v) and v >= 2),
    "lr": ("a number >= 0", lambda v: _is_num(v) and v >= 0),  # 0: the weights stay as initialised
    "wd": ("a number >= 0", lambda v: _is_num(v) and v >= 0),
    "warmup": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
    "steps": ("an integer >= 1 or null", lambda v: v is None or (_is_int(v) and v >= 1)),
    "epochs": ("a number > 0 or null", lambda v: v is None or (_is_num(v) and v > 0)),
    "beta1": ("a number in [0, 1)", lambda v: _is_num(v) and 0 <= v < 1),
    "beta2": ("a number in [0, 1)", lambda v: _is_num(v) and 0 <= v < 1),
    "eps": ("a number > 0", lambda v: _is_num(v) and v > 0),
    "grad_clip": ("a number > 0 or null", lambda v: v is None or (_is_num(v) and v > 0)),
    "precision": (" or ".join(PRECISIONS), lambda v: v in PRECISIONS),
    "cache": ("true or false", lambda v: isinstance(v, bool)),
    "mean": ("a list of 3 numbers", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_num, v))),
    "std": ("a list of 3 numbers > 0", lambda v: isinstance(v, list) and len(v) == 3
            and all(_is_num(x) and x > 0 for x in v)),
    "score_batch_size": ("an integer >= 1", lambda v: _is_int(v) and v >= 1),
    "num_workers": ("an integer >= 0", lambda v: _is_int(v) and v >= 0),
}


def check_preset_values(preset: dict, source: str | os.PathLike | None) -> None:
    """Each known key's value (types and ranges), so that a typo in a preset is one line, not a traceback from
    deep in training. open_clip checks model_cfg's own keys."""
    for key, (want, ok) in _VALUE_RULES.items():
        if key in preset and not ok(preset[key]):
            raise BadInputError(source, f"preset {key} is {preset[key]!r}, expected {want}")
    if preset.get("steps") is None and preset.get("epochs") is None:
        raise BadInputError(source, "preset needs 'steps' or 'epochs'")
    patch = preset["model_cfg"].get("vision_cfg", {}).get("patch_size")
    if _is_int(patch) and patch > preset["image_size"]:
        raise BadInputError(source, f"preset vision_cfg.patch_size {patch} is larger than image_size "
                                    f"{preset['image_size']}")


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


MAX_EXTENDS = 16


def _preset_file(ref: str | os.PathLike, relative_to: Path | None = None) -> Path | None:
    """The file of a preset name or .json path (a relative path first against `relative_to`); None if none."""
    path = Path(ref)
    if path.suffix == ".json":
        if relative_to is not None and not path.is_absolute() and (relative_to / path).exists():
            return relative_to / path
        return path if path.exists() else None
    named = PRESET_DIR / f"{ref}.json"
    return named if named.exists() else None


def _read_preset_file(path: Path) -> dict:
    try:
        preset = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInputError(path, f"preset is not valid JSON ({e})") from None
    if not isinstance(preset, dict):
        raise BadInputError(path, "preset is not a JSON object")
    return preset


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _resolve_extends(preset: dict, source: str, start: Path | None) -> dict:
    """`preset` (read from the file `start`, if any) merged over its `extends` chain (nearest file wins); the
    result has no `extends` key."""
    seen: list[Path] = [start.resolve()] if start is not None else []
    here = start.parent if start is not None else None
    while "extends" in preset:
        ref = preset.pop("extends")
        if not isinstance(ref, str) or not ref:
            raise BadInputError(source, "'extends' must be a preset name or a .json path")
        path = _preset_file(ref, here)
        if path is None and Path(ref).suffix == ".json":
            raise BadInputError(source, f"extends: preset file {ref!r} does not exist")
        if path is None:
            raise BadInputError(source, f"extends: unknown preset {ref!r} (available: "
                                        f"{', '.join(available_presets())}, or a .json path)")
        if path.resolve() in seen or len(seen) > MAX_EXTENDS:
            raise BadInputError(source, f"extends: the chain loops back to {path}")
        seen.append(path.resolve())
        preset = _deep_merge(_read_preset_file(path), preset)
        here = path.parent
    return preset


def load_preset(name_or_path: str | os.PathLike | dict) -> dict:
    """A preset dict from a name (`tiny`, `datacomp-b32`, `ref-*`) or a JSON file path; `extends` resolved,
    defaults filled in."""
    if isinstance(name_or_path, dict):
        preset = copy.deepcopy(name_or_path)  # resolving `extends` must not touch the caller's dict
        source = f"preset {preset.get('name', '?')!r}"
        preset = _resolve_extends(preset, source, None)
    else:
        path = _preset_file(name_or_path)
        if path is None:
            if Path(name_or_path).suffix == ".json":
                raise BadInputError(Path(name_or_path), "preset file does not exist")
            raise BadInputError(None, f"unknown preset {str(name_or_path)!r} "
                                      f"(available: {', '.join(available_presets())}, or a .json path)")
        source = str(path)
        preset = _resolve_extends(_read_preset_file(path), source, path)
    missing = [k for k in REQUIRED_KEYS if k not in preset]
    if missing:
        raise BadInputError(source, f"preset lacks key {missing[0]!r}")
    if "steps" not in preset and "epochs" not in preset:
        raise BadInputError(source, "preset needs 'steps' or 'epochs'")
    for k, v in DEFAULTS.items():
        preset.setdefault(k, v)
    check_preset_values(preset, source)
    cfg = preset["model_cfg"]
    if cfg.get("vision_cfg", {}).get("image_size", preset["image_size"]) != preset["image_size"]:
        raise BadInputError(source, "model_cfg.vision_cfg.image_size differs from image_size")
    if cfg.get("text_cfg", {}).get("context_length", preset["context_length"]) != preset["context_length"]:
        raise BadInputError(source, "model_cfg.text_cfg.context_length differs from context_length")
    if preset.get("lr_schedule", LR_SCHEDULES[0]) not in LR_SCHEDULES:
        raise BadInputError(source, f"lr_schedule must be {' or '.join(LR_SCHEDULES)}, got {preset['lr_schedule']!r}")
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

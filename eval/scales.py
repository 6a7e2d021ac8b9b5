"""Training scales as data (eval/configs/scales.json) and sfcomp's own open_clip model configs.

small, medium, large, xlarge are DataComp's fixed table; `tiny` is a CPU scale for this project's demo pool.
The tiny model (eval/configs/models/*.json) is registered with open_clip by name before it is created.
"""
from __future__ import annotations

import json
from pathlib import Path

from sfcomp.errors import BadInputError

CONFIG_DIR = Path(__file__).parent / "configs"
SCALES_FILE = CONFIG_DIR / "scales.json"
MODEL_CONFIG_DIR = CONFIG_DIR / "models"
REQUIRED = ("model", "batch_size", "learning_rate", "warmup", "train_num_samples", "beta2", "wd", "precision",
            "grad_checkpointing", "workers", "num_checkpoints")


def load_scales(path: str | Path = SCALES_FILE) -> dict[str, dict]:
    """{scale name: config} from a scales JSON (keys starting with '_' are comments)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(path, f"unreadable scales file ({e})") from None
    scales = {k: v for k, v in data.items() if not k.startswith("_")}
    for name, cfg in scales.items():
        missing = [k for k in REQUIRED if k not in cfg]
        if missing:
            raise BadInputError(path, f"scale {name!r} lacks key {missing[0]!r}")
    return scales


def available_scales() -> list[str]:
    return sorted(load_scales())


def get_scale(name: str) -> dict:
    scales = load_scales()
    if name not in scales:
        raise BadInputError(None, f"unknown scale {name!r} (available: {', '.join(sorted(scales))})")
    return dict(scales[name])


def register_models() -> None:
    """Make sfcomp's model configs (e.g. `sfcomp-ViT-tiny`) known to open_clip by name. Idempotent."""
    import open_clip

    if not set(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
        open_clip.add_model_config(MODEL_CONFIG_DIR)


# open_clip_train's --precision choices (open_clip_train/params.py; tests/test_eval.py checks them against it)
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32")
SEED_MAX = 2**32 - 1  # open_clip_train seeds numpy with it


def check_train_settings(scale: str, seed: int = 0, samples_seen: int | None = None, precision: str | None = None,
                         nproc: int = 1, shard_size: int | None = None) -> dict:
    """The training arguments, checked before any reshard or training (pure: no torch, no file). Returns the
    scale's config."""
    cfg = get_scale(scale)
    if not 0 <= seed <= SEED_MAX:
        raise BadInputError(None, f"--seed must be between 0 and {SEED_MAX}, got {seed}")
    if precision is not None and precision not in PRECISIONS:
        raise BadInputError(None, f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if nproc < 1:
        raise BadInputError(None, f"--nproc must be >= 1, got {nproc}")
    if shard_size is not None and shard_size < 1:
        raise BadInputError(None, f"--shard-size must be >= 1, got {shard_size}")
    if samples_seen is not None:
        least = int(cfg["num_checkpoints"]) * int(cfg["batch_size"])  # one step in each of the scale's epochs
        if samples_seen < least:
            raise BadInputError(None, f"--samples-seen {samples_seen} is less than one batch in each checkpoint "
                                      f"epoch of scale {scale} ({cfg['num_checkpoints']} x {cfg['batch_size']} = "
                                      f"{least})")
    return cfg

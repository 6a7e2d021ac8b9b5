"""FLOP counts of the loop's models and of the final DataComp training they are weighed against.

Counted by torch's own profiler (`torch.utils.flop_counter.FlopCounterMode`) on a real model from
`sfcomp.model.create_model`, built on the meta device (shapes only: no memory, no arithmetic, about a second
even for ViT-L-14 at batch 90112). What it counts: matrix products and convolutions (mm, addmm, bmm,
convolution and their backward, attention kernels), 2 FLOPs per multiply-add; element-wise ops, norms, softmax
and the optimiser step are not counted (the usual convention: they are a few per cent of a ViT's step).

- training FLOPs per sample at batch B: one step (forward of both towers, open_clip's ClipLoss, backward), counted
  at batch B and divided by B. The loss's B x B logits (image @ text.T and text @ image.T, forward and backward:
  12 B^2 D FLOPs for embeddings of width D) are therefore counted exactly at the batch the step uses: 12 B D
  per sample, which is why the count is keyed by batch size (0.06 % of ViT-B-32's step at B = 4096).
- scoring FLOPs per sample: the forward of both towers as scoring runs it (eval mode, inference mode), counted
  at batch 2 and halved (every op is linear in the batch). --stop heldout's evaluations embed their samples the
  same way: eval FLOPs = scoring FLOPs per sample x samples evaluated (the loss on the embeddings, B x B dot
  products per batch, is left out as for scoring).
Gradient checkpointing (DataComp's trainer uses it) recomputes forwards; model FLOPs leave that out.

Counts are cached in memory per (model shape, batch), never on import; torch is imported only inside functions.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

COUNTER = "torch.utils.flop_counter.FlopCounterMode"
SCORE_COUNT_BATCH = 2


def _shape_key(preset: dict) -> str:
    """What the count depends on: the model config and the input shapes (not precision, lr, ...)."""
    return json.dumps({"model_cfg": preset["model_cfg"], "image_size": preset["image_size"],
                       "context_length": preset["context_length"]}, sort_keys=True)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs torch's counter sees while `fn()` runs (forward, and backward when `fn` calls it)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=64)
def _count(shape_key: str, batch: int, what: str) -> int:
    import torch
    from open_clip import ClipLoss

    from .model import create_model
    from .score import _encode

    shape = json.loads(shape_key)
    # a valid preset around the shape (its training keys do not change the count; the batch is `x` below)
    preset = {"name": "flops", **shape, "batch_size": 2, "lr": 1e-3, "wd": 0.0, "warmup": 0, "beta2": 0.98,
              "cache": False, "steps": 1}
    with torch.device("meta"):
        model, _ = create_model(preset, seed=0)
        x = torch.empty(batch, 3, shape["image_size"], shape["image_size"])
        t = torch.zeros(batch, shape["context_length"], dtype=torch.long)
    if what == "train":  # as sfcomp.train.train_loop runs a step
        model.train()
        loss_fn = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=0, world_size=1)

        def step() -> None:
            out = model(x, t)
            loss_fn(out["image_features"], out["text_features"], out["logit_scale"]).backward()
        return count_flops(step)
    model.eval()  # as sfcomp.score.embed_batches scores

    def score() -> None:
        with torch.inference_mode():
            _encode(model, x, t)
    return count_flops(score)


def train_step_flops(preset: dict, batch: int) -> int:
    """FLOPs of one training step at `batch` (forward + loss + backward)."""
    return _count(_shape_key(preset), int(batch), "train")


def train_flops_per_sample(preset: dict, batch: int) -> float:
    """Training FLOPs per sample at `batch` (the loss's B^2 term included at that batch)."""
    return train_step_flops(preset, batch) / int(batch)


def score_flops_per_sample(preset: dict) -> float:
    """Scoring FLOPs per sample: forward of the image and the text tower."""
    return _count(_shape_key(preset), SCORE_COUNT_BATCH, "score") / SCORE_COUNT_BATCH


def train_flops(preset: dict, steps: int, batch: int) -> float:
    """One model's training: steps x batch x training FLOPs per sample."""
    return steps * batch * train_flops_per_sample(preset, batch)


def named_model_preset(model: str, batch_size: int) -> dict:
    """A preset-shaped dict for an open_clip model config by name (ViT-B-32, ..., or sfcomp's own
    sfcomp-ViT-tiny), for counting with the same factory as the in-loop models."""
    import open_clip

    from .errors import BadInputError
    from .eval.scales import register_models

    register_models()
    cfg = open_clip.get_model_config(model)
    if cfg is None:
        raise BadInputError(None, f"open_clip has no model config {model!r}")
    cfg = json.loads(json.dumps(cfg))
    return {"name": model, "model_cfg": cfg, "image_size": cfg["vision_cfg"]["image_size"],
            "context_length": cfg["text_cfg"]["context_length"], "batch_size": batch_size}


def final_training(reference: dict) -> dict:
    """The final training a loop is weighed against: `reference` (sfcomp.workdir.final_reference) plus the
    model's training FLOPs per sample at the scale's batch and the total (x samples seen)."""
    p = named_model_preset(reference["model"], reference["batch_size"])
    per_sample = train_flops_per_sample(p, reference["batch_size"])
    return {**reference, "train_flops_per_sample": per_sample, "flops": per_sample * reference["samples_seen"]}


def round_compute(preset: dict, steps: int | list[int], batches: list[int], pool_size: int, score_passes: int,
                  samples_evaluated: int | None = None) -> dict:
    """A round's compute: one model per entry of `batches` (its training batch), each trained `steps` steps (or
    `steps[i]`, the steps model i actually took); `score_passes` embeddings of the whole pool of `pool_size` (one
    per model, plus snapshots). `samples_evaluated` (--stop heldout): samples embedded by the held-out
    evaluations, all models and evaluations together, counted at the scoring FLOPs per sample (`eval_flops`)."""
    per_model = [int(s) for s in steps] if isinstance(steps, list) else [steps] * len(batches)
    per_sample = {str(b): train_flops_per_sample(preset, b) for b in sorted(set(batches))}
    train = sum(train_flops(preset, s, b) for s, b in zip(per_model, batches))
    score_per = score_flops_per_sample(preset)
    scored = pool_size * score_passes
    out = {"steps_per_model": per_model, "batch_per_model": list(batches),
           "samples_trained": int(sum(s * b for s, b in zip(per_model, batches))), "samples_scored": int(scored),
           "train_flops_per_sample": per_sample, "score_flops_per_sample": score_per,
           "train_flops": float(train), "score_flops": float(scored * score_per),
           "total_flops": float(train + scored * score_per)}
    if samples_evaluated is not None:
        evaluated = float(samples_evaluated * score_per)
        out.update(samples_evaluated=int(samples_evaluated), eval_flops=evaluated,
                   total_flops=float(train + scored * score_per + evaluated))
    return out

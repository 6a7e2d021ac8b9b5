"""Train an open_clip CLIP on a mix with open_clip's ClipLoss, AdamW and a cosine schedule with warmup.

One code path for a single process and for torchrun: when torch.distributed is initialised, the model is
wrapped in DistributedDataParallel (gloo on CPU, nccl on GPU), every rank draws the same global batch order
from the seed and takes its own slice of each global batch, and ClipLoss gathers features across ranks, so
the global contrastive batch is the preset's batch size whatever the world size.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .model import to_model_input, to_token_tensor


def dist_info() -> tuple[int, int]:
    """(rank, world_size); (0, 1) when torch.distributed is not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """open_clip's schedule: linear warmup to base_lr, then cosine decay to 0 at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


def learning_rate(step: int, preset: dict, total: int) -> float:
    """The preset's `lr_schedule` (checked by `sfcomp.model.load_preset`): `cosine` (default), to 0 at `total`;
    `const`, warmup then `lr` throughout, so that a model early-stopped before `total` was not on a schedule tied
    to it."""
    if preset.get("lr_schedule") == "const":
        return preset["lr"] * (step + 1) / preset["warmup"] if step < preset["warmup"] else preset["lr"]
    return cosine_lr(step, preset["lr"], preset["warmup"], total)


def make_optimizer(model, preset: dict):
    """AdamW; no weight decay on gains, biases, embeddings' scale and logit_scale (as open_clip's trainer)."""
    import torch

    def exclude(name, p):
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if exclude(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in params if not exclude(n, p)], "weight_decay": preset["wd"]},
    ]
    return torch.optim.AdamW(groups, lr=preset["lr"], betas=(preset["beta1"], preset["beta2"]), eps=preset["eps"])


def steps_for(preset: dict, n_samples: int) -> int:
    """Training steps for a mix of `n_samples`: the preset's `steps`, or `epochs` passes at its batch size."""
    if preset.get("steps") is not None:
        return int(preset["steps"])
    batch = min(preset["batch_size"], max(1, n_samples))
    return max(1, int(math.ceil(preset["epochs"] * n_samples / batch)))


def rank_slices(batch: int, world_size: int) -> list[tuple[int, int]]:
    """[lo, hi) of each rank's rows in a global batch: contiguous, sizes differing by at most one."""
    bounds = [r * batch // world_size for r in range(world_size + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def batch_indices(n: int, batch_size: int, steps: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> Iterator[np.ndarray]:
    """Row indices of this rank's part of each global batch: epochs of a seeded permutation, last partial
    batch dropped; each rank takes a contiguous slice of the global batch (sorted, for memory-mapped reads)."""
    batch = min(batch_size, n)
    if batch < world_size:
        raise ValueError(f"cannot form a batch from {n} samples across {world_size} ranks")
    # the global batch never depends on the world size: when it does not split evenly, some ranks take
    # one row more (rank_slices) and the loss masks the padding (RankBalancedClipLoss)
    lo, hi = rank_slices(batch, world_size)[rank]
    rng = np.random.default_rng(seed)
    done = 0
    while done < steps:
        perm = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            glob = perm[start : start + batch]
            yield np.sort(glob[lo:hi])
            done += 1
            if done >= steps:
                return


class RankBalancedClipLoss:
    """open_clip's ClipLoss (local loss, features gathered with their gradients) for global batches that do not
    split evenly over the ranks: each rank pads its rows to the largest slice, the padding is dropped after the
    gather, and each rank's summed loss is scaled so that DDP's gradient average is the mean over the global
    batch, exactly the loss one process computes on the whole batch."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world = rank, world_size

    def __call__(self, image_features, text_features, logit_scale):
        import torch
        import torch.distributed as dist
        import torch.distributed.nn as dist_nn
        import torch.nn.functional as F

        n = image_features.shape[0]
        sizes = [torch.zeros(1, dtype=torch.long, device=image_features.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([n], device=image_features.device))
        sizes = [int(x.item()) for x in sizes]
        pad = max(sizes) - n

        def gather(x):
            x = F.pad(x, (0, 0, 0, pad))
            parts = dist_nn.all_gather(x)
            return torch.cat([p[:k] for p, k in zip(parts, sizes)], dim=0)

        all_image, all_text = gather(image_features), gather(text_features)
        offset = sum(sizes[: self.rank])
        labels = torch.arange(offset, offset + n, device=image_features.device)
        logits_per_image = logit_scale * image_features @ all_text.T
        logits_per_text = logit_scale * text_features @ all_image.T
        total = (F.cross_entropy(logits_per_image, labels, reduction="sum") +
                 F.cross_entropy(logits_per_text, labels, reduction="sum")) / 2
        return total * self.world / sum(sizes)


def _log_data_wait(wait_s: float, loop_s: float, steps: int, rank: int, device) -> None:
    """With $SFCOMP_DATA_WAIT_LOG set, append one JSON line: the loop's data-wait and wall seconds, its steps and,
    on CUDA, the peak memory torch allocated (bytes)."""
    path = os.environ.get("SFCOMP_DATA_WAIT_LOG")
    if not path:
        return
    import torch

    peak = torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else None
    with open(path, "a") as f:
        f.write(json.dumps({"rank": rank, "steps": steps, "wait_s": wait_s, "loop_s": loop_s,
                            "peak_bytes": peak}) + "\n")


def train_loop(model, batches: Iterable, preset: dict, steps: int, device="cpu", progress: bool = True,
               on_step: Callable[[int, object], None] | None = None, desc: str = "train"):
    """Core loop over `batches` of (images_u8 (b,H,W,3), tokens (b,ctx)) for `steps` optimiser steps.

    `on_step(step, model)` is called after each step (e.g. to take score snapshots during training); when it
    returns True, training stops there (early stopping: `steps` is then a cap). Under torchrun every rank must
    return the same answer at the same step. Returns the (unwrapped) model, in eval mode.
    """
    import torch
    from open_clip import ClipLoss
    from tqdm.auto import tqdm

    rank, world = dist_info()
    model.to(device)
    model.train()
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[torch.device(device).index] if torch.device(device).type == "cuda" else None)
    if world > 1:
        loss_fn = RankBalancedClipLoss(rank, world)
    else:
        loss_fn = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank, world_size=world)
    opt = make_optimizer(model, preset)
    use_amp = preset.get("precision") == "amp_bf16" and torch.device(device).type == "cuda"
    bar = tqdm(total=steps, desc=desc, disable=not progress or rank != 0, leave=False, dynamic_ncols=True)
    step, stop = 0, False
    # data-wait timing (scripts/gpu_check.py): host seconds blocked on the batch iterator vs the loop's seconds
    wait_s, t_loop = 0.0, time.perf_counter()
    it = iter(batches)
    while True:
        t_wait = time.perf_counter()
        try:
            images, tokens = next(it)
        except StopIteration:
            break
        wait_s += time.perf_counter() - t_wait
        if step >= steps:
            break
        lr = learning_rate(step, preset, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x = to_model_input(images, preset, device)
        t = to_token_tensor(tokens, device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            out = net(x, t)
            if isinstance(out, dict):
                out = (out["image_features"], out["text_features"], out["logit_scale"])
            loss = loss_fn(out[0], out[1], out[2])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if preset.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), preset["grad_clip"])
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        stop = bool(on_step(step, model)) if on_step is not None else False
        if step % 10 == 0 or step == steps:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        bar.update(1)
        if stop:
            break
    bar.close()
    _log_data_wait(wait_s, time.perf_counter() - t_loop, step, rank, device)
    if step < steps and not stop:
        raise RuntimeError(f"training data ran out after {step} of {steps} steps")
    model.eval()
    return model


def train_on_arrays(model, images_u8: np.ndarray, tokens: np.ndarray, preset: dict, steps: int, seed: int,
                    device="cpu", progress: bool = True,
                    on_step: Callable[[int, object], None] | None = None, desc: str = "train"):
    """Train `model` on in-memory (or memory-mapped) arrays: images (N,H,W,3) uint8, tokens (N,ctx) int.

    Batches are drawn by a seeded permutation, so the same seed gives the same model (on the same device).
    """
    rank, world = dist_info()
    n = len(images_u8)
    if len(tokens) != n:
        raise ValueError(f"{n} images but {len(tokens)} token rows")

    def batches():
        for idx in batch_indices(n, preset["batch_size"], steps, seed, rank, world):
            yield images_u8[idx], tokens[idx]

    return train_loop(model, batches(), preset, steps, device, progress, on_step, desc)


# ------------------------------------------------------------------------------------------ early stopping
def best_evaluation(losses: list[float], min_delta: float) -> int:
    """Index of the evaluation whose weights early stopping keeps: the last one that improved on the best loss
    before it by more than `min_delta` (the first evaluation counts as an improvement)."""
    best_i, best = 0, None
    for i, loss in enumerate(losses):
        if best is None or loss < best - min_delta:
            best_i, best = i, loss
    return best_i


def should_stop(losses: list[float], patience: int, min_delta: float) -> bool:
    """Stop once the last `patience` evaluations have not improved on the best by more than `min_delta`."""
    return bool(losses) and len(losses) - 1 - best_evaluation(losses, min_delta) >= patience


def clip_loss_of_embeddings(img: np.ndarray, txt: np.ndarray, logit_scale: float) -> float:
    """open_clip's ClipLoss of one batch from its L2-normalised embeddings (rows paired) and the model's
    exp(logit_scale): the mean of image->text and text->image cross-entropy, in float64."""
    logits = logit_scale * np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T

    def ce(z: np.ndarray) -> float:
        m = z.max(1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(z - m).sum(1)))
        return float((lse - np.diag(z)).mean())

    return (ce(logits) + ce(logits.T)) / 2


def recall_miss_of_embeddings(img: np.ndarray, txt: np.ndarray) -> float:
    """1 - the mean of image->text and text->image in-batch recall@1 of one batch of L2-normalised, row-paired
    embeddings (a row counts as retrieved when its own pair scores strictly highest)."""
    sim = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T
    diag = np.diag(sim)
    off = sim - np.diag(np.full(len(diag), np.inf))  # its own pair out of the comparison
    i2t = (diag > off.max(1)).mean()
    t2i = (diag > off.max(0)).mean()
    return float(1.0 - (i2t + t2i) / 2)


def rank_miss_of_embeddings(img: np.ndarray, txt: np.ndarray) -> float:
    """1 - the mean share of in-batch negatives a row's own pair outscores (ties count half), image->text and
    text->image averaged: 0 when every pair beats every negative, about 0.5 for unrelated pairs."""
    sim = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T
    n = len(sim)
    if n < 2:
        return 0.0
    diag = np.diag(sim)
    eye = np.eye(n, dtype=bool)

    def share(beats: np.ndarray, ties: np.ndarray) -> float:
        return float(((beats & ~eye).sum() + 0.5 * (ties & ~eye).sum()) / (n * (n - 1)))

    i2t = share(diag[:, None] > sim, diag[:, None] == sim)
    t2i = share(diag[None, :] > sim, diag[None, :] == sim)
    return 1.0 - (i2t + t2i) / 2


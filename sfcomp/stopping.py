"""--stop heldout: early stopping of one fold model on a fixed sample of the fold it is not trained on.

The loop (`sfcomp.loop.Loop`) passes a `HeldOutStopping` to `sfcomp.train.train_loop` as its `on_step` callback;
the rule's settings come from the preset (`sfcomp.workdir.stop_rule`), the metrics and the stopping decision from
`sfcomp.train` (`rank_miss_of_embeddings`, `should_stop`, `best_evaluation`).
"""
from __future__ import annotations

import time
from typing import Any, Protocol

import numpy as np

from .workdir import eval_every


class Trainer(Protocol):
    """What the rule reads of the loop that trains the model (`sfcomp.loop.Loop`)."""

    stop_rule: dict  # sfcomp.workdir.stop_rule
    preset: dict
    rank: int
    world: int
    data: Any  # sfcomp.data: .embed(model, rows, preset, device, progress) -> (image, text) embeddings
    device: Any


class HeldOutStopping:
    """--stop heldout for one fold model: an `on_step` callback of `sfcomp.train.train_loop`.

    Every `eval_every` steps (and at the cap) the model's `stop_metric` (default `rank`: 1 - the share of in-batch
    negatives each pair outscores; or `loss`, the ClipLoss; or `recall`, 1 - recall@1) is computed, in eval mode
    without gradients, on a fixed seeded sample of its held-out fold (at most `stop_eval_samples` rows) cut into fixed
    batches of the preset's batch size (a batch's loss depends on its size and members: the same batches every
    evaluation; rows beyond whole batches are left out). Training stops when `stop_patience` evaluations in a row
    have not improved on the best by more than `stop_min_delta` (`sfcomp.train.should_stop`); `finish` restores
    the weights of the best evaluation (the point the held-out loss says the model generalised best; the
    evaluations after it are the ones that did not improve).

    Under torchrun every rank holds the same weights (DDP) and the same batches; batch i is embedded by rank
    i % world, the per-batch losses are all-gathered and every rank takes the same mean in the same order, so
    all ranks take the same decision at the same step (one collective per evaluation, every rank calls it).
    """

    def __init__(self, loop: Trainer, held_out: np.ndarray, cap: int, seed: int, timings: dict):
        rule = loop.stop_rule
        self.loop, self.cap, self.timings = loop, cap, timings
        self.every = eval_every(rule, cap)
        self.patience, self.min_delta = int(rule["stop_patience"]), float(rule["stop_min_delta"])
        self.metric = rule["stop_metric"]
        n = min(len(held_out), int(rule["stop_eval_samples"]))
        b = min(loop.preset["batch_size"], n)
        nb = n // b if b >= 2 else 0  # a batch of one has no negatives: its loss is 0
        pick = np.random.default_rng(seed).permutation(len(held_out))[: nb * b]
        self.batches = np.asarray(held_out)[pick].reshape(nb, b if nb else 0)
        self.curve: list[list] = []
        self.best_state: dict | None = None
        self.last_step = 0
        self.ema_decay = rule.get("stop_ema")
        self.ema = None  # the averaged model (stop_ema): evaluated, kept and stopped on in place of the model

    def loss(self, model) -> float:
        """Mean per-batch held-out ClipLoss, or the `stop_metric`'s miss (sfcomp.workdir.STOP_METRICS; identical
        on every rank)."""
        from .distributed import all_gather
        from .train import clip_loss_of_embeddings, rank_miss_of_embeddings, recall_miss_of_embeddings

        metric = {"recall": lambda i, t, _: recall_miss_of_embeddings(i, t),
                  "rank": lambda i, t, _: rank_miss_of_embeddings(i, t)}.get(self.metric, clip_loss_of_embeddings)

        loop = self.loop
        mine = self.batches[loop.rank::loop.world]
        losses: list[float] = []
        training = model.training  # the training model goes back to training, the averaged one stays in eval
        if mine.size:
            rows = np.unique(mine)
            img, txt = loop.data.embed(model, rows, loop.preset, loop.device, progress=False)
            scale = float(model.logit_scale.detach().exp().item())
            pos = np.searchsorted(rows, mine)
            losses = [metric(img[p], txt[p], scale) for p in pos]
        model.train(training)
        if loop.world > 1:
            parts = all_gather(losses)
            losses = [parts[i % loop.world][i // loop.world] for i in range(len(self.batches))]
        return float(sum(losses) / len(losses))

    def update_ema(self, model) -> None:
        """ema <- decay * ema + (1 - decay) * weights (buffers copied); the first call starts it at the weights."""
        import copy

        import torch

        if self.ema is None:
            self.ema = copy.deepcopy(model).eval()
            for q in self.ema.parameters():
                q.grad = None
                q.requires_grad_(False)
            return
        with torch.no_grad():
            for e, p in zip(self.ema.state_dict().values(), model.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)
                else:
                    e.copy_(p)

    def __call__(self, step: int, model) -> bool:
        self.last_step = step
        if self.ema_decay is not None and len(self.batches):
            self.update_ema(model)
        if not len(self.batches) or (step % self.every and step != self.cap):
            return False
        from .train import best_evaluation, should_stop

        t0 = time.time()
        judged = self.ema if self.ema is not None else model
        self.curve.append([step, self.loss(judged)])
        losses = [loss for _, loss in self.curve]
        if best_evaluation(losses, self.min_delta) == len(losses) - 1:
            self.best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
        self.timings["heldout_eval_s"] = self.timings.get("heldout_eval_s", 0.0) + time.time() - t0
        return step < self.cap and should_stop(losses, self.patience, self.min_delta)

    def finish(self, model, fold: int) -> dict:
        """Restore the best evaluation's weights; the model's stop record (stop_f{f}.json, done.json, report)."""
        from .train import best_evaluation

        losses = [loss for _, loss in self.curve]
        best = best_evaluation(losses, self.min_delta) if losses else None
        # the best evaluation's weights (with stop_ema: the averaged ones, even at the last evaluation)
        if best is not None and self.best_state is not None and (best != len(losses) - 1 or self.ema is not None):
            model.load_state_dict(self.best_state)
        self.best_state, self.ema = None, None
        taken = self.last_step
        n_batches, b = self.batches.shape
        return {"fold": fold, "cap": self.cap, "steps": taken,
                "stop_reason": "cap" if taken >= self.cap else f"no improvement for {self.patience} evaluations",
                "eval_every": self.every, "patience": self.patience, "min_delta": self.min_delta,
                "eval_samples": int(n_batches * b), "eval_batch_size": int(b),
                "samples_evaluated": int(len(self.curve) * n_batches * b),
                "kept": "best evaluation" if best is not None else "last step (held-out fold too small to evaluate)",
                "best_step": self.curve[best][0] if best is not None else taken,
                "metric": self.metric, **({"ema": self.ema_decay} if self.ema_decay is not None else {}),
                "heldout_curve": self.curve}

"""Self-filtering rounds: train on the mix, score every pool sample, select the next mix.

A round k, top to bottom (`Loop.run_round`):
    1. mix        round 0: the whole pool or a uniform sample; round k > 0: round k-1's next_mix.npy
                  -> round_k/mix.npy
    2. train      `folds` models (one per fold, each on the mix minus its fold: `sfcomp.crossfit`; one model on
                  the whole mix when folds == 1) -> model_f{f}.pt, so a killed round resumes after it (an
                  unreadable one is retrained: same seeds, same model). `--stop heldout`: the steps are a cap;
                  each model is evaluated on its held-out fold and stops when that loss stops improving
                  (`sfcomp.stopping`) -> stop_f{f}.json (steps, cap, reason, held-out curve), written before
                  model_f{f}.pt
    3. score      every model embeds every pool sample: one cosine per (sample, model), plus snapshots taken
                  during training; each registered score type (`sfcomp.scoretypes`) turns them into a column
                  -> scores.npy (+.json) (sfcomp.scorefile format; streamed presets leave out samples no model
                  could read), emb_sample.npz (the k-means sample of the drift report)
    4. select     top-scored by `--score` UNION uniform random from the whole pool -> next_mix.npy (+.json)
    5. report     report.json, report.png; W/final_scores.npy; done.json, the completion marker, last. The
                  report, done.json and final_scores.npy.json carry `compute`: the round's steps per model,
                  samples trained and scored, train / score / total FLOPs (`sfcomp.flops`), the run's totals so
                  far and `cost_ratio` to the final training of the pool's scale (`sfcomp.workdir.final_reference`)

`run(rounds, budget=R)` keeps the whole run within R x the final training: a round runs only if its worst case
(every model to its cap, with every held-out evaluation; `round_estimate`) fits what is left. When it does not,
the round's cap is lowered to the most steps that fit (the stopping rule then works inside that cap, recorded in
round_k/budget_cap.json so that a resumed round keeps it), down to BUDGET_MIN_CAP_FRACTION of the cap; below
that the loop stops before the round (round 0: refused).

Workdir state (config.json and the fingerprint, completion markers, temp files, adopting round 0) lives in
`sfcomp.workdir`; torch.distributed in `sfcomp.distributed`; the score arithmetic in `sfcomp.crossfit` and
`sfcomp.scoretypes`.

Distributed (torchrun): training is DDP; scoring is split across ranks by whole pool shards; each rank writes
scores.rank{r}.npy and rank 0 merges them by uid. Single-process runs take the same path with one rank.
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import uids as U
from .atomic import atomic_open, write_json
from .crossfit import derive_seed, fold_membership, fold_of
from .defaults import LOOP_DEFAULTS as DEFAULTS
from .distributed import all_gather, barrier, check_device, default_device, maybe_init_distributed
from .errors import BadInputError
from .guard import check_loop_dirs, is_url
from .pool import Pool, pool_fingerprint
from .score import cosine_scores
from .scoretypes import ModelCosines, available, compute_fields
from .stopping import HeldOutStopping
from .workdir import (LOCK_FILE, ROUND0_FREE, Workdir, check_accounting, check_round0_frac, check_round_index,
                      check_stop, check_train_shards, eval_every, final_reference, resolve_pool, resolve_stop, stop_rule)

# settings that change only the cost accounting (which final training a run is weighed against), not a file the
# loop makes: outside the fingerprint, so a finished workdir can be re-weighed against another scale
ACCOUNTING = ("scale", "final_samples_seen")
# k-fold cross-fitting past 32 folds adds under 3% to each model's training data, for k models a round
MAX_FOLDS = 32
# each round trains `folds` models and writes a score file of the whole pool (ViT-B-32 at DataComp small: over
# 1 GB a round); 100 is far past the 3-5 rounds any sweep here ran
MAX_ROUNDS = 100
# --budget lowers a round's cap to fit, but not below this share of it: a model trained much shorter than its cap
# is under-trained (50 against 200 fixed steps a model: 0.05-0.20 lower clean share, docs/bench/sweep_steps.md),
# and the loop already has the round before's scores
BUDGET_MIN_CAP_FRACTION = 0.5


def check_rounds(rounds: int) -> None:
    if not 1 <= rounds <= MAX_ROUNDS:
        raise BadInputError(None, f"--rounds must be between 1 and {MAX_ROUNDS}, got {rounds}")


@dataclass
class LoopConfig:
    preset: str | dict = "tiny"
    seed: int = 0
    score: str = DEFAULTS["score"]              # the score field that selects the next mix
    folds: int = DEFAULTS["folds"]              # models per round; >= 2 gives the cross-fitted score
    top_frac: float = DEFAULTS["top_frac"]      # next mix = top fraction of the pool ...
    random_frac: float = DEFAULTS["random_frac"]  # ... union a uniform sample of the whole pool
    round0_frac: float = DEFAULTS["round0_frac"]  # round 0 trains on the whole pool (1.0) or a uniform sample
    train_shards: list[str] | None = None  # train only on rows from these pool shards (scoring covers all)
    steps: int | None = None         # override the preset's steps per model
    snapshots: list[float] = field(default_factory=list)  # fractions of training for ckpt_avg snapshots
    kmeans_k: int = 10               # clusters for the composition-drift report
    scale: str | None = None         # the pool's DataComp scale (None: inferred from its metadata rows)
    final_samples_seen: int | None = None  # the tiny scale's final training (None: eval/configs/scales.json)
    # "heldout": steps are a cap, early stopping on each model's held-out fold; "fixed": the steps. None (the
    # default): heldout unless --steps, --folds 1 or --snapshots is given (sfcomp.workdir.resolve_stop)
    stop: str | None = None
    # every round's fold model f continues from the round before's model f (folds fixed across rounds by round 0's
    # uid hash, and every row scored by its own fold's model, so no model ever scores a row it trained on)
    warm_start: bool = False
    # under warm_start, round k's model starts at warm_shrink x round k-1's weights + (1 - warm_shrink) x a new
    # seeded model's ("shrink and perturb", Ash & Adams 2020): 1 continues as is, 0 is a cold start
    warm_shrink: float = 1.0
    # under warm_start, the continued models' peak learning rate as a fraction of the preset's, reached at once (no
    # warmup: the model is past the start warmup protects); None: the preset's schedule, warmup included
    warm_lr: float | None = None

    def __post_init__(self) -> None:
        self.stop = resolve_stop(self.stop, self.steps, self.folds, self.snapshots)

    def fields(self) -> list[str]:
        """The score file's fields: every registered score type available with these folds and snapshots."""
        return available(self.folds, self.snapshots)

    def loop_settings(self) -> dict:
        """The settings config.json records and the fingerprint covers (the preset goes by content). `stop` only
        when it is not `fixed`: a fixed-steps workdir's config.json and fingerprint stay those made before
        --stop existed."""
        return {k: v for k, v in asdict(self).items() if k != "preset" and k not in ACCOUNTING
                and not (k == "stop" and v == "fixed") and not (k == "warm_start" and not v)
                and not (k == "warm_shrink" and v == 1.0) and not (k == "warm_lr" and v is None)}

    def check(self) -> None:
        """Every setting checked before anything is written (pure: no torch, no file)."""
        if not 1 <= self.folds <= MAX_FOLDS:  # each fold trains and saves a model: 100000 would fill the disk
            raise BadInputError(None, f"--folds must be between 1 and {MAX_FOLDS}, got {self.folds}")
        if self.steps is not None and self.steps < 1:
            raise BadInputError(None, f"--steps must be >= 1, got {self.steps}")
        check_stop(self.stop, self.folds, self.snapshots)  # before --score: folds 1 offers no crossfit either
        if self.score not in self.fields():
            raise BadInputError(None, f"score {self.score!r} is not computed with folds={self.folds} and "
                                      f"snapshots={self.snapshots} (available: {', '.join(self.fields())})")
        for name in ("top_frac", "round0_frac"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise BadInputError(None, f"--{name.replace('_', '-')} must be in (0, 1], got {v}")
        if not 0 <= self.random_frac <= 1:
            raise BadInputError(None, f"--random-frac must be in [0, 1], got {self.random_frac}")
        if not 0 <= self.warm_shrink <= 1:  # also refuses NaN
            raise BadInputError(None, f"--warm-shrink must be in [0, 1], got {self.warm_shrink}")
        if self.warm_shrink != 1.0 and not self.warm_start:
            raise BadInputError(None, "--warm-shrink needs --warm-start (it shrinks the continued weights)")
        if self.warm_lr is not None:
            if not 0 < self.warm_lr <= 1:
                raise BadInputError(None, f"--warm-lr must be in (0, 1] (a fraction of the preset's lr), got {self.warm_lr}")
            if not self.warm_start:
                raise BadInputError(None, "--warm-lr needs --warm-start (it sets the continued models' rate)")
        if any(not 0 < s <= 1 for s in self.snapshots):
            raise BadInputError(None, f"--snapshots are fractions of training in (0, 1], got {self.snapshots}")
        check_accounting(self.scale, self.final_samples_seen)


class Loop:
    """One workdir, one pool, one configuration. `run_round()` runs the next unfinished round."""

    ROUND0_FREE = ROUND0_FREE

    def __init__(self, pool: str, workdir: str | os.PathLike, config: LoopConfig, cache_dir: str | None = None,
                 device: str | None = None, progress: bool = True, cache_workers: int = 1,
                 round0_from: str | os.PathLike | None = None):
        """`round0_from`: the workdir `adopt_round0` will take round 0 from (an input: checked here)."""
        from .cache import default_cache_root
        from .model import load_preset
        from .truth import has_truth, read_truth, truth_path

        config.check()
        self.pool = Pool(resolve_pool(pool))
        self.workdir = Path(workdir)
        check_loop_dirs(self.pool.root, self.workdir, cache_dir, round0_from,  # input protection (sfcomp.guard)
                        default_cache_root=None if is_url(self.pool.root) else default_cache_root(self.pool.root))
        self.config = config
        self.preset = load_preset(config.preset)
        self.stop_rule = stop_rule(self.preset) if config.stop == "heldout" else None
        self.progress = progress
        if cache_workers < 1:
            raise BadInputError(None, f"--cache-workers must be >= 1, got {cache_workers}")
        self.device = check_device(device) or default_device()
        self.rank, self.world = maybe_init_distributed()
        self.wd = Workdir(self.workdir, self.rank)
        self.pool.metadata_files()  # clear errors for a missing/empty pool before anything else
        self.pool_fingerprint = pool_fingerprint(self.pool)
        check_train_shards(config.train_shards, self.pool.shard_files())
        n_rows = self.pool.metadata_row_count()  # parquet footers only
        if n_rows == 0:  # before the cache or the workdir: nothing to train on, score or select
            n_files = len(self.pool.metadata_files())
            raise BadInputError(self.pool.metadata_dir, f"the pool has no rows (its {n_files} metadata file"
                                                        f"{'s are' if n_files != 1 else ' is'} empty)")
        if config.round0_frac < 1:
            check_round0_frac(config.round0_frac, n_rows)
        self.reference = final_reference(config.scale, n_rows, config.final_samples_seen)
        self._final: dict | None = None  # the final training's FLOPs, counted when first needed
        self._mix_sizes: dict[int, int] = {}  # round k -> its mix size (round k-1's next mix), read once
        self.stop_reason: str | None = None  # why `run` stopped early (--budget), for the summary
        config_json = self.wd.check_config(self.pool.root, self.pool_fingerprint, self.preset, self.loop_settings())
        self.fingerprint = self.wd.fingerprint
        self.data = self._open_data(cache_dir, cache_workers)
        self._check_round0_mix()
        # truth.parquet, when it covers every sample of the pool (the report's precision figures)
        truth = read_truth(truth_path(self.pool.root)) if has_truth(self.pool.root) else None
        self.truth = truth if truth is not None and (truth.locate(self.data.uids) >= 0).all() else None
        # what this run made, so that a run refused later (--budget below round 0) can take it back
        self._made = {"config": config_json is not None and self.rank == 0, "workdir": not self.workdir.exists()}
        if config_json is not None:  # only once the pool has opened: a refused run leaves none
            with self._locked():
                if self.rank == 0 and (self.workdir / "config.json").exists():  # a run that started meanwhile
                    self._made["config"] = False
                    self.wd.check_config(self.pool.root, self.pool_fingerprint, self.preset, self.loop_settings())
                elif self.rank == 0:
                    self.wd.write_config(config_json)

    def _check_round0_mix(self) -> None:
        """Refuse, before config.json is written, a pool whose shards hold no sample, or --train-shards naming
        only shards that hold none: round 0 would train on nothing."""
        if len(self.data.uids) == 0:
            raise BadInputError(self.pool.shards_dir, "the pool's shards hold none of its metadata's samples")
        if self.config.round0_frac < 1:  # of the samples the shards hold, which may be fewer than the rows
            check_round0_frac(self.config.round0_frac, len(self.data.uids))
        names = self.config.train_shards
        if names and len(self.data.rows_of_shards(names)) == 0:
            raise BadInputError(None, f"--train-shards {', '.join(map(str, names))} hold none of the pool's "
                                      f"samples: round 0 would train on nothing")

    @contextmanager
    def _locked(self):
        """The workdir's lock (`sfcomp.workdir.WorkdirLock`) around what writes it, on every rank at once: rank 0
        takes it, and its refusal (another run holds the workdir) is raised on every rank."""
        problem = None
        if self.rank == 0:
            try:
                self.wd.lock.acquire()
            except BadInputError as e:
                problem = (e.path, e.problem)
        if self.world > 1:
            problem = all_gather(problem)[0]
        if problem is not None:
            raise BadInputError(*problem)
        try:
            yield
        finally:
            if self.rank == 0:
                self.wd.lock.release()

    def _open_data(self, cache_dir, cache_workers):
        from .cache import build_cache, cache_dir_for
        from .data import CachedPoolData

        if self.preset["cache"]:
            root = Path(cache_dir) if cache_dir else cache_dir_for(self.pool.root, self.preset,
                                                                   fingerprint=self.pool_fingerprint)
            if self.rank == 0:  # one builder; shards decode in parallel worker processes
                build_cache(self.pool, self.preset, root, workers=cache_workers, progress=self.progress)
            barrier()
            from .cache import PoolCache

            return CachedPoolData(PoolCache.open(root))
        from .stream import StreamedPoolData

        return StreamedPoolData(self.pool, self.preset)

    def loop_settings(self) -> dict:
        """The config's loop settings, plus --stop heldout's rule as resolved (preset keys or the code's defaults,
        which a later version may change: the fingerprint must not)."""
        settings = self.config.loop_settings()
        if self.stop_rule is not None:
            settings["stop_rule"] = {**self.stop_rule, "stop_eval_every": self.stop_rule["stop_eval_every"]
                                     or "max(5, cap // 20)"}
        return settings

    def round_dir(self, k: int) -> Path:
        return self.wd.round_dir(k)

    def finished_rounds(self) -> int:
        return self.wd.finished_rounds()

    def adopt_round0(self, source: str | os.PathLike) -> bool:
        """Take round 0's models and scores from another workdir (`sfcomp.workdir.Workdir.adopt_round0`): saves
        a round's training and scoring per point of a mix / score-type sweep."""
        with self._locked():
            try:
                adopted = self.wd.adopt_round0(source, self.pool_fingerprint, self.preset, self.loop_settings(),
                                               self.config.score)
            except BadInputError:  # a refused run leaves nothing behind: the config.json (and folder) it made
                if not self._round_started(0):
                    self._take_back()
                raise
        if adopted:
            barrier()
        return adopted

    def run(self, rounds: int, budget: float | None = None) -> list[dict]:
        """Rounds 0..rounds-1 (finished ones kept). With `budget` R the run's FLOPs stay within R x the final
        training (`budget_cap`); when a round does not fit even at BUDGET_MIN_CAP_FRACTION of its cap, the loop
        stops before it and `stop_reason` says so. A budget that does not fit round 0 is refused (BadInputError),
        taking back the config.json and workdir this run made."""
        check_rounds(rounds)
        check_accounting(None, None, budget)
        with self._locked():
            return self._run(rounds, budget)

    def _run(self, rounds: int, budget: float | None) -> list[dict]:
        out = []
        for k in range(rounds):
            done = self.wd.finished(k)
            cap = None
            if done is None and budget is not None:
                final = self.final_training()
                so_far = sum(_round_total(r) for r in out)
                cap, need, detail = self.budget_cap(k, budget * final["flops"] - so_far)
                if cap is None:
                    where = (f"the final training ({final['scale']}: {final['model']}, {final['samples_seen']} "
                             f"samples seen)")
                    if k == 0:
                        self._take_back()
                        raise BadInputError(None, f"--budget {budget:g} does not fit round 0: {detail}, its "
                                                  f"{need:.3g} FLOPs at most are {need / final['flops']:.4g} x {where}")
                    self.stop_reason = (f"stopped before round {k}: {detail}, its {need:.3g} FLOPs at most would "
                                        f"take the loop to {(so_far + need) / final['flops']:.4g} x {where}, past "
                                        f"--budget {budget:g}")
                    break
            out.append(done if done is not None else self.run_round(k, budget_cap=cap))
        return out

    def budget_cap(self, k: int, left: float) -> tuple[int | None, float, str]:
        """Round k's steps per model within `left` FLOPs: its cap when the worst case fits, else the most steps
        that fit, not below BUDGET_MIN_CAP_FRACTION of the cap. A cap that a killed run of this round recorded is
        kept (its partial models follow that cap's schedule). Returns (steps or None, the worst-case FLOPs of
        the smallest steps tried, what was tried)."""
        full = self.round_cap(k)
        recorded = self.wd.read_budget_cap(k)
        if self.wd.scored(k):  # trained and scored by a killed run (or adopted): counted as it ran
            steps = recorded or full
            stops = [self._read_stop(k, f) for f in range(max(1, self.config.folds))] if self.stop_rule else None
            need = self.round_estimate(k, steps, stops)["total_flops"]
            return (steps if need <= left else None), need, "its models are already trained and scored"
        if recorded is None and self._round_started(k):  # a killed run trained a model at the full cap
            recorded = full
        if recorded is not None:
            need = self.round_estimate(k, recorded)["total_flops"]
            return (recorded if need <= left else None), need, \
                f"a killed earlier run started it at {recorded} of its {full} steps a model"
        low = max(1, math.ceil(full * BUDGET_MIN_CAP_FRACTION))
        for steps in range(full, low - 1, -1):  # a scan, not a bisection: the evaluation interval follows the cap
            need = self.round_estimate(k, steps)["total_flops"]
            if need <= left:
                return steps, need, ""
        return None, need, f"even at {low} of its {full} steps a model"

    def _round_started(self, k: int) -> bool:
        """A killed earlier run left round k a trained model or its scores."""
        return self.wd.scored(k) or any(self.wd.checkpoint(k, f).exists() for f in range(max(1, self.config.folds)))

    def _take_back(self) -> None:
        """Remove what this run wrote before any round started: its config.json, and the workdir it created
        (called holding the workdir's lock)."""
        if self._made["config"]:
            (self.workdir / "config.json").unlink(missing_ok=True)
        if self._made["workdir"] and self.rank == 0 and self.workdir.is_dir() and \
                {p.name for p in self.workdir.iterdir()} <= {LOCK_FILE}:
            self.wd.lock.remove_root_on_release = True  # `run` holds the lock: its file goes, then the folder

    # ---- compute accounting (sfcomp.flops)
    def final_training(self) -> dict:
        """The final training this run is weighed against, with its FLOPs (counted once)."""
        if self._final is None:
            from .flops import final_training

            self._final = final_training(self.reference)
        return self._final

    def _plan(self, k: int, mix_rows: np.ndarray, budget_cap: int | None = None) -> tuple[np.ndarray, int, list[int]]:
        """(fold of each mix row, steps per model, training batch per model) of round k; `budget_cap` lowers
        the steps."""
        from .train import steps_for

        cfg, preset = self.config, self.preset
        folds = cfg.folds
        fold_of_mix = fold_of(self.data.uids[mix_rows], folds, cfg.seed, self._fold_round(k)) if folds >= 2 else \
            np.zeros(len(mix_rows), np.int64)
        steps = cfg.steps if cfg.steps is not None else steps_for(preset, len(mix_rows) * (folds - 1) // max(1, folds)
                                                                 if folds >= 2 else len(mix_rows))
        if budget_cap is not None:
            steps = min(steps, budget_cap)
        sizes = [int((fold_of_mix != f).sum()) for f in range(folds)] if folds >= 2 else [len(mix_rows)]
        return fold_of_mix, steps, [min(preset["batch_size"], n) for n in sizes]

    def _fold_round(self, k: int) -> int:
        """The round whose uid hash draws round k's folds: k, or 0 for every round under warm_start (a model
        continued across rounds must keep its held-out fold)."""
        return 0 if self.config.warm_start else k

    def _snapshot_steps(self, steps: int) -> list[int]:
        return sorted({max(1, min(steps, round(s * steps))) for s in self.config.snapshots} - {steps})

    def _compute(self, steps: int, batches: list[int], stops: list[dict] | None = None) -> dict:
        """One round's FLOPs: every model's training, and every embedding of the whole pool (one per model, one
        per snapshot). With --stop heldout's `stops` (one per model), the steps each model took and its held-out
        evaluations."""
        from .flops import round_compute

        if stops is not None:
            return round_compute(self.preset, [s["steps"] for s in stops], batches, len(self.data.uids),
                                 len(batches), samples_evaluated=sum(s["samples_evaluated"] for s in stops))
        passes = len(batches) * (1 + len(self._snapshot_steps(steps)))
        return round_compute(self.preset, steps, batches, len(self.data.uids), passes)

    def _mix_size(self, k: int) -> int:
        """Round k's training mix size at most, without making the mix: the pool or int(N x --round0-frac) of it
        in round 0, round k-1's next mix after."""
        if k == 0:
            n = len(self.data.uids)
            return n if self.config.round0_frac >= 1 else int(n * self.config.round0_frac)
        if k not in self._mix_sizes:  # a finished round's next mix never changes: read it once
            self.wd.require_finished(k - 1)
            self._mix_sizes[k] = len(U.read_subset(self.round_dir(k - 1) / "next_mix.npy", mmap=True))
        return self._mix_sizes[k]

    def round_cap(self, k: int) -> int:
        """Round k's steps per model (its cap under --stop heldout), as `_plan` sets them."""
        from .train import steps_for

        cfg, n = self.config, self._mix_size(k)
        return cfg.steps if cfg.steps is not None else steps_for(
            self.preset, n * (cfg.folds - 1) // cfg.folds if cfg.folds >= 2 else n)

    def round_estimate(self, k: int, steps: int | None = None, stops: list[dict] | None = None) -> dict:
        """Round k's compute at most, predicted without making its mix (writes nothing): every model trained
        `steps` (default: its cap) at a batch of no more than the mix, and under --stop heldout every
        evaluation to that cap on no more than the mix, or what the models' stop records (`stops`) say they
        took. The real round's count is never above it."""
        cfg = self.config
        n = self._mix_size(k)
        steps = self.round_cap(k) if steps is None else steps
        batches = [min(self.preset["batch_size"], max(1, n))] * max(1, cfg.folds)
        if stops is not None:
            return self._compute(steps, batches, stops)
        if self.stop_rule is not None:
            evals = steps // eval_every(self.stop_rule, steps) + 1
            return self._compute(steps, batches, [{"steps": steps, "samples_evaluated": evals * min(
                max(1, n), self.stop_rule["stop_eval_samples"])}] * len(batches))
        return self._compute(steps, batches)

    def _accounting(self, k: int, compute: dict) -> dict:
        """The round's compute with the run's totals so far (rounds 0..k) and the cost ratio to the final
        training."""
        import torch

        from .flops import COUNTER

        totals = {key: 0 for key in ("samples_trained", "samples_scored", "train_flops", "score_flops",
                                     "total_flops")}
        if "eval_flops" in compute:  # --stop heldout (a round without evaluations adds 0)
            totals.update(samples_evaluated=0, eval_flops=0)
        uncounted = []
        for j in range(k):
            prev = (self.wd.finished(j) or {}).get("compute")
            if prev is None:
                uncounted.append(j)
                continue
            for key in totals:
                totals[key] += prev.get(key, 0)
        for key in totals:
            totals[key] += compute[key]
        final = self.final_training()
        so_far = {"rounds": k + 1, **totals}
        if uncounted:
            so_far["rounds_not_counted"] = uncounted  # finished before sfcomp counted FLOPs
        return {**compute, "run_so_far": so_far, "final_training": final,
                "cost_ratio": totals["total_flops"] / final["flops"],
                "counted_by": f"{COUNTER} (torch {torch.__version__})"}

    # ---- one round
    def run_round(self, k: int | None = None, budget_cap: int | None = None) -> dict:
        """Round k (default: the next unfinished one). `budget_cap`: its steps per model set by --budget
        (`budget_cap`); a cap recorded by a killed earlier run of the round wins."""
        with self._locked():
            return self._run_round(k, budget_cap)

    def _run_round(self, k: int | None, budget_cap: int | None) -> dict:
        k = self.finished_rounds() if k is None else k
        if k < 0:
            check_round_index(self.workdir, k)
        rdir = self.round_dir(k)
        done = self.wd.finished(k)
        if done is not None:
            return done
        if k > 0:
            self.wd.finished(k - 1)  # the mix comes from round k-1: it must be this configuration's
            if self.config.warm_start and not self.wd.scored(k):
                for f in range(max(1, self.config.folds)):
                    if not self.wd.checkpoint(k - 1, f).is_file():
                        raise BadInputError(self.wd.checkpoint(k - 1, f), f"warm start needs round {k - 1}'s fold "
                                                                         f"{f} model; rerun round {k - 1}")
        check_round_index(self.workdir, k)  # before the round folder exists
        made_rdir = not rdir.exists()
        rdir.mkdir(parents=True, exist_ok=True)
        self.wd.remove_stale_temps(rdir)
        cfg = self.config
        t_start = time.time()
        timings = {"train_s": 0.0, "score_s": 0.0, "select_s": 0.0, "report_s": 0.0}

        # 1. the mix
        try:
            mix_rows = self._mix_rows(k)
        except BadInputError:  # a refused round leaves nothing behind: its empty folder, round 0's config.json
            if made_rdir and self.rank == 0 and not any(rdir.iterdir()):
                rdir.rmdir()
            if k == 0 and not self._round_started(0):
                self._take_back()
            raise
        recorded = self.wd.read_budget_cap(k)
        cap = recorded if recorded is not None else budget_cap
        if cap is not None and cap >= self.round_cap(k):
            cap = None  # the budget did not lower it
        if cap is not None and recorded is None and self.rank == 0:  # before any model trains to it
            write_json(self.wd.budget_cap_file(k), {"steps": cap, "cap": self.round_cap(k)})
        plan = self._plan(k, mix_rows, cap)
        scores_path = self.wd.scores_path(k)
        if self.wd.scored(k):
            # killed after its score file was complete: only selection and the report are left to do
            with np.load(rdir / "emb_sample.npz") as z:
                img_emb_sample = (z["rows"], z["emb"])
            counts = {"steps_per_model": None, "models": max(1, cfg.folds), "trained": 0, "scored": 0,
                      "resumed_after_scoring": True}
            if self.stop_rule is not None:  # written before each checkpoint, so there when the scores are
                counts["stopping"] = [self._read_stop(k, f) for f in range(max(1, cfg.folds))]
        else:
            # 2.-3. train the models, score the pool
            img_emb_sample, counts = self._train_and_score(k, mix_rows, plan, timings)

        unread = getattr(self.data, "unread", None)
        if unread is not None and self.world > 1:  # the report counts what every rank could not read
            for rows in all_gather(np.flatnonzero(unread)):
                unread[rows] = True
        result: dict = {}
        if self.rank == 0:
            # 4.-5. select the next mix, report
            compute = self._accounting(k, self._compute(plan[1], plan[2], counts.get("stopping")))
            result = self._select_and_report(k, scores_path, mix_rows, img_emb_sample, timings, compute,
                                             counts.get("stopping"))
            if cap is not None:
                result["budget_cap"] = {"steps": cap, "cap": self.round_cap(k)}
            result.update({"round": k, "fingerprint": self.fingerprint, "world_size": self.world,
                           **{c: v for c, v in counts.items() if c not in ("trained", "scored")},
                           "train_samples_per_s": counts["trained"] / timings["train_s"] if timings["train_s"] else None,
                           "score_samples_per_s": counts["scored"] * self.world / timings["score_s"]
                           if timings["score_s"] else None,
                           "wall_s": time.time() - t_start, **timings, "compute": compute})
            self.wd.write_done(k, result)
        barrier()
        if self.rank != 0:
            result = self.wd.read_done(k)
        return result

    def _mix_rows(self, k: int) -> np.ndarray:
        """Row indices (into data.uids) of round k's training mix; writes round_k/mix.npy."""
        from .select import make_mix

        uids = self.data.uids
        cfg = self.config
        if k == 0:
            if cfg.round0_frac >= 1:
                mix = uids
            else:
                mix, _ = make_mix(uids, None, random_frac=cfg.round0_frac, seed=derive_seed(cfg.seed, "round0"))
        else:
            self.wd.require_finished(k - 1)
            mix = U.read_subset(self.round_dir(k - 1) / "next_mix.npy", mmap=False)
        mask = U.isin_sorted(uids, U.sort_uids(mix))
        n_mix = int(mask.sum())
        if cfg.train_shards:
            shard_mask = np.zeros(len(uids), bool)
            shard_mask[self.data.rows_of_shards(cfg.train_shards)] = True
            mask &= shard_mask
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            why = (f"none of its {n_mix} samples is in --train-shards {', '.join(map(str, cfg.train_shards))}"
                   if cfg.train_shards and n_mix else "it holds none of the pool's samples")
            raise BadInputError(self.round_dir(k), f"round's training mix is empty: {why}")
        if cfg.folds >= 2 and len(np.unique(fold_of(uids[rows], cfg.folds, cfg.seed, self._fold_round(k)))) == 1:
            raise BadInputError(self.round_dir(k), f"round's training mix of {len(rows)} sample"
                                                   f"{'s' if len(rows) != 1 else ''} lies in one fold: that fold's "
                                                   f"model would train on nothing (--folds {cfg.folds}: each model "
                                                   "trains on the mix outside its fold)")
        if self.rank == 0:
            U.write_subset(self.round_dir(k) / "mix.npy", uids[rows])
        return rows

    def _score_rows(self) -> np.ndarray:
        """This rank's rows to score: whole pool shards, shard i to rank i % world."""
        if self.world == 1:
            return np.arange(len(self.data.uids))
        return np.flatnonzero(self.data.shard % self.world == self.rank)

    def _train_and_score(self, k: int, mix_rows: np.ndarray, plan: tuple, timings: dict) -> tuple:
        """Train the round's models on the mix, score this rank's rows, write the (merged) score file."""
        cfg, preset = self.config, self.preset
        folds = cfg.folds
        fold_of_mix, steps, _ = plan
        score_rows = self._score_rows()
        n_models = max(1, folds)
        cos = np.zeros((len(score_rows), n_models), np.float32)
        snaps: list[list[np.ndarray]] = [[] for _ in range(n_models)]
        img_emb_sample = None
        trained_samples = 0
        scored_samples = 0
        stops: list[dict] = []
        for f in range(n_models):
            train_rows = mix_rows[fold_of_mix != f] if folds >= 2 else mix_rows
            held_out = mix_rows[fold_of_mix == f] if self.stop_rule is not None else None
            model, trained, stop = self._trained_model(k, f, train_rows, score_rows, steps, snaps, timings, held_out)
            trained_samples += trained
            if stop is not None:
                stops.append(stop)
            t0 = time.time()
            img, txt = self.data.embed(model, score_rows, preset, self.device, progress=self.progress)
            timings["score_s"] += time.time() - t0
            scored_samples += len(score_rows)
            cos[:, f] = cosine_scores(img, txt)
            if f == 0:  # k-means sample for the drift report: the same pool rows whatever the world size
                take = np.random.default_rng(derive_seed(cfg.seed, "emb", k)).permutation(len(self.data.uids))[:20000]
                mine = np.isin(score_rows, take)
                img_emb_sample = (score_rows[mine], img[mine])
            del model
            barrier()

        if cfg.warm_start and folds >= 2:  # outside the mix too, a row's only held-out model is its own fold's
            fold = fold_of(self.data.uids[score_rows], folds, cfg.seed, self._fold_round(k))
        else:
            fold = fold_membership(score_rows, mix_rows, fold_of_mix)
        unread = getattr(self.data, "unread", None)  # streamed data: samples no model could read are skipped
        moments = self._fold_moments(cos, fold, score_rows, unread) if folds >= 2 else None
        fields = compute_fields(ModelCosines(cos, fold, snaps, folds, moments), cfg.snapshots)
        if unread is not None and unread[score_rows].any():
            keep = ~unread[score_rows]
            fields = {name: v[keep] for name, v in fields.items()}
            score_rows = score_rows[keep]
            sel = ~unread[img_emb_sample[0]]
            img_emb_sample = (img_emb_sample[0][sel], img_emb_sample[1][sel])
        if self.world > 1:  # every rank's part of the sample, in row order
            parts = all_gather(img_emb_sample)
            rows = np.concatenate([p[0] for p in parts])
            order = np.argsort(rows, kind="stable")
            img_emb_sample = (rows[order], np.concatenate([p[1] for p in parts])[order])
        t0 = time.time()
        self._write_scores(k, score_rows, fields, img_emb_sample)
        timings["score_s"] += time.time() - t0
        counts = {"steps_per_model": steps, "models": n_models, "trained": trained_samples, "scored": scored_samples}
        if self.stop_rule is not None:
            counts.update(steps_per_model=[s["steps"] for s in stops], stopping=stops)
        return img_emb_sample, counts

    def _fold_moments(self, cos: np.ndarray, fold: np.ndarray, score_rows: np.ndarray,
                      unread: np.ndarray | None) -> list[tuple[int, int, int]]:
        """Each model's cosine moments on its own held-out fold over every rank's rows (crossfit_z's scale), exact
        integers: the same whatever the world size. Unreadable rows are left out; a fold with no row left is
        replaced by the model's cosines on the whole mix."""
        from .crossfit import add_moments, fold_moments

        readable = np.ones(len(score_rows), bool) if unread is None else ~unread[score_rows]
        out = []
        for f in range(cos.shape[1]):
            for rows in (fold == f, fold >= 0):
                mine = fold_moments(cos[rows & readable, f])
                m = add_moments(all_gather(mine)) if self.world > 1 else mine
                if m[0]:
                    break
            out.append(m)
        return out

    def _trained_model(self, k: int, f: int, train_rows: np.ndarray, score_rows: np.ndarray, steps: int,
                       snaps: list[list[np.ndarray]], timings: dict, held_out: np.ndarray | None = None) -> tuple:
        """Fold f's model: its checkpoint when a killed run left a readable one, else trained (and saved), with
        the fold's snapshots in snaps[f]. With --stop heldout (`held_out`: the mix rows of fold f, which this
        model does not train on), `steps` is a cap and training stops early on the held-out loss
        (`HeldOutStopping`). Returns (model, samples trained on, the stop record or None)."""
        import torch

        cfg, preset = self.config, self.preset
        model = self._initial_model(k, f)
        ckpt, snap_path = self.wd.checkpoint(k, f), self.wd.snapshot_file(k, f)
        stop_path = self.wd.stop_file(k, f)
        if ckpt.exists() and (not cfg.snapshots or snap_path.exists()) and (held_out is None or stop_path.exists()):
            try:
                model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
                if cfg.snapshots:
                    snaps[f] = list(np.load(snap_path))
                return model, 0, self._read_stop(k, f) if held_out is not None else None
            except Exception as e:  # truncated/corrupt: retrain the fold (same seeds, same model)
                print(f"warning: {ckpt}: unreadable checkpoint ({type(e).__name__}); retraining fold {f}",
                      file=sys.stderr)
                model = self._initial_model(k, f)
                snaps[f] = []
        snap_steps = self._snapshot_steps(steps)
        on_step = None
        if snap_steps:
            def on_step(step, m):
                if step in snap_steps:
                    t0 = time.time()
                    a, b = self.data.embed(m, score_rows, preset, self.device, progress=False)
                    snaps[f].append(cosine_scores(a, b))
                    m.train()
                    timings["snapshot_s"] = timings.get("snapshot_s", 0.0) + time.time() - t0
        stopping = None
        if held_out is not None:
            stopping = HeldOutStopping(self, held_out, steps, derive_seed(cfg.seed, "stop", k, f), timings)
            on_step = stopping
        t0, snap0, eval0 = time.time(), timings.get("snapshot_s", 0.0), timings.get("heldout_eval_s", 0.0)
        n_models = max(1, cfg.folds)
        if cfg.warm_start and k > 0 and cfg.warm_lr is not None:  # a continued model: a lower peak, no warmup
            preset = {**preset, "lr": preset["lr"] * cfg.warm_lr, "warmup": 1}
        self.data.train(model, train_rows, preset, steps, seed=derive_seed(cfg.seed, "batches", k, f),
                        device=self.device, progress=self.progress, on_step=on_step,
                        desc=f"round {k} train {f + 1}/{n_models}")
        timings["train_s"] += time.time() - t0 - (timings.get("snapshot_s", 0.0) - snap0) - \
            (timings.get("heldout_eval_s", 0.0) - eval0)
        if cfg.snapshots:
            with atomic_open(snap_path, "wb") as fh:
                np.save(fh, np.stack(snaps[f]) if snaps[f] else np.zeros((0, len(score_rows)), np.float32))
        record, taken = None, steps
        if stopping is not None:
            record = stopping.finish(model, f)
            taken = record["steps"]
        if self.rank == 0:
            if record is not None:  # before the checkpoint: a checkpoint without it is retrained
                write_json(stop_path, record)
            with atomic_open(ckpt, "wb") as fh:
                torch.save({k2: v.cpu() for k2, v in model.state_dict().items()}, fh)
        return model, taken * min(preset["batch_size"], len(train_rows)), record

    def _initial_model(self, k: int, f: int):
        """Fold f's model before round k's training: new (seeded), or under warm_start from round 1 on, round
        k-1's fold f model (its kept weights), shrunk toward the new model by warm_shrink."""
        import torch

        from .model import create_model

        model, _ = create_model(self.preset, seed=derive_seed(self.config.seed, "model", k, f))
        if self.config.warm_start and k > 0:
            prev = self.wd.checkpoint(k - 1, f)
            try:
                kept = torch.load(prev, map_location="cpu", weights_only=True)
                lam = self.config.warm_shrink
                if lam != 1.0:
                    fresh = model.state_dict()
                    kept = {n: lam * v + (1 - lam) * fresh[n].to(v.dtype) if v.is_floating_point() else v
                            for n, v in kept.items()}
                model.load_state_dict(kept)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same bad input
                raise BadInputError(prev, f"warm start needs round {k - 1}'s fold {f} model, unreadable "
                                          f"({type(e).__name__}); rerun round {k - 1}") from None
        return model

    def _read_stop(self, k: int, f: int) -> dict:
        from .workdir import read_json_object

        return read_json_object(self.wd.stop_file(k, f), "early-stopping record", "delete the round folder's "
                                "model_f*.pt to retrain")

    def _write_scores(self, k: int, score_rows: np.ndarray, fields: dict[str, np.ndarray],
                      img_emb_sample: tuple) -> None:
        """emb_sample.npz, then the score file (whose presence marks training + scoring as done); under torchrun
        each rank writes its part and rank 0 merges them by uid."""
        from .scorefile import merge_score_files, write_scores

        rdir, cfg = self.round_dir(k), self.config
        if self.rank == 0:
            with atomic_open(rdir / "emb_sample.npz", "wb") as fh:
                np.savez(fh, rows=img_emb_sample[0], emb=img_emb_sample[1])
        meta = {"round": k, "pool": self.pool.root, "fingerprint": self.fingerprint, "preset": self.preset["name"],
                "seed": cfg.seed, "folds": cfg.folds}
        if self.world == 1:
            write_scores(self.wd.scores_path(k), self.data.uids[score_rows], fields, meta=meta, default=cfg.score)
            return
        part = rdir / f"scores.rank{self.rank}.npy"
        write_scores(part, self.data.uids[score_rows], fields,
                     meta={**meta, "rank": self.rank, "world_size": self.world}, default=cfg.score)
        barrier()
        if self.rank == 0:
            merge_score_files([rdir / f"scores.rank{r}.npy" for r in range(self.world)], self.wd.scores_path(k),
                              meta=meta)

    def _select_and_report(self, k, scores_path, mix_rows, img_emb_sample, timings, compute: dict,
                           stopping: list[dict] | None = None) -> dict:
        from .export import export_subset
        from .report import write_round_report

        cfg = self.config
        rdir = self.round_dir(k)
        t0 = time.time()
        side = export_subset(scores_path, rdir / "next_mix.npy", field=cfg.score, top_frac=cfg.top_frac,
                             random_frac=cfg.random_frac or None, seed=derive_seed(cfg.seed, "select", k),
                             hash_inputs=False, meta={"round": k})
        info = side["counts"]
        mix = U.read_subset(rdir / "next_mix.npy", mmap=False)
        arr = np.load(scores_path, mmap_mode="r")
        uids = np.asarray(arr[["f0", "f1"]]).astype(U.UID_DTYPE)
        timings["select_s"] = time.time() - t0

        t0 = time.time()
        fields = {name: np.asarray(arr[name]) for name in arr.dtype.names[2:]}
        report = write_round_report(
            rdir, k, uids, fields, cfg.score, mix_uids=self.data.uids[mix_rows], next_mix=mix,
            img_emb_sample=(self.data.uids[img_emb_sample[0]], img_emb_sample[1]) if img_emb_sample else None,
            truth=self.truth.aligned(uids) if self.truth is not None else None, top_frac=cfg.top_frac,
            kmeans_k=cfg.kmeans_k, seed=derive_seed(cfg.seed, "kmeans", k), errors=self.data.errors,
            timings=timings, compute=compute, stopping=stopping)
        extra = {"compute": {"run": compute["run_so_far"], "final_training": compute["final_training"],
                             "cost_ratio": compute["cost_ratio"], "counted_by": compute["counted_by"]}}
        if stopping is not None:
            extra["stopping"] = {"round": k, "models": [_stop_summary(s) for s in stopping]}
        self.wd.publish_final(scores_path, extra=extra)
        timings["report_s"] = time.time() - t0
        return {"mix_size": int(len(mix_rows)), "next_mix": info, "report": report.get("summary", {})}


def _round_total(done: dict) -> float:
    """A finished round's total FLOPs from its done.json (0 for a round finished before FLOPs were counted)."""
    return float((done.get("compute") or {}).get("total_flops", 0.0))


def _stop_summary(record: dict) -> dict:
    """A model's stop record without its held-out curve (for final_scores.npy.json)."""
    return {k: v for k, v in record.items() if k != "heldout_curve"}

"""Cross-fit arithmetic of a round, as pure functions (numpy only, no torch, no file).

A round with `folds` >= 2 splits its mix into folds by a seeded hash of each uid; model f trains on the mix minus
fold f. After training, every scored row has one cosine per model (`cos`, shape (rows, models)) and a fold
membership (`fold`: the fold of a mix row, -1 for a row outside the mix). From these:
    crossfit_score   a mix row scored by the one model that did not train on it; a row outside the mix by the
                     mean of all models
    insample_score   a mix row scored by the models that did train on it (one model: its cosine); a row outside
                     the mix by the mean of all models
    snapshot_average insample_score averaged over training snapshots and the final models
The score types built on them are registered in `sfcomp.scoretypes`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from .select import uid_hash


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed for one purpose of one round, e.g. derive_seed(seed, "folds", k)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


def fold_of(uids: np.ndarray, folds: int, seed: int, k: int) -> np.ndarray:
    """Fold (0..folds-1, int64) of each uid in round k: a seeded uid hash, so independent of row order."""
    return (uid_hash(uids["f0"], uids["f1"], derive_seed(seed, "folds", k)) %
            np.uint64(max(1, folds))).astype(np.int64)


def fold_membership(score_rows: np.ndarray, mix_rows: np.ndarray, fold_of_mix: np.ndarray) -> np.ndarray:
    """Fold of each scored row, -1 for a row outside the mix (`score_rows`, `mix_rows`: sorted row indices;
    `fold_of_mix`: the fold of each mix row)."""
    fold = np.full(len(score_rows), -1, np.int64)
    pos = np.searchsorted(mix_rows, score_rows)
    pos = np.minimum(pos, max(0, len(mix_rows) - 1))
    in_mix = (mix_rows[pos] == score_rows) if len(mix_rows) else np.zeros(len(score_rows), bool)
    fold[in_mix] = fold_of_mix[pos[in_mix]]
    return fold


def crossfit_score(cos: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold cosine (float32): a mix row by the model of its own fold (which did not train on it)."""
    in_mix = fold >= 0
    cf = cos.mean(1)
    cf[in_mix] = cos[in_mix, fold[in_mix]]
    return cf.astype(np.float32)


def insample_score(cos: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """In-sample cosine: the mean over the models that trained on a mix row (every model for a row outside the
    mix); with one model, its cosine. float64 from several models, the input's dtype from one."""
    if cos.shape[1] < 2:
        return cos[:, 0].copy()
    in_mix = fold >= 0
    trained = np.ones_like(cos, dtype=bool)  # which models trained on each row
    trained[in_mix, fold[in_mix]] = False
    return (cos * trained).sum(1) / trained.sum(1)


def snapshot_average(snapshots: Sequence[Sequence[np.ndarray]], cos: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """insample_score averaged over the snapshots every model took (`snapshots[f][s]`: model f's cosines at
    snapshot s) and the final models' `cos` (float32)."""
    n_models = cos.shape[1]
    taken = min((len(s) for s in snapshots), default=0)
    per_snap = [insample_score(np.stack([snapshots[f][s] for f in range(n_models)], 1), fold)
                for s in range(taken)] + [insample_score(cos, fold).astype(np.float32)]
    return np.mean(per_snap, 0).astype(np.float32)

"""Cross-fit arithmetic of a round, as pure functions (numpy only, no torch, no file).

A round with `folds` >= 2 splits its mix into folds by a seeded hash of each uid; model f trains on the mix minus
fold f. After training, every scored row has one cosine per model (`cos`, shape (rows, models)) and a fold
membership (`fold`: the fold of a mix row, -1 for a row outside the mix). From these:
    crossfit_score   a mix row scored by the one model that did not train on it; a row outside the mix by the
                     mean of all models
    insample_score   a mix row scored by the models that did train on it (one model: its cosine); a row outside
                     the mix by the mean of all models
    snapshot_average insample_score averaged over training snapshots and the final models
    crossfit_standardised  crossfit_score with each model's cosine first standardised by the mean and std of that
                     model's cosines on its own held-out fold (`fold_moments`), so that models of different cosine
                     scale compete on one scale when the top of the pool is taken across folds
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


# fixed-point scale of the held-out moments: a cosine is counted in units of 2^-20 (1e-6, far below any gap a
# ranking sees), so sums are integers, exact in any order: every world size gets the same mean and std, bit for bit
MOMENT_SCALE = 1 << 20


def fold_moments(x: np.ndarray) -> tuple[int, int, int]:
    """(n, sum q, sum q^2) of the finite cosines x in fixed point (q = round(x * 2^20)), as Python ints: exact, so
    the moments of a fold split across ranks add up to the same numbers whatever the split. Non-finite cosines
    are left out (the score file that would hold them is refused)."""
    x = np.asarray(x, np.float64)
    q = np.rint(x[np.isfinite(x)] * MOMENT_SCALE).astype(np.int64)
    total, squares = 0, 0
    for i in range(0, len(q), 1 << 22):  # |q| <= 2^20: a chunk's sum of squares stays below 2^63
        c = q[i:i + (1 << 22)]
        total += int(c.sum())
        squares += int((c * c).sum())
    return len(q), total, squares


def add_moments(parts) -> tuple[int, int, int]:
    """The moments of the union of the parts (fold_moments of each)."""
    return tuple(sum(p[i] for p in parts) for i in range(3))


def standardised(cos: np.ndarray, moments: tuple[int, int, int]) -> np.ndarray:
    """(cos - mean) / std of the reference the moments describe (float64); a reference with no spread (or none)
    leaves the cosines unscaled around its mean."""
    n, total, squares = moments
    if n == 0:
        return np.asarray(cos, np.float64)
    mean = total / n
    var = max(squares / n - mean * mean, 0.0)
    std = var ** 0.5 / MOMENT_SCALE if var > 0 else 1.0
    return (np.asarray(cos, np.float64) - mean / MOMENT_SCALE) / std


def crossfit_standardised(cos: np.ndarray, fold: np.ndarray, moments) -> np.ndarray:
    """crossfit_score on a common scale (float32): model f's cosine standardised by the mean and std of model f's
    cosines on its own held-out fold (`moments[f]`), then a mix row takes its own fold model's value and a row
    outside the mix the mean over models. Two fold models that stopped at different steps (or drifted apart)
    differ in cosine scale: the raw crossfit top of the pool then fills from one fold, this one from both by their
    own ranking. Models of one scale get back the raw crossfit ranking (an affine map of it)."""
    z = np.stack([standardised(cos[:, f], moments[f]) for f in range(cos.shape[1])], 1)
    return crossfit_score(z, fold)

"""The score types a round computes, as a registry: one `ScoreType` per name in `SCORE_TYPES`.

Every reader of score types reads this table: `LoopConfig.fields()` (the fields of a round's score file, in
registry order), `LoopConfig.check()` (is `--score` computed with these folds and snapshots?), the `--score`
choices of `sfcomp run` / `sfcomp round`, and the sweep (bench/experiments/sweep_mix.py, bench/experiments/run_all.py: which score types
exist and the `sfcomp run` options each needs). Adding a score type is one function plus one `register` call:

    def negcos(c: ModelCosines) -> np.ndarray:          # pure: per-model cosines (+ folds, snapshots) -> scores
        return -crossfit_score(c.cos, c.fold)
    register(ScoreType("negcos", "minus the cross-fitted cosine", negcos, min_folds=2))

All score types are higher = more likely a clean, aligned pair. numpy is imported only by the score functions
(through `sfcomp.crossfit`), so reading the names (`sfcomp run --help`) stays light.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ModelCosines:
    """What a round's models measured on the rows this rank scores.

    cos        (rows, models) float32: model f's image-text cosine of each row
    fold       (rows,) int64: the fold of a mix row (the one model that did not train on it when folds >= 2; 0
               with one model), -1 for a row outside the mix
    snapshots  snapshots[f][s]: model f's cosines at training snapshot s ([] per model without --snapshots)
    folds      the round's --folds
    moments    moments[f]: (n, sum, sum of squares) of model f's cosines on its held-out fold over the whole pool
               (every rank's rows; `sfcomp.crossfit.fold_moments`), the scale `crossfit_z` puts every model on
    """
    cos: np.ndarray
    fold: np.ndarray
    snapshots: Sequence[Sequence[np.ndarray]]
    folds: int
    moments: Sequence[tuple[int, int, int]] | None = None


@dataclass(frozen=True)
class ScoreType:
    """name: the score file field and the `--score` value. doc: one line for docs and help. compute: the pure
    function from the models' cosines to one score per row. Available when folds >= min_folds and, with
    needs_snapshots, when --snapshots are given. run_args: the `sfcomp run` options a sweep passes so that the
    type is computed (beyond the defaults)."""
    name: str
    doc: str
    compute: Callable[[ModelCosines], np.ndarray]
    min_folds: int = 1
    needs_snapshots: bool = False
    run_args: tuple[str, ...] = ()

    def available(self, folds: int, snapshots: Sequence[float]) -> bool:
        return folds >= self.min_folds and (bool(snapshots) or not self.needs_snapshots)


SCORE_TYPES: dict[str, ScoreType] = {}


def register(score_type: ScoreType) -> ScoreType:
    """Add a score type (a new name goes last: the field order of every score file written from now on)."""
    if score_type.name in SCORE_TYPES:
        raise ValueError(f"score type {score_type.name!r} is already registered")
    if not score_type.name.isidentifier() or score_type.name in ("f0", "f1"):
        raise ValueError(f"score type name {score_type.name!r} must be an identifier other than f0, f1")
    SCORE_TYPES[score_type.name] = score_type
    return score_type


def available(folds: int, snapshots: Sequence[float]) -> list[str]:
    """The score fields a round computes with these settings, in registry order."""
    return [name for name, t in SCORE_TYPES.items() if t.available(folds, snapshots)]


def compute_fields(c: ModelCosines, snapshots: Sequence[float]) -> dict[str, np.ndarray]:
    """Every available score type's column (float32), in registry order."""
    import numpy as np

    return {name: np.asarray(SCORE_TYPES[name].compute(c)).astype(np.float32)
            for name in available(c.folds, snapshots)}


# ------------------------------------------------------------------------------------------ the built-in types
def _crossfit(c: ModelCosines) -> np.ndarray:
    from .crossfit import crossfit_score

    return crossfit_score(c.cos, c.fold)


def _cosine(c: ModelCosines) -> np.ndarray:
    from .crossfit import insample_score

    return insample_score(c.cos, c.fold)


def _ckpt_avg(c: ModelCosines) -> np.ndarray:
    from .crossfit import snapshot_average

    return snapshot_average(c.snapshots, c.cos, c.fold)


def _crossfit_z(c: ModelCosines) -> np.ndarray:
    from .crossfit import crossfit_standardised

    if c.moments is None:
        raise ValueError("crossfit_z needs every model's held-out fold moments")
    return crossfit_standardised(c.cos, c.fold, c.moments)


register(ScoreType("crossfit", "cross-fitted cosine: a mix sample scored by the model that did not train on it, "
                               "others by the mean of all models", _crossfit, min_folds=2))
register(ScoreType("cosine", "in-sample cosine: a mix sample scored by the models that trained on it, others by "
                             "the mean of all models", _cosine))
register(ScoreType("ckpt_avg", "the in-sample cosine averaged over training snapshots (noisy pairs are learned "
                               "late)", _ckpt_avg, needs_snapshots=True, run_args=("--snapshots", "0.5,0.75")))
register(ScoreType("crossfit_z", "cross-fitted z-score: as crossfit, with each model's cosine first standardised by "
                                 "the mean and std of that model's cosines on its own held-out fold, so models of "
                                 "different scale (early-stopped at different steps) are ranked on one scale",
                   _crossfit_z, min_folds=2))

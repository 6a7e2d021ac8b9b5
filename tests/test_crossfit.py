"""The cross-fit arithmetic of a round (sfcomp.crossfit), tested directly on small hand-made arrays: no model,
no pool, no file."""
from __future__ import annotations

import numpy as np
import pytest

from sfcomp.crossfit import (add_moments, crossfit_score, crossfit_standardised, derive_seed, fold_membership,
                             fold_moments, fold_of, insample_score, snapshot_average, standardised)
from sfcomp.uids import UID_DTYPE

# 5 scored rows; rows 0, 2, 3 are in the mix (folds 1, 0, 1), rows 1 and 4 are not.
SCORE_ROWS = np.arange(5)
MIX_ROWS = np.array([0, 2, 3])
FOLD_OF_MIX = np.array([1, 0, 1])
FOLD = np.array([1, -1, 0, 1, -1])
# cosines of 2 models (model f trained on the mix minus fold f)
COS = np.array([[0.1, 0.9],
                [0.2, 0.4],
                [0.3, 0.5],
                [0.8, 0.6],
                [0.0, 1.0]], np.float32)


def _uids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.empty(n, UID_DTYPE)
    u["f0"], u["f1"] = rng.integers(0, 2**63, n, dtype=np.uint64), rng.integers(0, 2**63, n, dtype=np.uint64)
    return u


def test_derive_seed_is_pinned():
    # the seeds of every round's folds, models, batches and selection: a change here changes every output
    assert (derive_seed(3, "folds", 0), derive_seed(0, "model", 0, 1)) == (1601895717, 198963963)


def test_fold_of_does_not_depend_on_row_order():
    u = _uids(1000)
    perm = np.random.default_rng(1).permutation(1000)
    assert (fold_of(u, 3, seed=7, k=2)[perm] == fold_of(u[perm], 3, seed=7, k=2)).all()


def test_fold_of_splits_into_roughly_equal_folds():
    counts = np.bincount(fold_of(_uids(30000), 3, seed=0, k=0), minlength=3)
    assert counts.min() > 9500  # ~10000 each


def test_fold_of_changes_with_the_round():
    u = _uids(1000)
    assert (fold_of(u, 2, seed=0, k=0) != fold_of(u, 2, seed=0, k=1)).mean() > 0.3


def test_fold_membership_marks_rows_outside_the_mix():
    assert fold_membership(SCORE_ROWS, MIX_ROWS, FOLD_OF_MIX).tolist() == FOLD.tolist()


def test_fold_membership_of_an_empty_mix():
    assert fold_membership(SCORE_ROWS, np.array([], np.int64), np.array([], np.int64)).tolist() == [-1] * 5


def test_fold_membership_of_a_rank_that_scores_some_rows():
    # under torchrun a rank scores whole shards: its rows are a sorted subset of the pool's
    assert fold_membership(np.array([1, 3, 4]), MIX_ROWS, FOLD_OF_MIX).tolist() == [-1, 1, -1]


def test_crossfit_scores_a_mix_row_by_the_model_of_its_own_fold():
    # row 0 is in fold 1: model 1 did not train on it; rows outside the mix get the mean of both models
    assert crossfit_score(COS, FOLD) == pytest.approx([0.9, 0.3, 0.3, 0.6, 0.5])


def test_crossfit_score_is_float32():
    assert crossfit_score(COS, FOLD).dtype == np.float32


def test_fold_moments_of_a_split_add_up_to_the_whole_exactly():
    x = np.random.default_rng(0).normal(0.2, 0.1, 10001).astype(np.float32)
    whole = fold_moments(x)
    for cut in (1, 5000, 9999):
        assert add_moments([fold_moments(x[cut:]), fold_moments(x[:cut])]) == whole  # any split, any order
    assert whole[0] == 10001 and isinstance(whole[1], int)


def test_fold_moments_leave_out_non_finite_cosines():
    assert fold_moments(np.array([0.5, np.nan, np.inf, 0.25])) == fold_moments(np.array([0.5, 0.25]))


def test_standardised_has_the_references_mean_0_and_std_1():
    x = np.random.default_rng(1).normal(0.3, 0.05, 5000).astype(np.float32)
    z = standardised(x, fold_moments(x))
    assert abs(z.mean()) < 1e-5 and abs(z.std() - 1) < 1e-5


def test_standardised_without_spread_or_reference_keeps_the_scale():
    x = np.array([0.2, 0.4])
    assert standardised(x, fold_moments(np.array([0.1, 0.1]))) == pytest.approx([0.1, 0.3], abs=1e-5)
    assert standardised(x, (0, 0, 0)).tolist() == x.tolist()


def _shifted_folds():
    """Model 1 scores its fold on a scale 0.5 higher and twice as wide as model 0 does, with the same ranking."""
    rng = np.random.default_rng(0)
    base = rng.normal(0.2, 0.05, 100).astype(np.float32)
    fold = np.repeat([0, 1], 100)
    cos = np.zeros((200, 2), np.float32)
    cos[:100, 0], cos[100:, 1] = base, 0.5 + 2 * base
    cos[:100, 1], cos[100:, 0] = 0.5 + 2 * base, base  # the other model's view (unused for mix rows)
    return cos, fold, [fold_moments(cos[fold == f, f]) for f in (0, 1)]


def test_crossfit_standardised_puts_models_of_different_scale_on_one_scale():
    cos, fold, moments = _shifted_folds()
    raw = crossfit_score(cos, fold)
    z = crossfit_standardised(cos, fold, moments)
    assert (np.argsort(-raw)[:100] >= 100).all()  # raw: the top half is all fold 1
    assert z[:100] == pytest.approx(z[100:], abs=1e-5)  # the same ranks within each fold: the same values
    assert z.dtype == np.float32


def test_crossfit_standardised_of_models_of_one_scale_is_the_raw_ranking():
    rng = np.random.default_rng(2)
    cos = rng.normal(0.2, 0.05, (300, 2)).astype(np.float32)
    fold = rng.integers(-1, 2, 300)
    one = fold_moments(cos[fold >= 0].ravel())
    assert (np.argsort(crossfit_standardised(cos, fold, [one, one]), kind="stable")
            == np.argsort(crossfit_score(cos, fold), kind="stable")).all()


def test_crossfit_standardised_of_a_row_outside_the_mix_is_the_mean_over_models():
    moments = [fold_moments(np.array([0.0, 0.2])), fold_moments(np.array([0.5, 1.5]))]  # mean 0.1 / 1, std 0.1 / 0.5
    cos = np.array([[0.3, 2.0]], np.float32)
    assert crossfit_standardised(cos, np.array([-1]), moments) == pytest.approx([(2.0 + 2.0) / 2], abs=1e-4)


def test_insample_scores_a_mix_row_by_the_models_that_trained_on_it():
    # row 0 (fold 1) was trained on by model 0 only
    assert insample_score(COS, FOLD) == pytest.approx([0.1, 0.3, 0.5, 0.8, 0.5])


def test_insample_with_one_model_is_its_cosine():
    one = COS[:, :1]
    assert insample_score(one, np.where(FOLD >= 0, 0, -1)).tolist() == one[:, 0].tolist()


def test_insample_with_three_folds_averages_the_two_models_that_trained():
    cos = np.array([[0.3, 0.6, 0.9]], np.float32)
    assert insample_score(cos, np.array([0])) == pytest.approx([0.75])


def test_snapshot_average_without_snapshots_is_the_insample_score():
    assert snapshot_average([[], []], COS, FOLD) == pytest.approx(insample_score(COS, FOLD))


def test_snapshot_average_averages_snapshots_and_the_final_models():
    snaps = [[np.zeros(5, np.float32)], [np.zeros(5, np.float32)]]  # one snapshot of cosines 0 per model
    assert snapshot_average(snaps, COS, FOLD) == pytest.approx(insample_score(COS, FOLD) / 2)


def test_snapshot_average_uses_the_snapshots_every_model_took():
    # a model resumed from a checkpoint may hold fewer snapshots: only the common ones count
    snaps = [[np.zeros(5, np.float32), np.ones(5, np.float32)], [np.zeros(5, np.float32)]]
    assert snapshot_average(snaps, COS, FOLD) == pytest.approx(insample_score(COS, FOLD) / 2)


def test_the_rounds_pure_modules_import_no_torch():
    """Inspecting a workdir or computing scores needs no torch (sfcomp.workdir, crossfit, scoretypes, truth)."""
    import subprocess
    import sys

    code = ("import sys; import sfcomp.workdir, sfcomp.crossfit, sfcomp.scoretypes, sfcomp.truth; "
            "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"

"""In-memory selection rules: DataComp's top-fraction rule, top-k, threshold, seeded random, and the mix."""
from __future__ import annotations

import numpy as np
import pytest

from sfcomp.errors import BadInputError
from sfcomp.select import (key_to_score, make_mix, random_mask, score_key, threshold_for_fraction, threshold_mask,
                           top_fraction_mask, top_k_mask, uid_hash)
from sfcomp.uids import UID_DTYPE, first_unsorted, count_duplicates


def make_uids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = np.empty(n, UID_DTYPE)
    u["f0"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    u["f1"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    return u


def tied_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(size=n), 1).astype(np.float32)  # many ties


@pytest.mark.parametrize("fraction", [0.0001, 0.1, 0.3, 0.5, 0.999, 1.0])
def test_threshold_matches_datacomp_rule(fraction):
    s = tied_scores(10_000)
    n = int(len(s) * fraction)
    expected = s.min() if n == len(s) else -np.sort(-s)[n]  # DataComp apply_filter.py (n == N would IndexError)
    t = threshold_for_fraction(s, fraction)
    assert t == expected
    mask = top_fraction_mask(s, fraction)
    assert (mask == (s >= expected)).all()
    assert mask.sum() >= min(n + 1, len(s))  # DataComp keeps the (n+1)-th largest and its ties


def test_threshold_distinct_scores_keeps_n_plus_one():
    s = np.arange(10, dtype=np.float32)
    assert threshold_for_fraction(s, 0.3) == 6.0  # n = 3; the 4th largest
    assert top_fraction_mask(s, 0.3).sum() == 4


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.0001, 2, float("nan")])
def test_fraction_outside_unit_interval_is_error(bad):
    with pytest.raises(BadInputError, match=r"must be in \(0, 1\]") as e:
        threshold_for_fraction(np.ones(5, np.float32), bad, source="s.npy")
    assert str(e.value).startswith("s.npy: ") and "\n" not in str(e.value)
    with pytest.raises(BadInputError, match=r"\(0, 1\]"):
        make_mix(make_uids(5), np.ones(5), top_frac=0.3, random_frac=bad if bad != 0 else -1)


def test_non_finite_scores_are_error():
    s = np.ones(5, np.float32)
    s[2] = np.nan
    for call in (lambda: threshold_for_fraction(s, 0.5), lambda: top_k_mask(s, 2), lambda: threshold_mask(s, 0),
                 lambda: make_mix(make_uids(5), s, top_frac=0.5)):
        with pytest.raises(BadInputError, match="non-finite"):
            call()


def test_top_k_exact_with_uid_tie_break():
    u = np.zeros(6, UID_DTYPE)
    u["f1"] = [50, 10, 40, 20, 30, 60]
    s = np.array([1.0, 0.5, 0.5, 0.5, 0.5, 0.1], np.float32)
    mask = top_k_mask(s, 3, u)
    assert mask.tolist() == [True, True, False, True, False, False]  # the 0.5-ties with the smallest uids 10, 20
    assert top_k_mask(s, 3).tolist() == [True, True, True, False, False, False]  # no uids: earlier rows
    assert top_k_mask(s, 0, u).sum() == 0 and top_k_mask(s, 6, u).all()
    with pytest.raises(BadInputError, match="larger than the pool"):
        top_k_mask(s, 7, u)


@pytest.mark.parametrize("k", [1, 77, 3000, 9999])
def test_top_k_matches_full_sort(k):
    u, s = make_uids(10_000), tied_scores(10_000)
    order = np.lexsort((u["f1"], u["f0"], -s))  # score descending, then uid ascending
    expected = np.zeros(len(s), bool)
    expected[order[:k]] = True
    assert (top_k_mask(s, k, u) == expected).all()


def test_threshold_mask_keeps_ties():
    s = np.array([0.1, 0.25, 0.25, 0.3], np.float32)
    assert threshold_mask(s, 0.25).tolist() == [False, True, True, True]


def test_score_key_preserves_order():
    s = np.array([-np.inf, -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 0.5, 1.0, 3e38, np.inf], np.float32)
    k = score_key(s)
    assert (np.diff(k.astype(np.int64)) >= 0).all() and k[4] == k[5]
    assert [key_to_score(int(x)) for x in k[5:]] == s[5:].tolist()
    assert key_to_score(int(k[2])) == -1.0


def test_uid_hash_pinned():
    # mixes must stay reproducible across versions: these values may never change
    h = uid_hash(np.array([0, 1, 2**64 - 1], np.uint64), np.array([0, 5, 2**64 - 1], np.uint64), 0)
    assert h.tolist() == [3746585686858627171, 3154232101242059456, 7603216367381159043]
    assert int(uid_hash(np.array([3], np.uint64), np.array([4], np.uint64), 12345)[0]) == 18013206441304052441


def test_random_mask_seeded_exact_uniform_order_free():
    u = make_uids(100_000, seed=1)
    m = random_mask(u, fraction=0.1, seed=7)
    assert m.sum() == 10_000
    assert (m == random_mask(u, fraction=0.1, seed=7)).all()
    other = random_mask(u, fraction=0.1, seed=8)
    assert 800 < (m & other).sum() < 1200  # independent draws overlap by ~10%
    perm = np.random.default_rng(0).permutation(len(u))
    assert (random_mask(u[perm], fraction=0.1, seed=7) == m[perm]).all()  # depends on uids, not positions
    assert random_mask(u, count=123, seed=7).sum() == 123
    # uniform over the pool: each tenth of the pool (by position, i.e. arbitrary) gets about 10% of the sample
    per_tenth = m.reshape(10, -1).sum(axis=1)
    assert (abs(per_tenth - 1000) < 150).all()
    with pytest.raises(BadInputError, match="larger than the pool"):
        random_mask(u, count=100_001)


def test_make_mix_union_and_counts():
    u, s = make_uids(20_000, seed=2), tied_scores(20_000, seed=2)
    mix, info = make_mix(u, s, top_frac=0.3, random_frac=0.2, seed=5)
    top = top_fraction_mask(s, 0.3)
    rand = random_mask(u, fraction=0.2, seed=5)
    expected = np.sort(u[top | rand])
    assert mix.dtype == UID_DTYPE and (mix == expected).all()
    assert first_unsorted(mix) is None and count_duplicates(mix) == 0
    assert info["top"] == top.sum() and info["random"] == 4000 and info["overlap"] == (top & rand).sum()
    assert info["union"] == len(mix) == info["top"] + info["random"] - info["overlap"]
    assert info["threshold"] == threshold_for_fraction(s, 0.3) and info["pool"] == 20_000
    # same seed -> same mix; input order does not matter
    perm = np.random.default_rng(1).permutation(len(u))
    mix2, info2 = make_mix(u[perm], s[perm], top_frac=0.3, random_frac=0.2, seed=5)
    assert (mix2 == mix).all() and info2 == info


def test_make_mix_other_rules():
    u, s = make_uids(5000, seed=3), tied_scores(5000, seed=3)
    mix, info = make_mix(u, s, top_k=100)
    assert len(mix) == 100 and info["random"] == 0
    mix, info = make_mix(u, s, threshold=1.0)
    assert len(mix) == (s >= 1.0).sum() and info["threshold"] == 1.0
    mix, info = make_mix(u, None, random_frac=0.5, seed=1)  # round 0: a uniform sample only
    assert len(mix) == 2500 and info["top"] == 0 and info["rule"] is None


def test_top_plus_random_larger_than_pool():
    u, s = make_uids(1000, seed=4), tied_scores(1000, seed=4)
    # possible: the random part is drawn from the whole pool, so it overlaps the top part
    mix, info = make_mix(u, s, top_frac=0.7, random_frac=0.5, seed=0)
    assert info["top"] + info["random"] > 1000 and info["union"] == len(mix) <= 1000
    mix, info = make_mix(u, s, top_k=1000, random_count=1000)
    assert len(mix) == 1000
    # impossible: a part larger than the pool by itself
    for kw in (dict(top_k=1001), dict(top_k=10, random_count=1001)):
        with pytest.raises(BadInputError, match="larger than the pool") as e:
            make_mix(u, s, source="scores.npy", **kw)
        assert str(e.value).startswith("scores.npy: ") and "\n" not in str(e.value)


def test_make_mix_argument_errors():
    u, s = make_uids(10), tied_scores(10)
    with pytest.raises(BadInputError, match="at most one"):
        make_mix(u, s, top_frac=0.3, top_k=3)
    with pytest.raises(BadInputError, match="nothing to select"):
        make_mix(u, s)
    with pytest.raises(BadInputError, match="empty pool"):
        make_mix(u[:0], s[:0], top_frac=0.5)
    with pytest.raises(BadInputError, match="finite"):
        make_mix(u, s, threshold=float("nan"))
    with pytest.raises(BadInputError, match="one score per uid"):
        make_mix(u, s[:5], top_frac=0.5)
    with pytest.raises(BadInputError, match="u8,u8"):
        make_mix(np.arange(10), s, top_frac=0.5)

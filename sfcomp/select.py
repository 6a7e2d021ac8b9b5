"""Selection rules over per-uid scores, in memory: top fraction (DataComp's rule), top-k, threshold, seeded random
sample, and the mix (top-scored UNION random) each round trains on. Pure functions, no torch.

The same rules stream over pools that do not fit in memory in `sfcomp.streaming_select`; both give the same uids:
* top fraction f (DataComp `apply_filter.py`): n = int(N*f); threshold = the (n+1)-th largest score
  (`-np.sort(-scores)[n]`); keep score >= threshold (ties can keep slightly more than n+1). f == 1 keeps all.
* top-k: exactly k, order (score descending, uid ascending): ties at the boundary go to the smaller uids.
* threshold t: keep score >= t.
* random: the `count` uids with the smallest `uid_hash(uid, seed)` (ties by uid), count = int(N*fraction).
  A hash of the uid (not a draw over array positions) makes the sample independent of row order and file
  layout, so a score file, its per-rank parts and the streaming path all pick the same uids for one seed.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import BadInputError
from .uids import UID_DTYPE, refuse_empty, uid_order

Source = str | os.PathLike | None

# ---------------------------------------------------------------- keys shared with the streaming path

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 with good avalanche (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def uid_hash(f0: np.ndarray, f1: np.ndarray, seed: int) -> np.ndarray:
    """Seeded 64-bit hash of each uid (vectorised, uint64). Uniform, so its smallest values are a uniform sample."""
    s = _mix64(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) + _GOLDEN)[0]
    with np.errstate(over="ignore"):
        return _mix64(_mix64(np.asarray(f0, np.uint64) ^ s) + np.asarray(f1, np.uint64))


def score_key(scores: np.ndarray) -> np.ndarray:
    """float32 scores -> uint32 keys in the same order (-0.0 treated as 0.0). NaN must be excluded before."""
    s = np.asarray(scores, dtype=np.float32) + np.float32(0.0)
    b = s.view(np.uint32)
    neg = (b >> np.uint32(31)).astype(bool)
    return np.where(neg, ~b, b | np.uint32(0x80000000))


def key_to_score(key: int) -> float:
    """Inverse of score_key for one key."""
    k = np.uint32(key)
    b = k & np.uint32(0x7FFFFFFF) if k & np.uint32(0x80000000) else ~k
    return float(np.asarray([b], dtype=np.uint32).view(np.float32)[0])


# ---------------------------------------------------------------- counts and checks

def check_fraction(fraction: float, what: str = "fraction", source: Source = None) -> float:
    f = float(fraction)
    if not (0.0 < f <= 1.0):  # also rejects NaN
        raise BadInputError(source, f"{what} must be in (0, 1], got {fraction}")
    return f


def count_for_fraction(n: int, fraction: float, what: str = "fraction", source: Source = None) -> int:
    """DataComp's n = int(N * f)."""
    return int(n * check_fraction(fraction, what, source))


def _check_scores(scores: np.ndarray, source: Source) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 1:
        raise BadInputError(source, f"scores must be 1-D, got shape {s.shape}")
    finite = np.isfinite(s)
    if not finite.all():
        raise BadInputError(source, f"{int((~finite).sum())} non-finite (NaN/inf) scores, first at row "
                                    f"{int(np.argmin(finite))}")
    return s


# ---------------------------------------------------------------- rules

def threshold_for_fraction(scores: np.ndarray, fraction: float, source: Source = None) -> float:
    """DataComp's threshold for keeping the top `fraction`: the (int(N*f)+1)-th largest score; f == 1 -> the min."""
    s = _check_scores(scores, source)
    if len(s) == 0:
        raise BadInputError(source, "no scores (empty pool)")
    n = count_for_fraction(len(s), fraction, "top fraction", source)
    if n >= len(s):
        return float(s.min())
    # the (n+1)-th largest = the (N-n)-th smallest; np.partition instead of a full sort
    return float(np.partition(s, len(s) - 1 - n)[len(s) - 1 - n])


def threshold_mask(scores: np.ndarray, threshold: float, source: Source = None) -> np.ndarray:
    s = _check_scores(scores, source)
    return s >= np.float32(threshold)


def top_fraction_mask(scores: np.ndarray, fraction: float, source: Source = None) -> np.ndarray:
    """The top-fraction rule of sfcomp: what "the top fraction f" of N scores means in export-subset, every
    round's next mix, the round report's precision figures, the sweep and the bench (DataComp's: keep score >=
    the (int(N*f)+1)-th largest)."""
    return threshold_mask(scores, threshold_for_fraction(scores, fraction, source), source)


def _smallest_k_mask(primary: np.ndarray, k: int, uids: np.ndarray | None) -> np.ndarray:
    """Mask of the k smallest by (primary, uid) — or (primary, position) without uids."""
    n = len(primary)
    mask = np.zeros(n, dtype=bool)
    if k <= 0:
        return mask
    if k >= n:
        mask[:] = True
        return mask
    kth = np.partition(primary, k - 1)[k - 1]
    mask = primary < kth
    tied = np.flatnonzero(primary == kth)
    need = k - int(mask.sum())
    if uids is not None and len(tied) > need:
        order = np.lexsort((uids["f1"][tied], uids["f0"][tied]))
        tied = tied[order]
    mask[tied[:need]] = True
    return mask


def top_k_mask(scores: np.ndarray, k: int, uids: np.ndarray | None = None, source: Source = None) -> np.ndarray:
    """Exactly k highest scores; ties at the boundary go to the smaller uids (to earlier rows without `uids`,
    which is the same in a score file, sorted by uid)."""
    s = _check_scores(scores, source)
    _check_count(k, len(s), "top-k", source)
    return _smallest_k_mask(~score_key(s), int(k), uids)


def random_mask(uids: np.ndarray, fraction: float | None = None, count: int | None = None, seed: int = 0,
                source: Source = None) -> np.ndarray:
    """A seeded uniform sample of the whole pool: the `count` (or int(N*fraction)) uids of smallest uid_hash."""
    uids = np.asarray(uids)
    n = len(uids)
    if (fraction is None) == (count is None):
        raise ValueError("random_mask: give exactly one of fraction and count")
    k = count_for_fraction(n, fraction, "random fraction", source) if fraction is not None else int(count)
    _check_count(k, n, "random count", source)
    return _smallest_k_mask(uid_hash(uids["f0"], uids["f1"], seed), k, uids)


def _check_count(k: int, n: int, what: str, source: Source) -> None:
    if int(k) != k or k < 0:
        raise BadInputError(source, f"{what} must be a non-negative integer, got {k}")
    if k > n:
        raise BadInputError(source, f"{what} {k} is larger than the pool ({n} samples)")


def mix_counts(n: int, top_frac: float | None = None, top_k: int | None = None, threshold: float | None = None,
               random_frac: float | None = None, random_count: int | None = None, source: Source = None
               ) -> tuple[str | None, int | None, int]:
    """Validate a mix request for a pool of n: returns (top rule, top k where known before scoring, random count).

    Exactly one of top_frac / top_k / threshold, or none of them (random only). random_frac 0 or None = no random
    part. The random sample is drawn from the WHOLE pool, independently of the top part (DataComp-style "top X%
    plus a uniform sample"), so it overlaps the top part by about top*random/N samples and the union has
    top + random - overlap samples <= N. Hence top + random > N is possible and fine (e.g. top 70% + random
    50% keeps about 85% of the pool); what is impossible, and an error, is a part larger than the pool by itself:
    top_k > N or random_count > N (fractions outside (0, 1] are errors too).
    """
    if n == 0:
        raise BadInputError(source, "no samples (empty pool)")
    rules = [r for r, v in (("top_frac", top_frac), ("top_k", top_k), ("threshold", threshold)) if v is not None]
    if len(rules) > 1:
        raise BadInputError(source, f"give at most one of top_frac / top_k / threshold, got {', '.join(rules)}")
    if random_frac is not None and random_count is not None and random_frac != 0:
        raise BadInputError(source, "give at most one of random_frac / random_count")
    rule = rules[0] if rules else None
    k_top = None
    if rule == "top_frac":  # DataComp keeps the (int(N*f)+1)-th largest score and all above or equal to it
        k_top = min(count_for_fraction(n, top_frac, "top fraction", source) + 1, n)
    elif rule == "top_k":
        _check_count(top_k, n, "top-k", source)
        k_top = int(top_k)
    elif rule == "threshold" and not np.isfinite(threshold):
        raise BadInputError(source, f"threshold must be a finite number, got {threshold}")
    if random_count is not None:
        _check_count(random_count, n, "random count", source)
        k_rand = int(random_count)
    elif random_frac:
        k_rand = count_for_fraction(n, random_frac, "random fraction", source)
    else:
        if random_frac is not None and random_frac < 0:
            raise BadInputError(source, f"random fraction must be in (0, 1] (or 0 for none), got {random_frac}")
        k_rand = 0
    if rule is None and not random_frac and random_count is None:
        raise BadInputError(source, "nothing to select: give top_frac, top_k or threshold, and/or a random part")
    return rule, k_top, k_rand


def check_selection(n_selected: int, n_pool: int, source: Source, top_k: int | None = None,
                    threshold: float | None = None, allow_empty: bool = False, random_frac: float | None = None,
                    random_count: int | None = None) -> None:
    """Refuse an empty selection by the one rule for empty subsets (`sfcomp.uids.refuse_empty`), saying why it is
    empty. Called by every path that writes a mix (in memory, streaming), before anything is written."""
    if threshold is not None:
        why = f"threshold {threshold} is above every score"
    elif top_k is not None:
        why = f"top-k is {top_k}"
    elif random_frac:
        why = f"random fraction {random_frac} of {n_pool} samples is int({n_pool} * {random_frac}) = 0 samples"
    elif random_count is not None:
        why = f"random count is {random_count}"
    else:
        why = f"no sample of the {n_pool} was picked"
    refuse_empty(n_selected, source, why, allow_empty)


def make_mix(uids: np.ndarray, scores: np.ndarray | None, top_frac: float | None = None, top_k: int | None = None,
             threshold: float | None = None, random_frac: float | None = 0.0, random_count: int | None = None,
             seed: int = 0, source: Source = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The union of the top-scored samples and a seeded uniform random sample of the whole pool.

    Returns (sorted unique u8,u8 uids, info) with info counts: pool, top, random, overlap (in both parts),
    union (= top + random - overlap = len(mix)), and `threshold` (the lowest score kept by the top rule).
    Semantics and errors: see `mix_counts`. `scores` may be None for a random-only mix.
    The random part is a function of (uids, seed) only: the same seed gives the same random uids in every
    round, so a loop that wants a fresh sample each round derives the seed from the round (e.g. seed + round).
    """
    uids = np.asarray(uids)
    if uids.dtype.names is None or uids.dtype.names[:2] != ("f0", "f1"):
        raise BadInputError(source, f"uids must be a structured u8,u8 array, got dtype {uids.dtype}")
    n = len(uids)
    rule, _, k_rand = mix_counts(n, top_frac, top_k, threshold, random_frac, random_count, source)
    top = np.zeros(n, dtype=bool)
    thr = None
    if rule is not None:
        if scores is None or len(scores) != n:
            raise BadInputError(source, f"need one score per uid ({n}), got {None if scores is None else len(scores)}")
        s = _check_scores(scores, source)
        if rule == "top_frac":
            thr = threshold_for_fraction(s, top_frac, source)
            top = s >= np.float32(thr)
        elif rule == "top_k":
            top = top_k_mask(s, top_k, uids, source)
            thr = float(s[top].min()) if top.any() else None
        else:
            thr = float(np.float32(threshold))
            top = s >= np.float32(threshold)
    rand = _smallest_k_mask(uid_hash(uids["f0"], uids["f1"], seed), k_rand, uids)
    mask = top | rand
    picked = np.empty(int(mask.sum()), dtype=UID_DTYPE)
    picked["f0"], picked["f1"] = uids["f0"][mask], uids["f1"][mask]
    picked = picked[uid_order(picked["f0"], picked["f1"])]
    if len(picked) > 1:
        same = (picked["f0"][1:] == picked["f0"][:-1]) & (picked["f1"][1:] == picked["f1"][:-1])
        if same.any():
            raise BadInputError(source, f"{int(same.sum())} duplicate uids in the pool's scores")
    info = {"pool": n, "rule": rule, "top": int(top.sum()), "random": int(rand.sum()),
            "overlap": int((top & rand).sum()), "union": len(picked), "threshold": thr, "seed": int(seed)}
    return picked, info

"""Selection and subset export for pools whose scores or uids do not fit in memory.

Input: one or more score files (per-rank or per-shard parts; each sorted by uid, see docs/SCORES.md), read in
chunks. Output: the same uids `sfcomp.select.make_mix` picks in memory, written as a sorted DataComp subset.

How, exactly and with bounded memory:
0. With several parts, one k-way merge pass over their uids (nothing written) refuses a uid found in two parts,
   as the in-memory path would (each part's own order, uniqueness and finiteness are checked on every read).
1. Every rule is "the k smallest by a composite key": top fraction / top-k use p = ~score_key(score) (descending
   score), the random part p = uid_hash(uid, seed); ties go to the smaller uid, so the key (p, f0, f1) is
   unique. The k-th smallest key is found by radix selection over 16-bit digits: one pass builds a 65,536-bin
   histogram of the next digit among the rows that match the digits found so far, which fixes that digit and the
   rank left inside its bin. As soon as the rows still in play fit in `budget_rows`, one pass collects them and the
   boundary is resolved in memory. Typical pools: pass 1 histograms (both rules at once), pass 2 collects the
   boundary bin (~N/65,536 * density); all-equal scores still work (the digits then run into the uid).
   The top fraction (DataComp's rule) needs only the boundary score, the (int(N*f)+1)-th largest: keep >= it.
2. A selection pass reads each part once more and appends its selected uids (already sorted: parts are sorted)
   to a temp file per part.
3. A k-way merge of those sorted per-part files writes the final `.npy` sequentially (temp file + rename).
Peak memory ~ chunk_rows * (row size + ~40 bytes) + budget_rows * ~40 bytes + the merge buffers.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from .errors import BadInputError
from .guard import check_outputs, with_sidecars
from .atomic import remove_stale_temps, temp_dir_beside
from .kway import iter_raw, merge_sorted_chunks, per_stream_rows
from .scorefile import CHUNK_ROWS, check_disjoint, iter_score_chunks, score_info
from .select import check_selection, key_to_score, mix_counts, score_key, uid_hash
from .uids import UID_DTYPE, check_subset_output

DIGIT = 16
BUDGET_ROWS = 1 << 23  # candidates resolved in memory: 8M rows * 24 bytes = 192 MB


class KthSmallest:
    """Exact k-th smallest (1-based) composite key (p, f0, f1) over a stream of chunks, in few passes."""

    def __init__(self, key: Callable[[np.ndarray], np.ndarray], p_bits: int, k: int, n: int,
                 budget_rows: int = BUDGET_ROWS, primary_only: bool = False):
        assert 1 <= k <= n
        self.key, self.k, self.budget, self.primary_only = key, k, budget_rows, primary_only
        self.widths = [p_bits, 64, 64]
        self.known = [0, 0, 0]  # resolved top bits of each word
        self.prefix = [0, 0, 0]  # their value
        self.need = k  # rank still to find among the rows matching the prefix
        self.cand = n  # rows matching the prefix
        self.result: tuple[int, int, int] | None = None
        self.passes = 0
        self._hist = None
        self._coll: list = []

    # -- state
    @property
    def done(self) -> bool:
        return self.result is not None

    def mode(self) -> str:
        return "collect" if self.cand <= self.budget else "hist"

    def _word(self) -> int:
        for w in range(3):
            if self.known[w] < self.widths[w]:
                return w
        raise AssertionError("all bits known but not resolved")

    def _match(self, words) -> np.ndarray | None:
        m = None
        for w in range(3):
            b = self.known[w]
            if b == 0:
                continue
            sel = (words[w] >> np.uint64(self.widths[w] - b)) == np.uint64(self.prefix[w])
            m = sel if m is None else (m & sel)
        return m

    # -- one pass
    def begin(self) -> None:
        self.passes += 1
        self._hist = np.zeros(1 << DIGIT, dtype=np.int64) if self.mode() == "hist" else None
        self._coll = []

    def feed(self, chunk: np.ndarray) -> None:
        words = (self.key(chunk).astype(np.uint64, copy=False), chunk["f0"], chunk["f1"])
        m = self._match(words)
        if self._hist is not None:
            w = self._word()
            shift = np.uint64(self.widths[w] - self.known[w] - DIGIT)
            vals = words[w] if m is None else words[w][m]
            self._hist += np.bincount(((vals >> shift) & np.uint64(0xFFFF)).astype(np.intp), minlength=1 << DIGIT)
        else:
            sel = (lambda a: a) if m is None else (lambda a: a[m])
            self._coll.append(tuple(sel(np.asarray(x)) for x in words))

    def end(self) -> None:
        if self._hist is not None:
            cum = np.cumsum(self._hist)
            d = int(np.searchsorted(cum, self.need))  # first digit whose cumulative count reaches `need`
            self.need -= int(cum[d - 1]) if d else 0
            self.cand = int(self._hist[d])
            w = self._word()
            self.prefix[w] = (self.prefix[w] << DIGIT) | d
            self.known[w] += DIGIT
            self._hist = None
            if self.primary_only and self.known[0] == self.widths[0]:
                self.result = (self.prefix[0], 0, 0)
            return
        p, f0, f1 = (np.concatenate([c[i] for c in self._coll]) for i in range(3))
        self._coll = []
        if len(p) != self.cand:
            raise BadInputError(None, f"score files changed between passes ({len(p)} rows, expected {self.cand})")
        if self.primary_only:
            self.result = (int(np.partition(p, self.need - 1)[self.need - 1]), 0, 0)
        else:
            i = np.lexsort((f1, f0, p))[self.need - 1]
            self.result = (int(p[i]), int(f0[i]), int(f1[i]))


def _le_key(words, key: tuple[int, int, int]) -> np.ndarray:
    p, f0, f1 = words
    kp, k0, k1 = (np.uint64(x) for x in key)
    return (p < kp) | ((p == kp) & ((f0 < k0) | ((f0 == k0) & (f1 <= k1))))


def stream_select(paths: Sequence[str | os.PathLike], out_npy: str | os.PathLike, field: str | None = None,
                  top_frac: float | None = None, top_k: int | None = None, threshold: float | None = None,
                  random_frac: float | None = 0.0, random_count: int | None = None, seed: int = 0,
                  chunk_rows: int = CHUNK_ROWS, budget_rows: int = BUDGET_ROWS,
                  check_parts_disjoint: bool = True, timings: dict[str, float] | None = None,
                  allow_empty: bool = False) -> dict[str, Any]:
    """Streaming `make_mix` over score files -> sorted unique subset `.npy` at `out_npy` (atomic).

    Same arguments, semantics and info counts as `sfcomp.select.make_mix` (plus "passes"). Never holds more
    than about chunk_rows + budget_rows rows at once. Each file is checked (sorted, unique, finite) as it is
    read; with several files, `check_parts_disjoint` adds one merge pass over their uids that refuses a uid
    present in two files (without it, such a uid is caught only if selected). `timings`, if given, receives
    the seconds of each phase. An empty selection is refused unless `allow_empty` (`select.check_selection`):
    nothing is written then.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise BadInputError(out_npy, "no score files given")
    check_outputs([out_npy], with_sidecars(paths), what="output")
    check_subset_output(out_npy)
    infos = [score_info(p) for p in paths]
    field = infos[0]["default"] if field is None else field
    for p, info in zip(paths, infos):
        if field not in info["fields"]:
            raise BadInputError(p, f"no score field {field!r} (fields: {', '.join(info['fields'])})")
    n = sum(i["n"] for i in infos)
    src = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)"
    rule, k_top, k_rand = mix_counts(n, top_frac, top_k, threshold, random_frac, random_count, src)

    def top_key(c):
        return ~score_key(c[field])  # ascending p = descending score
    def rand_key(c):
        return uid_hash(c["f0"], c["f1"], seed)
    selectors: dict[str, KthSmallest] = {}
    thr: float | None = None
    top_all = False  # top-k == N
    if rule == "top_frac":
        # DataComp: (int(N*f)+1)-th largest, or the smallest when int(N*f) == N
        selectors["top"] = KthSmallest(top_key, 32, k_top, n, budget_rows, primary_only=True)
    elif rule == "top_k":
        if 0 < k_top < n:
            selectors["top"] = KthSmallest(top_key, 32, k_top, n, budget_rows)
        top_all = k_top == n
    elif rule == "threshold":
        thr = float(np.float32(threshold))
    if 0 < k_rand < n:
        selectors["random"] = KthSmallest(rand_key, 64, k_rand, n, budget_rows)
    rand_all = k_rand == n

    timings = {} if timings is None else timings
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    passes = 0
    if len(paths) > 1 and check_parts_disjoint:
        check_disjoint(paths, chunk_rows)
        passes += 1
        lap("check_disjoint")
    while any(not s.done for s in selectors.values()):
        active = [s for s in selectors.values() if not s.done]
        label = "+".join(f"{name}-{sel.mode()}" for name, sel in selectors.items() if sel in active)
        for s in active:
            s.begin()
        for path in paths:
            for chunk in iter_score_chunks(path, chunk_rows, validate=True):
                for s in active:
                    s.feed(chunk)
        for s in active:
            s.end()
        passes += 1
        lap(f"pass{passes}_{label}")

    top_bound = selectors["top"].result if "top" in selectors else None
    rand_bound = selectors["random"].result if "random" in selectors else None
    if rule == "top_frac":
        thr = key_to_score(~np.uint32(top_bound[0]))

    def masks(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = len(chunk)
        if rule == "top_k":
            if top_bound is None:
                top = np.full(m, top_all)
            else:
                top = _le_key((top_key(chunk).astype(np.uint64), chunk["f0"], chunk["f1"]), top_bound)
        elif rule is None:
            top = np.zeros(m, dtype=bool)
        else:
            top = chunk[field] >= np.float32(thr)
        if rand_bound is None:
            rand = np.full(m, rand_all)
        else:
            rand = _le_key((rand_key(chunk), chunk["f0"], chunk["f1"]), rand_bound)
        return top, rand

    counts = {"top": 0, "random": 0, "overlap": 0, "union": 0}
    min_top = np.inf
    out_npy = Path(out_npy)
    made = [p for p in (out_npy.parent, *out_npy.parent.parents) if not p.exists()]  # removed if refused
    out_npy.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_npy)  # spills and temp files of a killed earlier run
    with temp_dir_beside(out_npy) as tmp:
        spills = []
        for i, path in enumerate(paths):  # each part's selection, sorted because the part is
            spill = tmp / f"{i:06d}.bin"
            with open(spill, "wb") as f:
                for chunk in iter_score_chunks(path, chunk_rows, validate=True):
                    top, rand = masks(chunk)
                    mask = top | rand
                    if top.any():
                        min_top = min(min_top, float(chunk[field][top].min()))
                    counts["top"] += int(top.sum())
                    counts["random"] += int(rand.sum())
                    counts["overlap"] += int((top & rand).sum())
                    sel = np.empty(int(mask.sum()), dtype=UID_DTYPE)
                    sel["f0"], sel["f1"] = chunk["f0"][mask], chunk["f1"][mask]
                    sel.tofile(f)
                    counts["union"] += len(sel)
            spills.append(spill)
        passes += 1
        lap("select_spill")
        try:
            check_selection(counts["union"], n, src, top_k, threshold, allow_empty, random_frac, random_count)
        except BadInputError:
            shutil.rmtree(tmp, ignore_errors=True)
            for d in made:  # innermost first
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        per = per_stream_rows(chunk_rows, len(spills))
        merge_sorted_chunks([iter_raw(s, UID_DTYPE, per) for s in spills], out_npy, UID_DTYPE, counts["union"],
                            paths, out_name=out_npy)
        lap("merge_write")
    if rule == "top_k":
        thr = min_top if np.isfinite(min_top) else None
    return {"pool": n, "rule": rule, **{k: counts[k] for k in ("top", "random", "overlap", "union")},
            "threshold": thr, "seed": int(seed), "passes": passes}

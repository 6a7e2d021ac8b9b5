"""k-way merge of uid-sorted arrays (score files, per-shard selections) into one sorted `.npy`, streaming.

Memory is about `chunk_rows` rows in total, whatever the number of rows: each input is read through a small buffer,
and each step emits every buffered row <= the smallest "last buffered uid" among the inputs still open (all of
those rows are final: nothing later in any input can sort before them). The output is written sequentially after
an exact `.npy` header (the same bytes `np.save` writes), through a temp file renamed at the end.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np

from .atomic import atomic_open
from .errors import BadInputError
from .uids import uid_hex, uid_le_next, uid_order



def count_le(f0: np.ndarray, f1: np.ndarray, p0: int, p1: int) -> int:
    """Rows of a uid-sorted array that are <= (p0, p1)."""
    i = int(np.searchsorted(f0, np.uint64(p0), side="left"))
    j = int(np.searchsorted(f0, np.uint64(p0), side="right"))
    return i + int(np.searchsorted(f1[i:j], np.uint64(p1), side="right"))


class _Stream:
    """One sorted input: its buffered rows plus a contiguous copy of their f0 (searchsorted on the strided
    field of a structured array would copy the whole buffer at every step)."""

    def __init__(self, chunks: Iterator[np.ndarray]):
        self.chunks = chunks
        self.buf: np.ndarray | None = None
        self.f0: np.ndarray | None = None
        self.done = False

    def fill(self) -> None:
        while not self.done and (self.buf is None or len(self.buf) == 0):
            try:
                self.buf = next(self.chunks)
                self.f0 = np.ascontiguousarray(self.buf["f0"])
            except StopIteration:
                self.done = True

    def last(self) -> tuple[int, int]:
        return int(self.f0[-1]), int(self.buf["f1"][-1])

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows, f0 = self.buf[:k], self.f0[:k]
        self.buf, self.f0 = self.buf[k:], self.f0[k:]
        return rows, f0


def write_npy_header(f, dtype: np.dtype, n: int) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    np.lib.format.write_array_header_1_0(f, header)


def merge_sorted_chunks(sources: Sequence[Iterator[np.ndarray]], out_path: str | os.PathLike | None,
                        dtype: np.dtype, n_total: int | None, names: Sequence[str],
                        out_name: str | os.PathLike | None = None) -> int:
    """Merge uid-sorted chunk iterators (each yields sorted arrays of `dtype`, in order) into `out_path` (.npy
    with `n_total` rows, atomic), or only check them when `out_path` is None. A uid found in two sources raises
    BadInputError naming both `names`. Returns the number of rows merged."""
    if out_path is None:
        return _merge(sources, None, dtype, names, out_name or "merge")
    with atomic_open(out_path, "wb") as f:
        write_npy_header(f, dtype, n_total)
        written = _merge(sources, f, dtype, names, out_name or out_path)
        if written != n_total:
            raise BadInputError(out_name or out_path, f"merged {written} rows, expected {n_total} (inputs changed?)")
    return written


def _merge(sources, f, dtype, names, out_name) -> int:
    streams = [_Stream(iter(s)) for s in sources]
    written = 0
    last: tuple[int, int] | None = None
    while True:
        for s in streams:
            s.fill()
        live = [i for i, s in enumerate(streams) if s.buf is not None and len(s.buf)]
        if not live:
            return written
        open_ = [i for i in live if not streams[i].done]
        if open_:  # pivot: smallest last-buffered uid of the inputs that may still have more rows
            p0, p1 = min(streams[i].last() for i in open_)
        parts, f0s, owners = [], [], []
        for i in live:
            st = streams[i]
            k = len(st.buf) if not open_ else count_le(st.f0, st.buf["f1"], p0, p1)
            if k:
                rows, f0 = st.take(k)
                parts.append(rows)
                f0s.append(f0)
                owners.append(i)
        if f is None and len(parts) > 1:
            # check only: a sort of f0 alone (timsort merges the sorted runs) finds every candidate duplicate;
            # only when two top halves collide is the exact (f0, f1) check below needed
            s0 = np.sort(np.concatenate(f0s), kind="stable")
            if not (s0[1:] == s0[:-1]).any():
                written += len(s0)
                continue
        block = np.concatenate(parts) if len(parts) > 1 else parts[0]
        order = uid_order(np.concatenate(f0s), block["f1"]) if len(parts) > 1 else None
        if order is not None:
            block = block[order]

        def owner(j: int) -> str:  # which input row j of the sorted block came from (for the error message)
            src = np.repeat(np.asarray(owners, dtype=np.int32), [len(b) for b in parts])
            return names[int(src[order[j]] if order is not None else src[j])]

        _check_unique(block, owner, last, out_name)
        if f is not None:
            block.astype(dtype, copy=False).tofile(f)
        written += len(block)
        last = (int(block["f0"][-1]), int(block["f1"][-1]))


def _check_unique(block, owner, last, out_name) -> None:
    f0, f1 = block["f0"], block["f1"]
    if last is not None and last == (int(f0[0]), int(f1[0])):
        raise BadInputError(owner(0), f"uid {uid_hex(f0[0], f1[0])} also occurs in another input ({out_name})")
    if len(block) > 1:
        ok = uid_le_next(f0, f1, strict=True)
        if not ok.all():
            i = int(np.argmin(ok))
            raise BadInputError(owner(i + 1), f"uid {uid_hex(f0[i], f1[i])} also occurs in {owner(i)} ({out_name})")


def iter_raw(path: str | os.PathLike, dtype: np.dtype, rows: int) -> Iterator[np.ndarray]:
    """Chunks of a headerless binary file of `dtype` rows (the file is opened per chunk, as in iter_score_chunks)."""
    pos = 0
    while True:
        with open(path, "rb") as f:
            f.seek(pos)
            a = np.fromfile(f, dtype=dtype, count=rows)
        if len(a) == 0:
            return
        pos += a.nbytes
        yield a


def per_stream_rows(chunk_rows: int, k: int) -> int:
    """Buffer rows per input of a k-way merge: about chunk_rows in all, at least 1024 each."""
    return max(1024, chunk_rows // max(1, k))

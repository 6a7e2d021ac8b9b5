"""k-way merge of uid-sorted arrays (score files, per-shard selections) into one sorted `.npy`, streaming.

Memory is about `chunk_rows` rows in total, whatever the number of rows: each input is read through a small buffer,
and each step emits every buffered row <= the smallest "last buffered uid" among the inputs still open (all of
those rows are final: nothing later in any input can sort before them). The output is written sequentially after
an exact `.npy` header (the same bytes `np.save` writes), through a temp file renamed at the end.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .atomic import atomic_open
from .errors import BadInputError
from .scorefile import _uid_hex, iter_score_chunks, uid_le_next, uid_order

ChunkSource = Callable[[int], Iterator[np.ndarray]]  # rows per chunk -> sorted chunks


def count_le(f0: np.ndarray, f1: np.ndarray, p0: int, p1: int) -> int:
    """Rows of a uid-sorted array that are <= (p0, p1)."""
    i = int(np.searchsorted(f0, np.uint64(p0), side="left"))
    j = int(np.searchsorted(f0, np.uint64(p0), side="right"))
    return i + int(np.searchsorted(f1[i:j], np.uint64(p1), side="right"))


class _Stream:
    def __init__(self, chunks: Iterator[np.ndarray]):
        self.chunks = chunks
        self.buf: np.ndarray | None = None
        self.done = False

    def fill(self) -> None:
        while not self.done and (self.buf is None or len(self.buf) == 0):
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                self.done = True


def write_npy_header(f, dtype: np.dtype, n: int) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n,)}
    np.lib.format.write_array_header_1_0(f, header)


def merge_sorted_chunks(sources: Sequence[Iterator[np.ndarray]], out_path: str | os.PathLike, dtype: np.dtype,
                        n_total: int, names: Sequence[str], out_name: str | os.PathLike | None = None) -> int:
    """Merge uid-sorted chunk iterators (each yields sorted arrays of `dtype`, in order) into `out_path` (.npy
    with `n_total` rows, atomic). A uid found in two sources raises BadInputError naming both `names`."""
    streams = [_Stream(iter(s)) for s in sources]
    written = 0
    last: tuple[int, int] | None = None
    with atomic_open(out_path, "wb") as f:
        write_npy_header(f, dtype, n_total)
        while True:
            for s in streams:
                s.fill()
            live = [i for i, s in enumerate(streams) if s.buf is not None and len(s.buf)]
            if not live:
                break
            open_ = [i for i in live if not streams[i].done]
            if open_:  # pivot: smallest last-buffered uid of the inputs that may still have more rows
                p = min(open_, key=lambda i: (int(streams[i].buf["f0"][-1]), int(streams[i].buf["f1"][-1])))
                p0, p1 = int(streams[p].buf["f0"][-1]), int(streams[p].buf["f1"][-1])
            parts, srcs = [], []
            for i in live:
                b = streams[i].buf
                k = len(b) if not open_ else count_le(b["f0"], b["f1"], p0, p1)
                if k:
                    parts.append(b[:k])
                    srcs.append(np.full(k, i, dtype=np.int32))
                    streams[i].buf = b[k:]
            block = np.concatenate(parts) if len(parts) > 1 else parts[0]
            src = np.concatenate(srcs) if len(srcs) > 1 else srcs[0]
            if len(parts) > 1:
                order = uid_order(block["f0"], block["f1"])
                block, src = block[order], src[order]
            _check_unique(block, src, last, names, out_name or out_path)
            block.astype(dtype, copy=False).tofile(f)
            written += len(block)
            last = (int(block["f0"][-1]), int(block["f1"][-1]))
        if written != n_total:
            raise BadInputError(out_name or out_path, f"merged {written} rows, expected {n_total} (inputs changed?)")
    return written


def _check_unique(block, src, last, names, out_name) -> None:
    f0, f1 = block["f0"], block["f1"]
    if last is not None and last == (int(f0[0]), int(f1[0])):
        raise BadInputError(names[int(src[0])], f"uid {_uid_hex(f0[0], f1[0])} also occurs in another input "
                                                f"merged into {out_name}")
    if len(block) > 1:
        ok = uid_le_next(f0, f1, strict=True)
        if not ok.all():
            i = int(np.argmin(ok))
            raise BadInputError(names[int(src[i + 1])], f"uid {_uid_hex(f0[i], f1[i])} also occurs in "
                                                        f"{names[int(src[i])]} (merging into {out_name})")


def merge_sorted_files(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, dtype: np.dtype,
                       check_fields: Sequence[str] = (), chunk_rows: int = 1 << 22) -> int:
    """Merge uid-sorted score files (validated as read) into one sorted `.npy` of `dtype`."""
    from .scorefile import score_info

    n_total = sum(score_info(p)["n"] for p in paths)
    per = max(1 << 14, chunk_rows // max(1, len(paths)))
    sources = [iter_score_chunks(p, per, fields=check_fields) for p in paths]
    return merge_sorted_chunks(sources, out_path, dtype, n_total, [os.fspath(p) for p in paths])


def iter_raw(path: str | os.PathLike, dtype: np.dtype, rows: int) -> Iterator[np.ndarray]:
    """Chunks of a headerless binary file of `dtype` rows."""
    with open(path, "rb") as f:
        while True:
            a = np.fromfile(f, dtype=dtype, count=rows)
            if len(a) == 0:
                return
            yield a

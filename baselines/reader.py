"""Streaming, parallel passes over a pool's metadata: one parquet (+ its npz) per task, only the needed columns.

Workers are processes (`forkserver`, so a parent that already runs pyarrow threads forks nothing unsafe);
each task returns a small result (a score column, a mask, kept uids), never a DataFrame. With one worker the
tasks run in this process, in order.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from sfcomp.errors import BadInputError
from sfcomp.pool import list_metadata, npz_path, read_metadata_file, read_npz
from sfcomp import uids as U


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def parquet_files(metadata_dir: str) -> list[str]:
    return list_metadata(metadata_dir)


def check_columns(files: Sequence[str], columns: Sequence[str], needed_by: str = "this baseline") -> list[int]:
    """Fail fast (before any work) when a parquet lacks a needed column; return each file's row count."""
    import fsspec
    import pyarrow.parquet as pq

    rows = []
    for path in files:
        fs, p = fsspec.core.url_to_fs(path)
        try:
            with fs.open(p, "rb") as f:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
                rows.append(pf.metadata.num_rows)
        except FileNotFoundError:
            raise BadInputError(path, "file does not exist") from None
        except Exception as e:  # truncated / not parquet
            raise BadInputError(path, f"unreadable parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        missing = [c for c in columns if c not in names]
        if missing:
            raise BadInputError(path, f"parquet has no column {missing[0]!r}, needed by {needed_by} "
                                      f"(has: {', '.join(names)})")
    return rows


def check_npz(files: Sequence[str], rows: Sequence[int], key: str) -> int:
    """Fail fast when an npz is missing, lacks `key`, or is not row-aligned with its parquet (headers only).
    Returns the arrays' width."""
    import zipfile

    import fsspec

    width = None
    for path, n in zip(files, rows):
        npz = npz_path(path)
        fs, p = fsspec.core.url_to_fs(npz)
        if not fs.exists(p):
            raise BadInputError(npz, "npz file beside the parquet does not exist (image-based baselines need "
                                     f"its {key!r} embeddings)")
        try:
            with fs.open(p, "rb") as f, zipfile.ZipFile(f) as z:
                names = [x[: -len(".npy")] for x in z.namelist()]
                if key not in names:
                    raise BadInputError(npz, f"npz has no array {key!r} (has: {', '.join(names)})")
                with z.open(f"{key}.npy") as m:
                    fmt = np.lib.format
                    version = fmt.read_magic(m)
                    header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, _ = header(m)
        except BadInputError:
            raise
        except Exception as e:  # not a zip / not an npy member
            raise BadInputError(npz, f"unreadable npz ({type(e).__name__}: {e})") from None
        if len(shape) != 2 or shape[0] != n:
            raise BadInputError(npz, f"npz array {key!r} has {shape[0] if shape else 0} rows but its parquet "
                                     f"has {n}")
        if width is not None and shape[1] != width:
            raise BadInputError(npz, f"npz array {key!r} is {shape[1]}-d, other files' are {width}-d")
        width = shape[1]
    return int(width or 0)


def map_files(func: Callable[..., Any], files: Sequence[str], num_workers: int, *args: Any) -> list[Any]:
    """`[func(path, *args) for path in files]`, one file per task over `num_workers` processes, in file order."""
    return map_per_file(func, files, [args] * len(files), num_workers)


def map_per_file(func: Callable[..., Any], files: Sequence[str], per_file_args: Sequence[tuple],
                 num_workers: int) -> list[Any]:
    """`[func(path, *a) for path, a in zip(files, per_file_args)]` over `num_workers` processes, in file order."""
    workers = max(1, min(int(num_workers), len(files)))
    if workers == 1:
        return [func(path, *a) for path, a in zip(files, per_file_args)]
    ctx = mp.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
        futures = [ex.submit(func, path, *a) for path, a in zip(files, per_file_args)]
        return [f.result() for f in futures]


def read_columns(path: str, columns: Sequence[str]):
    """One parquet's `columns` as a pyarrow Table."""
    return read_metadata_file(path, list(columns))


def column_numpy(table, name: str, dtype=None) -> np.ndarray:
    col = table.column(name)
    arr = col.to_numpy() if col.null_count == 0 else col.to_numpy(zero_copy_only=False)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def column_texts(table, name: str = "text") -> list[str | None]:
    return table.column(name).to_pylist()


def uids_of(table, path: str, mask: np.ndarray | None = None) -> np.ndarray:
    """The kept rows' uids; every row's uid is checked, kept or not (a malformed uid is bad input wherever it is,
    and its row number is then the file's own)."""
    uids = U.hex_to_uids(table.column("uid"), path)
    return uids if mask is None else uids[np.asarray(mask, bool)]


def npz_rows(path: str, key: str, n_rows: int) -> np.ndarray:
    """The npz array `key` beside `path`, checked row-aligned with the parquet's `n_rows`."""
    return read_npz(path, [key], n_rows=n_rows)[key]

"""Per-round score files: one row per pool sample, joinable by uid, memory-mappable (format: docs/SCORES.md).

A score file is a `.npy` holding a structured array
    dtype [("f0", "<u8"), ("f1", "<u8"), (<score name>, "<f4"), ...]
sorted by uid (f0, f1), each uid once, every score finite. `f0, f1` is DataComp's uid encoding, so
`arr[["f0", "f1"]]` is directly a subset array. Beside it, `<file>.json` (the sidecar) says which field is the
default score plus free metadata (pool, round, ...):
    {"format": "sfcomp-scores/1", "n": N, "fields": [...], "default": "cosine", "pool": ..., "round": ...}

Writes are atomic and ordered so that a reader never pairs a new `.npy` with a stale sidecar: an old `.npy` is
removed first, the sidecar is written, and the `.npy` is written last (its presence means the pair is complete).
No torch here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from .atomic import atomic_open, write_json, writing_pair
from .errors import BadInputError, json_kind
from .kway import merge_sorted_chunks, per_stream_rows
from .uids import (NPY_FORMAT_ERRORS, UID_DTYPE, check_npy_size, read_npy_header, uid_hex, uid_le_next, uid_order,
                   uids_to_hex)

FORMAT = "sfcomp-scores/1"
_RESERVED = {"format", "n", "fields", "default"}
CHUNK_ROWS = 1 << 22  # rows per chunk in streaming passes (4M rows = 80 MB at one score field)


def sidecar_path(path: str | os.PathLike) -> Path:
    """`X.npy` -> `X.npy.json`, the sidecar of a score file or subset (the one rule: `sfcomp.guard.sidecar`, the
    bottom layer, which input protection needs too)."""
    from .guard import sidecar

    return Path(sidecar(path))


def score_dtype(fields: Sequence[str]) -> np.dtype:
    return np.dtype([("f0", "<u8"), ("f1", "<u8")] + [(f, "<f4") for f in fields])


def check_rows(path, arr: np.ndarray, fields: Sequence[str], prev: tuple[int, int] | None = None,
               offset: int = 0) -> None:
    """Raise BadInputError naming `path` if `arr` (rows `offset...` of a score file) is unsorted, has a duplicate
    uid, or a non-finite score. `prev` is the last uid of the chunk before (for chunked checks)."""
    if len(arr) == 0:
        return
    f0, f1 = arr["f0"], arr["f1"]
    if prev is not None:
        p0, p1 = prev
        if not (p0 < f0[0] or (p0 == f0[0] and p1 < f1[0])):
            what = "duplicate uid" if (p0, p1) == (int(f0[0]), int(f1[0])) else "uids not sorted"
            raise BadInputError(path, f"{what} at row {offset} ({uid_hex(f0[0], f1[0])}); score files must be "
                                      "sorted by uid with each uid once")
    if len(arr) > 1:
        ok = uid_le_next(f0, f1, strict=True)
        if not ok.all():
            i = int(np.argmin(ok))
            dup = f0[i] == f0[i + 1] and f1[i] == f1[i + 1]
            what = "duplicate uid" if dup else "uids not sorted"
            raise BadInputError(path, f"{what} at row {offset + i + 1} ({uid_hex(f0[i + 1], f1[i + 1])}); score "
                                      "files must be sorted by uid with each uid once")
    for name in fields:
        col = arr[name]
        finite = np.isfinite(col)
        if not finite.all():
            bad = int((~finite).sum())
            i = int(np.argmin(finite))
            raise BadInputError(path, f"{bad} non-finite (NaN/inf) values in score {name!r}, first at row "
                                      f"{offset + i} ({uid_hex(f0[i], f1[i])}: {col[i]})")


def _fields_of(path, dtype: np.dtype) -> list[str]:
    names = dtype.names
    if (names is None or len(names) < 3 or names[:2] != ("f0", "f1")
            or dtype["f0"] != np.dtype("<u8") or dtype["f1"] != np.dtype("<u8")
            or any(dtype[n] != np.dtype("<f4") for n in names[2:])):
        raise BadInputError(path, f"not a score file: dtype {dtype} (expected fields f0,f1 <u8 then one or more "
                                  "<f4 score fields; see docs/SCORES.md)")
    return list(names[2:])


# ---------------------------------------------------------------- writing

def _check_field_names(path, names: Sequence[str]) -> None:
    if not names:
        raise BadInputError(path, "no score fields given")
    for n in names:
        if n in ("f0", "f1") or not str(n).isidentifier():
            raise BadInputError(path, f"bad score field name {n!r} (a Python identifier, not f0/f1)")


def write_scores(path: str | os.PathLike, uids: np.ndarray, scores: Mapping[str, np.ndarray],
                 meta: Mapping | None = None, default: str | None = None) -> None:
    """Write a score file (sorted by uid) and its sidecar, atomically.

    `uids`: structured u8,u8 array (any order); `scores`: field name -> float array of the same length (stored as
    float32; -0.0 becomes 0.0). `default`: the field selection uses when none is named (default: the first).
    Refuses (BadInputError naming `path`, nothing written) NaN/inf scores, duplicate uids, length mismatches.
    """
    path = Path(path)
    fields = list(scores)
    _check_field_names(path, fields)
    default = fields[0] if default is None else default
    if default not in fields:
        raise BadInputError(path, f"default score {default!r} is not one of the fields {fields}")
    meta = dict(meta or {})
    clash = _RESERVED & set(meta)
    if clash:
        raise BadInputError(path, f"metadata may not set reserved keys {sorted(clash)}")
    uids = np.asarray(uids)
    if uids.dtype.names is None or uids.dtype.names[:2] != ("f0", "f1"):
        raise BadInputError(path, f"uids must be a structured u8,u8 array, got dtype {uids.dtype}")
    n = len(uids)
    arr = np.empty(n, dtype=score_dtype(fields))
    order = uid_order(uids["f0"], uids["f1"])
    arr["f0"] = uids["f0"][order]
    arr["f1"] = uids["f1"][order]
    for name in fields:
        col = np.asarray(scores[name])
        if col.shape != (n,):
            raise BadInputError(path, f"score {name!r} has shape {col.shape}, expected ({n},) like the uids")
        arr[name] = col[order]
        arr[name] += np.float32(0.0)  # -0.0 -> 0.0, so float order and bit order agree
    check_rows(path, arr, fields)
    side = {"format": FORMAT, "n": n, "fields": fields, "default": default, **meta}
    _write_pair(path, side, lambda: _save(path, arr))


def _save(path: Path, arr: np.ndarray) -> None:
    import warnings

    with atomic_open(path, "wb") as f, warnings.catch_warnings():
        # a non-latin-1 field name makes numpy write format 3.0 and warn that NumPy < 1.17 cannot read it
        warnings.filterwarnings("ignore", message="Stored array in format 3.0", category=UserWarning)
        np.save(f, arr, allow_pickle=False)


def _write_pair(path: Path, side: dict, write_npy) -> None:
    """Old .npy out, sidecar in, .npy last; on failure neither file is left. One writer of `path` at a time."""
    with writing_pair(path):
        path.unlink(missing_ok=True)  # never leave a new sidecar beside an old .npy
        write_json(sidecar_path(path), side)
        try:
            write_npy()
        except BaseException:
            sidecar_path(path).unlink(missing_ok=True)
            raise


# ---------------------------------------------------------------- reading

def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar's dict, or {} if there is none."""
    side = sidecar_path(path)
    try:
        with open(side) as f:
            out = json.load(f)
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInputError(side, f"unreadable score sidecar ({e})") from None
    except OSError as e:
        raise BadInputError(side, f"unreadable score sidecar ({e.strerror or e})") from None
    if not isinstance(out, dict):
        raise BadInputError(side, f"score sidecar is not a JSON object (got {json_kind(out)}); "
                                  "delete it or write {\"default\": FIELD, ...}")
    return out


def _npy_header(path) -> tuple[np.dtype, int, int]:
    """(dtype, rows, data offset) of a 1-D .npy, with one-line errors."""
    try:
        with open(path, "rb") as f:
            try:
                shape, fortran, dtype = read_npy_header(f)
            except NPY_FORMAT_ERRORS as e:
                raise BadInputError(path, f"not a .npy file ({e})") from None
            offset = f.tell()
    except FileNotFoundError:
        raise BadInputError(path, "score file does not exist") from None
    if len(shape) != 1:
        raise BadInputError(path, f"score file must be 1-D, got shape {shape}")
    if dtype.hasobject:  # pickled Python objects: the header's size says nothing about the file's
        raise BadInputError(path, f"not a score file: dtype {dtype} holds Python objects (a pickle; see docs/SCORES.md)")
    need = offset + shape[0] * dtype.itemsize
    size = os.path.getsize(path)
    if size < need:
        raise BadInputError(path, f"truncated: {size} bytes, header promises {need}")
    check_npy_size(path, need)
    return dtype, int(shape[0]), offset


def _check_sidecar(path, fields: list[str], n: int) -> dict:
    side = read_sidecar(path)
    if side:
        if side.get("n") != n or side.get("fields") != fields:
            raise BadInputError(sidecar_path(path), f"sidecar does not match its .npy (n={side.get('n')!r} "
                                                    f"fields={side.get('fields')!r} vs n={n!r} fields={fields!r})")
        if side.get("default") not in fields:
            raise BadInputError(sidecar_path(path), f"default score {side.get('default')!r} is not a field")
    return side


def score_info(path: str | os.PathLike) -> dict:
    """Header-only look at a score file: {"n", "fields", "default", "sidecar"} (no data read)."""
    dtype, n, _ = _npy_header(path)
    fields = _fields_of(path, dtype)
    side = _check_sidecar(path, fields, n)
    return {"n": n, "fields": fields, "default": side.get("default", fields[0]), "sidecar": side}


def score_fields(path: str | os.PathLike) -> list[str]:
    return score_info(path)["fields"]


def default_field(path: str | os.PathLike) -> str:
    """The sidecar's default score field (the first field when there is no sidecar)."""
    return score_info(path)["default"]


def resolve_field(path: str | os.PathLike, field: str | None) -> str:
    info = score_info(path)
    if field is None:
        return info["default"]
    if field not in info["fields"]:
        raise BadInputError(path, f"no score field {field!r} (fields: {', '.join(info['fields'])})")
    return field


def read_scores(path: str | os.PathLike, mmap: bool = True, validate: bool = True) -> np.ndarray:
    """The structured array of a score file (memory-mapped by default).

    `validate` checks the dtype (always), the sidecar, the uid order/uniqueness and finiteness (chunk by chunk,
    so memory stays bounded even on a memmap of the whole pool).
    """
    info = score_info(path)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, *NPY_FORMAT_ERRORS) as e:
        raise BadInputError(path, f"unreadable .npy ({e})") from None
    if validate:
        prev = None
        for start in range(0, len(arr), CHUNK_ROWS):
            chunk = np.asarray(arr[start : start + CHUNK_ROWS])
            check_rows(path, chunk, info["fields"], prev, start)
            prev = (int(chunk["f0"][-1]), int(chunk["f1"][-1]))
    return arr


def iter_score_chunks(path: str | os.PathLike, rows: int = CHUNK_ROWS, fields: Sequence[str] | None = None,
                      validate: bool = True) -> Iterator[np.ndarray]:
    """Read a score file in chunks with plain reads (not a memmap, so resident memory stays one chunk),
    validating order, uniqueness and finiteness as it goes. Yields structured arrays (all fields)."""
    dtype, n, offset = _npy_header(path)
    all_fields = _fields_of(path, dtype)
    check = all_fields if fields is None else list(fields)
    prev = None
    for start in range(0, n, rows):
        # open per chunk: a k-way merge over thousands of files then holds no file handles between reads
        with open(path, "rb") as f:
            f.seek(offset + start * dtype.itemsize)
            chunk = np.fromfile(f, dtype=dtype, count=min(rows, n - start))
        if len(chunk) != min(rows, n - start):
            raise BadInputError(path, f"truncated at row {start + len(chunk)}")
        if validate:
            check_rows(path, chunk, check, prev, start)
        prev = (int(chunk["f0"][-1]), int(chunk["f1"][-1]))
        yield chunk


# ---------------------------------------------------------------- merging per-rank files

def check_disjoint(paths: Sequence[str | os.PathLike], chunk_rows: int = 1 << 22) -> int:
    """Raise BadInputError if a uid occurs in two of the (each sorted) score files; streams, writes nothing."""
    per = per_stream_rows(chunk_rows, len(paths))
    sources = [iter_score_chunks(p, per, fields=()) for p in paths]  # order and uniqueness within a file checked
    return merge_sorted_chunks(sources, None, UID_DTYPE, None, [os.fspath(p) for p in paths],
                               out_name="the uids of all score files")


def merge_score_files(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                      meta: Mapping | None = None, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Join per-rank score files (same fields, disjoint uids, each sorted) into one sorted score file.

    Streams a k-way merge (memory ~ chunk_rows * row size, whatever the pool size). The sidecar takes the first
    input's default and metadata (minus per-rank keys "rank"/"world_size"), updated by `meta`.
    A uid present in two inputs is an error. Returns the new sidecar dict.
    """
    if not paths:
        raise BadInputError(out_path, "no score files to merge")
    infos = [score_info(p) for p in paths]
    fields = infos[0]["fields"]
    for p, info in zip(paths, infos):
        if info["fields"] != fields:
            raise BadInputError(p, f"score fields {info['fields']} differ from {paths[0]}'s {fields}")
    side = {k: v for k, v in infos[0]["sidecar"].items() if k not in _RESERVED | {"rank", "world_size"}}
    side.update(meta or {})
    default = infos[0]["default"]
    n = sum(i["n"] for i in infos)
    out_path = Path(out_path)
    _write_pair(out_path, {"format": FORMAT, "n": n, "fields": fields, "default": default, **side},
                lambda: merge_sorted_chunks(
                    [iter_score_chunks(p, per_stream_rows(chunk_rows, len(paths)), fields=fields) for p in paths],
                    out_path, score_dtype(fields), n, [os.fspath(p) for p in paths]))
    return read_sidecar(out_path)


# ---------------------------------------------------------------- parquet export

def _is_scores_parquet(path: str | os.PathLike) -> bool:
    import pyarrow.parquet as pq

    try:
        return b"sfcomp_scores" in (pq.read_schema(path).metadata or {})
    except Exception:  # noqa: BLE001 - any unreadable file is not one
        return False


def scores_to_parquet(path: str | os.PathLike, out_parquet: str | os.PathLike,
                      chunk_rows: int = 1 << 20) -> int:
    """Write `uid` (32-char hex string) plus one float32 column per score, in uid order. Returns rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .guard import check_outputs, check_replaceable, with_sidecars

    check_outputs([out_parquet], with_sidecars([path]), what="output")
    check_replaceable(out_parquet, what="output", kind="parquet written by scores-to-parquet",
                      looks_like=_is_scores_parquet, has_sidecar=False)
    info = score_info(path)
    schema = pa.schema([("uid", pa.string())] + [(f, pa.float32()) for f in info["fields"]],
                       metadata={b"sfcomp_scores": json.dumps(info["sidecar"], default=str).encode()})
    rows = 0
    with atomic_open(out_parquet, "wb") as f:
        with pq.ParquetWriter(f, schema) as w:
            for chunk in iter_score_chunks(path, chunk_rows):
                cols = [pa.array(uids_to_hex(chunk[["f0", "f1"]]).astype(object), pa.string())]
                cols += [pa.array(chunk[name]) for name in info["fields"]]
                w.write_table(pa.Table.from_arrays(cols, schema=schema))
                rows += len(chunk)
    return rows

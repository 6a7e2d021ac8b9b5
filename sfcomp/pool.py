"""Read a DataComp pool: metadata parquets (+ row-aligned npz) and img2dataset webdataset shards.

Layout (see docs/FORMATS.md):
    POOL/metadata/<stem>.parquet   uid, url, text, original_width, ... (one file per ~505k rows)
    POOL/metadata/<stem>.npz       optional, row-aligned embeddings (b32_img, b32_txt, l14_img, l14_txt)
    POOL/shards/{:08d}.tar         KEY.jpg / KEY.txt / KEY.json; json["uid"] links a sample to metadata
    POOL/shards/{:08d}.parquet     img2dataset's per-shard status table
    POOL/shards/{:08d}_stats.json  img2dataset's stats ("successes", ...)

Paths may be local or fsspec URLs (s3://..., file://...). No torch here.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .errors import BadInputError
from . import uids as U

_SHARD_RE = re.compile(r"(\d{8,})\.tar$")


def _fs(path: str):
    import fsspec

    path = str(path)
    if _local_despite_colons(path):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(path)
    fs, p = fsspec.core.url_to_fs(path)
    return fs, p


def _local_despite_colons(path: str) -> bool:
    """A local path holding `::` (fsspec's URL chaining, `simplecache::s3://...`): local when the folder or
    file named up to the path component after its last `::` exists here."""
    i = path.rfind("::")
    if i < 0:
        return False
    end = path.find("/", i)
    return os.path.lexists(path if end < 0 else path[:end])


def _file_size(fs, p: str) -> int | None:
    """Size of a regular file; None for anything else: missing, a folder, a dangling link or a link loop."""
    try:
        info = fs.info(p)
    except OSError:  # FileNotFoundError, ELOOP, EACCES, ...
        return None
    return int(info["size"]) if info.get("type") == "file" else None


def _join(base: str, *parts: str) -> str:
    base = str(base).rstrip("/")
    return "/".join([base, *parts])


def _is_url(path: str) -> bool:
    return "://" in str(path)


def _restore(fs, base: str, p: str) -> str:
    """fsspec listings drop the protocol; give back a path in the caller's form."""
    if _is_url(base):
        proto = str(base).split("://", 1)[0]
        return p if "://" in p else f"{proto}://{p}"
    return p


@dataclass
class ShardErrors:
    """Per-pass counts of what could not be read; reported, never fatal."""

    corrupt_members: int = 0
    missing_shards: int = 0
    captions_not_utf8: int = 0  # decoded with U+FFFD replacements, still used
    messages: list[str] = field(default_factory=list)

    def add(self, kind: str, msg: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.messages) < 100:
            self.messages.append(msg)

    def as_dict(self) -> dict:
        return {"corrupt_members": self.corrupt_members, "missing_shards": self.missing_shards,
                "captions_not_utf8": self.captions_not_utf8, "messages": self.messages}


class Pool:
    """A DataComp-format pool at `root` (local folder or fsspec URL)."""

    def __init__(self, root: str | os.PathLike):
        self.root = str(root)
        self.metadata_dir = _join(self.root, "metadata")
        self.shards_dir = _join(self.root, "shards")

    # ---- metadata -------------------------------------------------------------------------------
    def metadata_files(self) -> list[str]:
        return list_metadata(self.metadata_dir)

    def read_metadata(self, columns: Sequence[str] | None = None):
        """All metadata rows as one pyarrow Table (only `columns`)."""
        import pyarrow as pa

        return pa.concat_tables([read_metadata_file(p, columns) for p in self.metadata_files()])

    def iter_metadata(self, columns: Sequence[str] | None = None) -> Iterator[tuple[str, Any]]:  # pyarrow Tables
        for p in self.metadata_files():
            yield p, read_metadata_file(p, columns)

    def metadata_row_count(self) -> int | None:
        """Rows in the metadata from the parquet footers (no data read); None when a footer is unreadable (the
        metadata reader then reports that file)."""
        import pyarrow.parquet as pq

        total = 0
        for path in self.metadata_files():
            fs, q = _fs(path)
            try:
                with fs.open(q, "rb") as f:
                    total += pq.ParquetFile(f).metadata.num_rows
            except Exception:  # any unreadable footer: leave the report to the metadata reader
                return None
        return total

    def metadata_uids(self) -> np.ndarray:
        """Every metadata uid as `u8,u8`, in file-then-row order (not sorted)."""
        return U.concat(_parallel_map(read_uids, self.metadata_files()))

    # ---- shards ---------------------------------------------------------------------------------
    def shard_files(self) -> list[str]:
        fs, p = _fs(self.shards_dir)
        if not fs.exists(p):
            raise BadInputError(self.shards_dir, "pool has no shards folder")
        names = [x for x in fs.ls(p, detail=False) if _SHARD_RE.search(x)]
        return sorted(_restore(fs, self.shards_dir, x) for x in names)

    def shard_stats(self) -> dict[str, dict]:
        """`{shard tar path: its _stats.json}` for shards that have one (img2dataset's completion marker)."""
        out = {}
        for tar in self.shard_files():
            stats = tar[: -len(".tar")] + "_stats.json"
            fs, p = _fs(stats)
            if fs.exists(p):
                with fs.open(p, "r") as f:
                    try:
                        out[tar] = json.load(f)
                    except json.JSONDecodeError as e:
                        raise BadInputError(stats, f"unreadable stats json ({e})") from None
        return out

    def present_uids(self, errors: ShardErrors | None = None) -> np.ndarray:
        """uids of the samples actually in the shards (`u8,u8`, unsorted).

        Read from each shard's img2dataset parquet (rows with status "success"), which is fast; a shard
        without one is scanned tar member by member. A tar that is not a readable file (a dangling link, a
        folder) counts as a missing shard whatever its parquet says.
        """
        errors = errors if errors is not None else ShardErrors()

        def shard_uids(tar: str) -> np.ndarray:
            tfs, tp = _fs(tar)
            if _file_size(tfs, tp) is None:  # a dangling link or a folder: its parquet's rows are not readable
                errors.add("missing_shards", f"{tar}: shard does not exist or is not a readable file")
                return np.empty(0, U.UID_DTYPE)
            table_path = tar[: -len(".tar")] + ".parquet"
            fs, p = _fs(table_path)
            if fs.exists(p):
                return _success_uids(table_path)
            return U.concat(U.hex_to_uids([s["uid"]], tar) for s in iter_tar_json(tar, errors))

        parts = _parallel_map(shard_uids, self.shard_files())
        return U.concat(parts)

    def iter_samples(
        self,
        shards: Sequence[str] | None = None,
        keep_uid: Callable[[str], bool] | None = None,
        decode: str | None = "pil",
        errors: ShardErrors | None = None,
    ) -> Iterator[dict]:
        """Yield samples `{"uid", "key", "image", "text", "json"}` from the shards, via webdataset.

        `keep_uid` filters on json["uid"] BEFORE the image is decoded. `decode="pil"` gives PIL images,
        None gives the raw jpg bytes. A corrupt member or tar is skipped and counted in `errors`.
        """
        yield from iter_shard_samples(shards or self.shard_files(), keep_uid, decode, errors)


# ---- module-level readers (usable without a Pool) ----------------------------------------------------
def _parallel_map(func: Callable, items: Sequence, max_workers: int | None = None) -> list:
    """`[func(x) for x in items]` on a thread pool: pyarrow's parquet reads release the GIL, and remote (fsspec)
    reads overlap their latency. Order is kept; the first error is raised as is."""
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    workers = max_workers or min(8, (os.cpu_count() or 1) * 2)
    if len(items) < 2 or workers < 2:
        return [func(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(func, items))


def list_metadata(metadata_dir: str | os.PathLike) -> list[str]:
    """Sorted parquet files of a metadata folder; a clear error when the folder is missing or empty."""
    metadata_dir = str(metadata_dir)
    fs, p = _fs(metadata_dir)
    if not fs.exists(p) or not fs.isdir(p):
        raise BadInputError(metadata_dir, "metadata folder does not exist")
    if fs.isdir(f"{p.rstrip('/')}/metadata"):  # its own parquet files (truth.parquet) are not metadata
        raise BadInputError(metadata_dir, f"is a pool folder (it holds metadata/), not a metadata folder: give "
                                          f"{metadata_dir.rstrip('/')}/metadata")
    files = sorted(_restore(fs, metadata_dir, x) for x in fs.ls(p, detail=False) if x.endswith(".parquet"))
    if not files:
        raise BadInputError(metadata_dir, "metadata folder holds no .parquet files (empty pool)")
    return files


def read_metadata_file(path: str, columns: Sequence[str] | None = None):
    """One metadata parquet as a pyarrow Table with only `columns`; clear errors for truncation/missing columns."""
    import pyarrow.parquet as pq

    fs, p = _fs(path)
    try:
        # local files go through pyarrow's own (memory-mapped) reader; URLs through fsspec
        with (fs.open(p, "rb") if _is_url(path) else open(p, "rb")) as f:
            pf = pq.ParquetFile(f, memory_map=not _is_url(path))
            names = pf.schema_arrow.names
            if columns is not None:
                missing = [c for c in columns if c not in names]
                if missing:
                    raise BadInputError(path, f"parquet has no column {missing[0]!r} (has: {', '.join(names)})")
            return pf.read(columns=list(columns) if columns is not None else None)
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(path, "file does not exist") from None
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for truncated or non-parquet files
        raise BadInputError(path, f"unreadable parquet ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def read_uids(path: str) -> np.ndarray:
    """The `uid` column of one metadata parquet as `u8,u8` (row order)."""
    table = read_metadata_file(path, ["uid"])
    return U.hex_to_uids(table.column("uid"), path)


def npz_path(parquet_path: str) -> str:
    return str(parquet_path)[: -len(".parquet")] + ".npz"


def read_npz(parquet_path: str, keys: Sequence[str], n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Arrays `keys` of the npz beside `parquet_path`, checked to be row-aligned with it."""
    import pyarrow.parquet as pq

    path = npz_path(parquet_path)
    fs, p = _fs(path)
    if not fs.exists(p):
        raise BadInputError(path, "npz file beside the parquet does not exist")
    if n_rows is None:
        with _fs(parquet_path)[0].open(_fs(parquet_path)[1], "rb") as f:
            n_rows = pq.ParquetFile(f).metadata.num_rows
    out = {}
    try:
        with fs.open(p, "rb") as f:
            data = np.load(io.BytesIO(f.read()) if _is_url(path) else f, allow_pickle=False)
            for k in keys:
                if k not in data.files:
                    raise BadInputError(path, f"npz has no array {k!r} (has: {', '.join(data.files)})")
                out[k] = data[k]
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(path, f"unreadable npz ({type(e).__name__}: {e})") from None
    for k, a in out.items():
        if a.ndim == 0:
            raise BadInputError(path, f"npz array {k!r} is a scalar, not one row per parquet row")
        if len(a) != n_rows:
            raise BadInputError(path, f"npz array {k!r} has {len(a)} rows but its parquet has {n_rows}")
    return out


def is_readable_file(path: str) -> bool:
    """`path` (local or fsspec) is a regular file: not gone, a folder, a dangling link or a link loop."""
    return _file_size(*_fs(path)) is not None


def shard_success_uids(tar_path: str) -> np.ndarray | None:
    """uids img2dataset's per-shard parquet beside `tar_path` lists as downloaded ('success'), or None without
    one."""
    table = str(tar_path)[: -len(".tar")] + ".parquet"
    fs, p = _fs(table)
    return _success_uids(table) if fs.exists(p) else None


def _success_uids(table_path: str) -> np.ndarray:
    import pyarrow.compute as pc

    t = read_metadata_file(table_path, ["uid", "status"])
    t = t.filter(pc.equal(t.column("status"), "success"))
    return U.hex_to_uids(t.column("uid"), table_path)


def iter_tar_json(tar_path: str, errors: ShardErrors) -> Iterator[dict]:
    """Yield the parsed json member of each sample of one tar (no image decoding)."""
    fs, p = _fs(tar_path)
    if _file_size(fs, p) is None:
        errors.add("missing_shards", f"{tar_path}: shard does not exist or is not a readable file")
        return
    try:
        with fs.open(p, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tf:
            for m in tf:
                if not m.name.endswith(".json"):
                    continue
                member = tf.extractfile(m) if m.isfile() else None
                if member is None:
                    errors.add("corrupt_members", f"{tar_path}: member {m.name}: not a regular file")
                    continue
                try:
                    sample = json.loads(member.read())
                except (json.JSONDecodeError, UnicodeDecodeError, tarfile.TarError, OSError) as e:
                    errors.add("corrupt_members", f"{tar_path}: member {m.name}: {e}")
                    continue
                if not isinstance(sample, dict) or not isinstance(sample.get("uid"), str):
                    errors.add("corrupt_members", f"{tar_path}: member {m.name}: not a JSON object with a uid")
                    continue
                yield sample
    except (tarfile.TarError, OSError, EOFError) as e:
        errors.add("corrupt_members", f"{tar_path}: {type(e).__name__}: {e}")


def iter_shard_samples(
    shards: Sequence[str],
    keep_uid: Callable[[str], bool] | None = None,
    decode: str | None = "pil",
    errors: ShardErrors | None = None,
) -> Iterator[dict]:
    """webdataset iteration over `shards`: group members into samples, filter by uid, then decode."""
    import webdataset as wds

    errors = errors if errors is not None else ShardErrors()
    current = {"url": None}

    def handler(exn: Exception) -> bool:
        errors.add("corrupt_members", f"{current['url']}: {type(exn).__name__}: {exn}")
        return True  # skip and continue

    for url in shards:
        fs, p = _fs(url)
        try:
            if _file_size(fs, p) is None:  # gone, a folder, a dangling link, a link loop
                raise FileNotFoundError(url)
            stream = fs.open(p, "rb")
        except OSError as e:
            errors.add("missing_shards", f"{url}: shard does not exist or is not a readable file "
                                         f"({e.strerror or type(e).__name__})")
            continue
        current["url"] = url
        with stream:
            # webdataset's own tar expansion and key grouping, over any fsspec stream (local, s3://, ...)
            members = wds.tariterators.tar_file_expander([{"stream": stream, "url": url}], handler=handler)
            yield from _samples(url, wds.tariterators.group_by_keys(members, handler=handler), keep_uid, decode,
                                errors)


def _samples(url, grouped, keep_uid, decode, errors) -> Iterator[dict]:
    for raw in grouped:
        try:
            meta = json.loads(raw["json"])
            uid = meta["uid"]
        except Exception as e:  # any broken json is a corrupt member
            errors.add("corrupt_members", f"{url}: sample {raw.get('__key__')}: bad json ({e})")
            continue
        if keep_uid is not None and not keep_uid(uid):
            continue
        img = raw.get("jpg") or raw.get("png") or raw.get("webp") or raw.get("jpeg")
        if img is None:
            errors.add("corrupt_members", f"{url}: sample {raw.get('__key__')}: no image member")
            continue
        if decode == "pil":
            from PIL import Image

            try:
                im = Image.open(io.BytesIO(img))
                im.load()
                img = im.convert("RGB")
            except Exception as e:
                errors.add("corrupt_members", f"{url}: sample {raw.get('__key__')}: undecodable image ({e})")
                continue
        text, not_utf8 = _caption(raw.get("txt"), meta)
        if not_utf8:
            errors.add("captions_not_utf8", f"{url}: sample {raw.get('__key__')}: caption is not UTF-8 "
                                            "(decoded with replacement characters)")
        yield {
            "uid": uid,
            "key": raw.get("__key__"),
            "image": img,
            "text": text,
            "text_not_utf8": not_utf8,
            "json": meta,
            "shard": url,
        }


def _caption(txt, meta: dict) -> tuple[str, bool]:
    """A sample's caption (its .txt member, else json["caption"]) and whether its bytes were not UTF-8: one bad
    caption is decoded with U+FFFD replacements and counted, never fatal."""
    if not isinstance(txt, bytes):
        caption = meta.get("caption")
        return (caption if isinstance(caption, str) else ""), False
    try:
        return txt.decode("utf-8"), False
    except UnicodeDecodeError:
        return txt.decode("utf-8", errors="replace"), True


def pool_fingerprint(pool: Pool) -> str:
    """Hash of the pool's metadata and shard file names and sizes (cheap: a listing, no data read). A shard that
    is not a readable file (gone, a folder, a dangling link, a link loop) counts by its name alone: reading
    it later counts it as a missing shard."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for p in pool.metadata_files() + pool.shard_files():
        fs, q = _fs(p)
        size = _file_size(fs, q)
        h.update(f"{Path(p).name}:{'unreadable' if size is None else size}\n".encode())
    return h.hexdigest()[:16]

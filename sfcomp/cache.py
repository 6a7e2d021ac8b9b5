"""Decode a pool once into a memory-mapped cache: uint8 pixels at a preset's resolution + token ids, by uid.

Used by low-resolution presets (`"cache": true`; at 32 px, context 16, 3.2 KB a sample: 40 GB for DataComp
small's 12.8M, 404 GB for medium's 128M). Higher resolutions stream shards instead (sfcomp.stream): 224 px is
150 KB a sample, 1.9 TB at small. `cache_bytes_per_sample` is the exact figure for any preset;
bench/experiments/cache_table.py tabulates it per preset and DataComp scale.

Layout of a cache folder (one per (image size, context length, pool)):
    parts/<shard stem>.npz    one shard's rows: uids (u8,u8), pixels (n,S,S,3) u8, tokens (n,ctx) i4, written
    parts/<shard stem>.done   atomically, then a JSON marker (counts, errors); a rerun skips finished shards;
                              removed once manifest.json is written (they would double the cache on disk)
    uids.npy                  all rows, sorted by uid, each uid once (u8,u8)
    pixels.npy  tokens.npy    row-aligned with uids.npy; memory-mapped by readers
    shard.npy                 int32 index into manifest["shards"]: the shard each row came from
    pool.json                 the pool's fingerprint (names and sizes of its files), written before any part
    manifest.json             written last: shards, counts, skipped shards, errors, pool fingerprint (the
                              completion marker); a folder another pool made is refused, never reused, except
                              the pool's own POOL/.sfcomp-cache/<name> (a copied or changed pool's): rebuilt

Consolidation allocates pixels.npy / tokens.npy on disk before memory-mapping them, so a full disk is a one-line
error (temp files removed; the rerun keeps the decoded parts), never SIGBUS.

Only samples whose uid is in the pool's metadata are decoded (membership filter on the json member, before the
JPEG is decoded). Corrupt members and missing shards are skipped and counted, never fatal; a caption that is not
UTF-8 is decoded with replacement characters and counted (`captions_not_utf8`).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from . import uids as U
from .atomic import atomic_open, write_json
from .errors import BadInputError
from .guard import refuse_foreign_folder
from .pool import Pool, ShardErrors

CACHE_FORMAT = "sfcomp-cache/1"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # EFBIG: a file-size limit (ulimit -f) reads the same
_CACHE_FILES = ("manifest.json", "uids.npy", "pixels.npy", "tokens.npy", "shard.npy", "pool.json")
# what a build killed before it wrote pool.json can have left in a cache folder (its lock, an empty parts/, the
# temp file of pool.json): a folder holding anything else and no pool.json / manifest.json is not a cache
_BUILD_LEFTOVERS = (".build.lock", "parts", ".tmp-pool.json.*")


def cache_bytes_per_sample(preset: dict) -> int:
    """Bytes one sample takes in a finished cache: pixels (S x S x 3 uint8), token ids (ctx int32), its uid
    (16 bytes) and its shard index (int32). The .npy headers and manifest add a few KB per cache, not per sample;
    the decoded parts (parts/, the resumption state of an unfinished build) are removed once it finishes."""
    s, ctx = int(preset["image_size"]), int(preset["context_length"])
    return s * s * 3 + ctx * 4 + 16 + 4


def resize_center_crop(im, size: int) -> np.ndarray:
    """PIL image -> (size, size, 3) uint8: shortest side to `size` (bicubic), centre crop (open_clip's eval
    transform)."""
    from PIL import Image

    im = im.convert("RGB")
    w, h = im.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8)


def _shard_stem(shard: str) -> str:
    return Path(str(shard)).name[: -len(".tar")]


def decode_shard(shard: str, part_dir: str, image_size: int, context_length: int,
                 members: np.ndarray | None) -> dict:
    """Decode one shard into parts/<stem>.npz + .done (skipped if .done exists). Returns the marker dict."""
    from .text import tokenize_captions

    part_dir = Path(part_dir)
    stem = _shard_stem(shard)
    done = part_dir / f"{stem}.done"
    if done.exists():
        return json.loads(done.read_text())
    errors = ShardErrors()
    keep = None
    if members is not None:
        hex_members = set(U.uids_to_hex(members).tolist())
        keep = hex_members.__contains__
    uid_list, pixels, texts = [], [], []
    for s in _iter([shard], keep, errors):
        try:
            pixels.append(resize_center_crop(s["image"], image_size))
        except Exception as e:  # a broken image is a corrupt member
            errors.add("corrupt_members", f"{shard}: {s['key']}: {e}")
            continue
        uid_list.append(s["uid"])
        texts.append(s["text"])
    n = len(uid_list)
    uids = U.hex_to_uids(uid_list, shard) if n else np.empty(0, U.UID_DTYPE)
    lost = _missing_members(shard, uids, members) if not errors.missing_shards else 0
    # the samples counted corrupt while reading (no json, bad image, ...) are among those its table lists: count
    # only the ones beyond them, so that one broken sample counts once
    lost = max(0, lost - errors.corrupt_members)
    if lost:  # a tar cut short can end cleanly at a member boundary: compare with img2dataset's own table
        errors.corrupt_members += lost
        errors.messages.append(f"{shard}: {lost} samples its img2dataset table lists as downloaded are missing "
                               "or unreadable (truncated tar?)")
    px = np.stack(pixels) if n else np.zeros((0, image_size, image_size, 3), np.uint8)
    tok = tokenize_captions(texts, context_length)
    with atomic_open(part_dir / f"{stem}.npz", "wb") as f:
        np.savez(f, uids=uids, pixels=px, tokens=tok)
    marker = {"shard": str(shard), "rows": n, **{k: v for k, v in errors.as_dict().items()}}
    write_json(done, marker)
    return marker


def _missing_members(shard: str, got: np.ndarray, members: np.ndarray | None) -> int:
    """How many samples the shard's img2dataset parquet lists as 'success' (and in the pool) were not read."""
    from .pool import shard_success_uids

    try:
        expected = shard_success_uids(shard)
    except BadInputError:
        return 0
    if expected is None:
        return 0
    if members is not None:
        expected = expected[U.isin_sorted(expected, members)]
    return int(len(expected) - U.isin_sorted(expected, U.sort_uids(got)).sum()) if len(got) else len(expected)


def _iter(shards, keep, errors):
    from .pool import iter_shard_samples

    yield from iter_shard_samples(shards, keep_uid=keep, decode="pil", errors=errors)


def _decode_shard_star(args):
    return decode_shard(*args)


@dataclass
class PoolCache:
    """A finished cache, memory-mapped: `uids` (sorted), `pixels`, `tokens`, `shard` row-aligned."""

    root: Path
    uids: np.ndarray
    pixels: np.ndarray
    tokens: np.ndarray
    shard: np.ndarray
    manifest: dict

    @classmethod
    def open(cls, root: str | os.PathLike) -> PoolCache:
        root = Path(root)
        mpath = root / "manifest.json"
        if not mpath.exists():
            raise BadInputError(root, "cache is not complete (no manifest.json); rebuild it with build_cache")
        manifest = json.loads(mpath.read_text())
        def load(name):
            return np.load(root / name, mmap_mode="r", allow_pickle=False)
        c = cls(root, load("uids.npy"), load("pixels.npy"), load("tokens.npy"), load("shard.npy"), manifest)
        if not (len(c.uids) == len(c.pixels) == len(c.tokens) == len(c.shard) == manifest["rows"]):
            raise BadInputError(root, "cache arrays disagree in length with manifest.json; delete and rebuild")
        return c

    @property
    def shards(self) -> list[str]:
        return self.manifest["shards"]

    def rows_of_shards(self, shard_names: Sequence[str]) -> np.ndarray:
        """Row indices of the samples that came from the given shards (names, stems or paths)."""
        want = {_shard_stem(s if str(s).endswith(".tar") else f"{s}.tar") for s in shard_names}
        ids = [i for i, s in enumerate(self.shards) if _shard_stem(s) in want]
        if len(ids) != len(want):
            known = ", ".join(_shard_stem(s) for s in self.shards[:5])
            raise BadInputError(None, f"--train-shards names shards not in the pool: "
                                      f"{sorted(want - {_shard_stem(self.shards[i]) for i in ids})} "
                                      f"(pool shards look like: {known}, ...)")
        return np.flatnonzero(np.isin(self.shard, ids))


def default_cache_root(pool_root: str) -> Path:
    """The folder caches go in without --cache-dir: $SFCOMP_CACHE_DIR, else POOL/.sfcomp-cache."""
    return Path(os.environ.get("SFCOMP_CACHE_DIR") or Path(pool_root) / ".sfcomp-cache")


def cache_dir_for(pool_root: str, preset: dict, cache_root: str | os.PathLike | None = None,
                  fingerprint: str | None = None) -> Path:
    """Where a pool's cache lives for a preset: POOL/.sfcomp-cache/<image_size>px-ctx<context_length>, or, under
    a root shared by several pools (CACHE_ROOT or $SFCOMP_CACHE_DIR), .../<image_size>px-ctx<context_length>-<pool
    fingerprint> so that two pools never share a folder."""
    name = f"{preset['image_size']}px-ctx{preset['context_length']}"
    shared = cache_root or os.environ.get("SFCOMP_CACHE_DIR")
    if not shared:
        return Path(pool_root) / ".sfcomp-cache" / name
    if fingerprint is None:
        from .pool import pool_fingerprint

        fingerprint = pool_fingerprint(Pool(pool_root))
    return Path(shared) / f"{name}-{fingerprint}"


def _check_same_pool(path: Path, fingerprint: str) -> None:
    """Refuse a cache folder (manifest.json or pool.json) that another pool (or this pool before it changed) made."""
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text()).get("pool_fingerprint")
    except (OSError, ValueError) as e:
        raise BadInputError(path, f"unreadable ({e}); delete the cache folder to rebuild it") from None
    if old is not None and old != fingerprint:
        raise BadInputError(path, f"cache was built from another pool (fingerprint {old}, this pool {fingerprint}); "
                                  "use another --cache-dir, or delete this cache folder to rebuild it")


def _recorded_fingerprint(root: Path) -> str | None:
    """The pool fingerprint a cache folder records (manifest.json, else pool.json); None when it has none or
    cannot be read (then `_check_same_pool` names the file)."""
    for name in ("manifest.json", "pool.json"):
        try:
            fp = json.loads((root / name).read_text()).get("pool_fingerprint")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(fp, str):
            return fp
    return None


def _is_pools_own_cache(pool: Pool, root: Path) -> bool:
    """`root` is a folder of the pool's own default cache location, POOL/.sfcomp-cache/<name>."""
    if "://" in pool.root:
        return False
    try:
        return root.resolve().parent == (Path(pool.root) / ".sfcomp-cache").resolve()
    except OSError:
        return False


def _clear_cache(root: Path) -> None:
    """Empty a cache folder of what sfcomp wrote there (manifest.json first, so that a kill midway leaves an
    unfinished cache, never a wrong finished one); the build lock and anything else stay."""
    for name in _CACHE_FILES:
        (root / name).unlink(missing_ok=True)
    _remove_temps(root)
    _remove_parts(root)


def _remove_temps(root: Path) -> None:
    """Remove the temp files (`.tmp-*`) a failed or killed build left in the cache folder and its parts/."""
    for folder in (root, root / "parts"):
        if folder.is_dir():
            for p in folder.glob(".tmp-*"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def build_cache(pool: Pool | str, preset: dict, cache_dir: str | os.PathLike | None = None,
                workers: int = 1, progress: bool = True) -> PoolCache:
    """Decode every present sample of `pool` (in its metadata) once into a memory-mapped cache; resumable.

    Returns the opened cache. A finished cache (manifest.json) is opened without reading any shard. A cache
    folder that another pool made (its recorded pool fingerprint differs) is refused, except in the pool's own
    default location POOL/.sfcomp-cache/: there it is sfcomp's stale cache (a copied pool's, or this pool's
    before it changed) and is rebuilt in place.
    """
    from .pool import pool_fingerprint

    pool = pool if isinstance(pool, Pool) else Pool(pool)
    fingerprint = pool_fingerprint(pool)
    root = Path(cache_dir) if cache_dir else cache_dir_for(pool.root, preset, fingerprint=fingerprint)
    recorded = _recorded_fingerprint(root)
    stale = recorded not in (None, fingerprint) and _is_pools_own_cache(pool, root)
    if not stale:
        _check_same_pool(root / "manifest.json", fingerprint)
        if (root / "manifest.json").exists():
            return PoolCache.open(root)
        _check_same_pool(root / "pool.json", fingerprint)
    # bad input is refused before anything is written (not even the lock file); a user's folder too
    refuse_foreign_folder(root, markers=("manifest.json", "pool.json"), leftovers=_BUILD_LEFTOVERS,
                          what="cache folder", made_by="the cache build")
    shards = pool.shard_files()
    if not shards:
        raise BadInputError(pool.shards_dir, "pool has no .tar shards (empty pool)")
    members = U.sort_uids(pool.metadata_uids())
    if U.count_duplicates(members):
        _refuse_duplicate(pool, members)
    root.mkdir(parents=True, exist_ok=True)
    # two runs on one pool (a sweep, the bench) would delete each other's temp files: one builds, the other
    # waits here and then opens the finished cache
    with open(root / ".build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _build_cache_locked(pool, preset, root, fingerprint, shards, members, workers, progress, stale)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_cache_locked(pool: Pool, preset: dict, root: Path, fingerprint: str, shards: list[str],
                        members: np.ndarray, workers: int, progress: bool, stale: bool = False) -> PoolCache:
    recorded = _recorded_fingerprint(root)
    if stale and recorded not in (None, fingerprint):  # not yet rebuilt by a run we waited for
        if progress:
            print(f"note: {root}: cache was built from another pool (fingerprint {recorded}, this pool "
                  f"{fingerprint}: a copy, or the pool changed); rebuilding it", file=sys.stderr)
        _clear_cache(root)
    if (root / "manifest.json").exists():  # built by the run we waited for
        _check_same_pool(root / "manifest.json", fingerprint)
        return PoolCache.open(root)
    _remove_temps(root)  # what a killed or failed earlier build left (we hold the lock: no build is running)
    try:
        _decode_and_consolidate(pool, preset, root, fingerprint, shards, members, workers, progress)
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        _remove_temps(root)
        name = Path(os.fsdecode(e.filename)).name.removeprefix(".tmp-") if e.filename else "a cache file"
        raise BadInputError(root, f"disk full while writing the cache ({os.strerror(e.errno)}, writing {name}); "
                                  "free some space and rerun: the shards decoded so far are kept") from None
    return PoolCache.open(root)


def _decode_and_consolidate(pool: Pool, preset: dict, root: Path, fingerprint: str, shards: list[str],
                            members: np.ndarray, workers: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    part_dir = root / "parts"
    part_dir.mkdir(parents=True, exist_ok=True)
    write_json(root / "pool.json", {"pool": str(pool.root), "pool_fingerprint": fingerprint})
    jobs = [(s, str(part_dir), preset["image_size"], preset["context_length"], members) for s in shards]
    markers = []
    bar = tqdm(total=len(jobs), desc="cache", unit="shard", disable=not progress, leave=False, dynamic_ncols=True)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as mpool:
            for m in mpool.imap(_decode_shard_star, jobs):
                markers.append(m)
                bar.update(1)
    else:
        for j in jobs:
            markers.append(decode_shard(*j))
            bar.update(1)
    bar.close()
    _consolidate(root, shards, markers, preset, fingerprint)


def _refuse_duplicate(pool: Pool, sorted_members: np.ndarray) -> None:
    """Raise naming the first repeated uid and the metadata file that repeats it."""
    from .pool import read_uids

    same = (sorted_members["f0"][1:] == sorted_members["f0"][:-1]) & \
        (sorted_members["f1"][1:] == sorted_members["f1"][:-1])
    dup = sorted_members[1:][same][0]
    seen, path = 0, None
    for f in pool.metadata_files():
        u = read_uids(f)
        seen += int(((u["f0"] == dup["f0"]) & (u["f1"] == dup["f1"])).sum())
        if seen > 1:
            path = f
            break
    raise BadInputError(path or pool.metadata_dir, f"duplicate uid {U.uids_to_hex(sorted_members[1:][same][:1])[0]} "
                                                   "in the pool metadata (each sample must appear once)")


def _consolidate(root: Path, shards: list[str], markers: list[dict], preset: dict, fingerprint: str) -> None:
    """Join per-shard parts into uid-sorted memmaps; manifest.json last."""
    s, ctx = preset["image_size"], preset["context_length"]
    part_uids = []
    for sh in shards:
        with np.load(root / "parts" / f"{_shard_stem(sh)}.npz") as z:
            part_uids.append(z["uids"])
    all_uids = U.concat(part_uids)
    shard_of = np.concatenate([np.full(len(u), i, np.int32) for i, u in enumerate(part_uids)]) \
        if part_uids else np.zeros(0, np.int32)
    order = np.lexsort((all_uids["f1"], all_uids["f0"]))
    sorted_uids = all_uids[order]
    dups = U.count_duplicates(sorted_uids)
    keep = np.ones(len(order), bool)
    if dups:  # the same uid in two shards: keep its first occurrence (reported in the manifest)
        keep[1:] = ~((sorted_uids["f0"][1:] == sorted_uids["f0"][:-1]) & (sorted_uids["f1"][1:] == sorted_uids["f1"][:-1]))
    order = order[keep]
    n = len(order)
    dest = np.empty(len(all_uids), np.int64)
    dest[:] = -1
    dest[order] = np.arange(n)
    tmp = {name: root / f".tmp-{name}" for name in ("pixels.npy", "tokens.npy")}
    px = _allocated_memmap(tmp["pixels.npy"], np.uint8, (n, s, s, 3))
    tk = _allocated_memmap(tmp["tokens.npy"], np.int32, (n, ctx))
    start = 0
    for sh, u in zip(shards, part_uids):
        d = dest[start : start + len(u)]
        ok = d >= 0
        if len(u):
            with np.load(root / "parts" / f"{_shard_stem(sh)}.npz") as z:
                px[d[ok]] = z["pixels"][ok]
                tk[d[ok]] = z["tokens"][ok]
        start += len(u)
    px.flush()
    tk.flush()
    del px, tk
    for name, t in tmp.items():
        os.replace(t, root / name)
    with atomic_open(root / "uids.npy", "wb") as f:
        np.save(f, all_uids[order])
    with atomic_open(root / "shard.npy", "wb") as f:
        np.save(f, shard_of[order])
    write_json(root / "manifest.json", {
        "format": CACHE_FORMAT, "pool_fingerprint": fingerprint, "rows": int(n), "image_size": s,
        "context_length": ctx, "shards": list(shards),
        "rows_per_shard": [m["rows"] for m in markers],
        "corrupt_members": int(sum(m["corrupt_members"] for m in markers)),
        "missing_shards": int(sum(m["missing_shards"] for m in markers)),
        "captions_not_utf8": int(sum(m.get("captions_not_utf8", 0) for m in markers)),
        "duplicate_uids_dropped": int(dups),
        "messages": [msg for m in markers for msg in m["messages"]][:100],
    })
    _remove_parts(root)


def _remove_parts(root: Path) -> None:
    """The decoded parts hold every pixel again: once manifest.json marks the cache finished, nothing reads them
    (a changed pool rebuilds from its shards), and keeping them would double the cache's size on disk."""
    parts = root / "parts"
    if parts.is_dir():
        for p in list(parts.glob("*.npz")) + list(parts.glob("*.done")):
            p.unlink(missing_ok=True)
        if not any(parts.iterdir()):
            parts.rmdir()


def _allocated_memmap(path: Path, dtype, shape: tuple) -> np.ndarray:
    """A writable memmap of a new .npy whose blocks are all allocated on disk first.

    A memmap over a sparse file takes its disk blocks as pages are written: on a full disk that is SIGBUS, no
    message. Allocating every block up front (posix_fallocate, else writing zeros) makes a full disk an OSError
    (ENOSPC, EDQUOT, or EFBIG under a file-size limit) here instead, with the file's name.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.flush()
            offset = f.tell()
            allocate = getattr(os, "posix_fallocate", None)
            try:
                if allocate is None:
                    raise OSError(errno.EOPNOTSUPP, "no posix_fallocate")
                if nbytes:
                    allocate(f.fileno(), offset, nbytes)
            except OSError as e:
                if e.errno in _DISK_FULL:
                    raise
                _write_zeros(f, nbytes)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(e.errno, e.strerror, os.fspath(path)) from None
    return np.lib.format.open_memmap(path, "r+")


def _write_zeros(f, nbytes: int, chunk: int = 1 << 24) -> None:
    zeros = bytes(min(chunk, nbytes))
    left = nbytes
    while left > 0:
        f.write(zeros[: min(chunk, left)])
        left -= min(chunk, left)

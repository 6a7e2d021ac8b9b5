"""Reshard a pool to a subset for training, with DataComp's resharder semantics.

- The subset is a sorted `u8,u8` array (.npy or raw memmap). Each sample's `json["uid"]` is looked up by binary
  search; a uid listed k times is written k times (upsampling), as keys `<uid>-0 ... <uid>-(k-1)`.
- An UNSORTED subset is refused (DataComp's resharder would silently select the wrong samples).
- Requested vs found counts are reported; uids missing from the shards (failed downloads, unknown uids) are
  counted, not fatal. A subset uid in two input samples (a pool holds each uid once) is refused, so found counts
  never exceed the request.
- Output: `OUT/{:08d}.tar` shards of at most `shard_size` samples (all members copied byte for byte),
  `OUT/{:08d}_stats.json` ({"successes": n}), `OUT/sample_ids.npy` (copy of the subset), `OUT/meta.json`
  (with DataComp's `output_shard_count` / `output_shard_format` keys, which its train.py reads). meta.json is
  written last: it is the completion marker.
- Atomic and resumable: every shard is written to a temp file and renamed; progress is recorded after each shard,
  and a rerun continues from the last finished shard (the input is re-read from the input shard where that
  shard started). Single process: input shards are read in sorted order, so the output is deterministic.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Iterator

import numpy as np

from sfcomp import __version__ as SFCOMP_VERSION
from sfcomp import uids as U
from sfcomp.atomic import atomic_open, in_use, write_json
from sfcomp.errors import BadInputError
from sfcomp.guard import check_outputs, pool_inputs, with_sidecars
from sfcomp.pool import Pool

from . import fasttar

OUTPUT_SHARD_FORMAT = "{:08d}.tar"
OUTPUT_STATS_FORMAT = "{:08d}_stats.json"
STATE_FILE = ".reshard_state.json"
LOOKUP_BATCH = 512


@dataclass
class ReshardReport:
    """What a reshard did. `requested` counts subset entries (duplicates included)."""

    input_dir: str
    output_dir: str
    subset_file: str
    subset_sha256: str
    shard_size: int
    requested: int = 0
    requested_unique: int = 0
    output_count: int = 0
    found_unique: int | None = 0  # None after a resume (only a full pass counts it)
    not_found: int = 0
    processed_count: int = 0
    expected_input_count: int | None = None
    input_shards: int = 0
    input_shards_without_stats: int = 0
    corrupt_members: int = 0
    output_shard_count: int = 0
    output_shard_format: str = OUTPUT_SHARD_FORMAT
    resumed_from_shard: int = 0
    elapsed_s: float = 0.0
    sfcomp_version: str = SFCOMP_VERSION
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        pct = 100.0 * self.output_count / max(self.requested, 1)
        return (f"resharded {self.output_count}/{self.requested} requested samples ({pct:.1f}%; "
                f"{self.found_unique if self.found_unique is not None else '?'}/{self.requested_unique} unique uids found, "
                f"{self.not_found} not found) "
                f"into {self.output_shard_count} shards in {self.output_dir}")


def _file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_sorted_subset(path: str | os.PathLike, allow_empty: bool = False) -> np.ndarray:
    """Read a subset and refuse it unless sorted and not empty (duplicates allowed: they mean upsampling)."""
    arr = U.read_subset(path)
    U.refuse_empty(len(arr), path, "0 uids", allow_empty, writing=False)
    i = U.first_unsorted(arr)
    if i is not None:
        raise BadInputError(path, f"subset is not sorted (entry {i + 1} < entry {i}); refusing to reshard, since "
                                  "a binary search over it would select the wrong samples. Sort it first "
                                  "(sfcomp.uids.write_subset(path, uids, allow_duplicates=True))")
    return arr


def subset_counts(sorted_subset: np.ndarray, query: np.ndarray) -> np.ndarray:
    """How many times each `query` uid occurs in `sorted_subset` (binary search, like DataComp's resharder)."""
    if len(sorted_subset) == 0 or len(query) == 0:
        return np.zeros(len(query), dtype=np.int64)
    lo = np.searchsorted(sorted_subset, query, side="left")
    hi = np.searchsorted(sorted_subset, query, side="right")
    return (hi - lo).astype(np.int64)


def subset_positions(sorted_subset: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each `query` uid's first occurrence in `sorted_subset` (only meaningful where its count is > 0)."""
    return np.searchsorted(sorted_subset, query, side="left")


def _written_uids(out: Path, n_shards: int) -> list[str]:
    """The uids of the samples in output shards 0..n_shards-1 (from member names `<uid>-<j>.<ext>`, headers only)."""
    import tarfile

    uids = set()
    for i in range(n_shards):
        with tarfile.open(out / OUTPUT_SHARD_FORMAT.format(i), "r:") as tar:
            for name in tar.getnames():
                key, _ = split_member(name)
                if key is not None:
                    uids.add(key.rsplit("-", 1)[0])
    return sorted(uids)


def _input_shards(input_dir: str) -> tuple[str, list[str]]:
    """(shards folder, sorted tar paths). `input_dir` is a pool root (with shards/) or a shards folder."""
    root = Path(input_dir)
    if (root / "shards").is_dir():
        shards_dir = root / "shards"
    elif root.is_dir():
        shards_dir = root
    else:
        raise BadInputError(input_dir, "is a file, expected a pool folder or a folder of shards" if root.exists()
                            else "input folder does not exist")
    tars = Pool(str(shards_dir.parent)).shard_files() if shards_dir.name == "shards" else sorted(
        str(p) for p in shards_dir.glob("*.tar") if p.stem.isdigit())
    if not tars:
        raise BadInputError(shards_dir, "no input shards ({:08d}.tar) found")
    return str(shards_dir), tars


def split_member(name: str) -> tuple[str | None, str]:
    """webdataset's grouping rule: key = path up to the first dot of the basename, ext = the rest (lower case)."""
    d, base = os.path.split(name)
    if "." not in base:
        return None, ""
    stem, ext = base.split(".", 1)
    return (f"{d}/{stem}" if d else stem), ext.lower()


def iter_raw_samples(tar_path: str, errors: list[str]) -> Iterator[dict[str, bytes]]:
    """Samples of one tar as {ext: bytes, "__key__": key}, members grouped by key (webdataset's rule);
    a damaged tar is counted in `errors` and read up to the damage."""
    current: dict | None = None
    try:
        with open(tar_path, "rb", buffering=1 << 20) as f:
            for name, data in fasttar.iter_members(f, tar_path):
                key, ext = split_member(name)
                if key is None:
                    continue
                if current is None or current["__key__"] != key or ext in current:
                    if current is not None:
                        yield current
                    current = {"__key__": key}
                current[ext] = data
    except (fasttar.TarFormatError, OSError, ValueError) as e:
        errors.append(f"{tar_path}: {type(e).__name__}: {e}")
    if current is not None:
        yield current


def _expected_count(tar_path: str) -> int | None:
    stats = Path(tar_path[: -len(".tar")] + "_stats.json")
    if not stats.exists():
        return None
    try:
        return int(json.loads(stats.read_text())["successes"])
    except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
        raise BadInputError(stats, f"unreadable img2dataset stats ({e})") from None


class _SecondSample(BadInputError):
    """A subset uid met in a second input sample: the run is refused (reshard cleans up first)."""


class _ShardStream:
    """The output shard being filled, streamed through sfcomp.atomic.atomic_open (memory stays at one sample):
    `close` renames it into place, `abort` removes the temp file."""

    class _Aborted(Exception):
        pass

    def __init__(self, path: Path):
        self.path = path
        self._cm = atomic_open(path, "wb", buffering=1 << 20)
        self.f = self._cm.__enter__()
        self.count = 0

    def write(self, key: str, sample: dict[str, bytes]) -> None:
        for ext, data in sample.items():
            if not ext.startswith("__"):
                fasttar.write_member(self.f, f"{key}.{ext}", data)
        self.count += 1

    def close(self) -> None:
        fasttar.finish(self.f)
        self._cm.__exit__(None, None, None)

    def abort(self) -> None:
        self._cm.__exit__(self._Aborted, self._Aborted(), None)


def _read_state(out: Path, subset_sha: str, shard_size: int) -> dict:
    path = out / STATE_FILE
    fresh = {"subset_sha256": subset_sha, "shard_size": shard_size, "shards_done": 0, "next_input": 0,
             "skip_selected": 0, "output_count": 0}
    if not path.exists():
        return fresh
    state = _own_state(out)
    if state is None:
        return fresh
    if state.get("subset_sha256") != subset_sha or state.get("shard_size") != shard_size:
        return fresh
    return state


# reshard's own files in an output folder: the only ones --overwrite removes
MARKER_KEYS = ("subset_sha256", "shard_size", "output_shard_count", "output_shard_format")
_OWN_FILE = re.compile(r"^(\d{8}\.tar|\d{8}_stats\.json|sample_ids\.npy|\.sample_ids\.npy\.tmp|meta\.json|"
                       + re.escape(STATE_FILE) + r"|\.tmp-.*)$")


_NOT_OURS = "refusing to touch this folder: choose another -o, or remove it yourself"


def _json_object(path: Path, hint: str = _NOT_OURS) -> dict:
    """A JSON file that must hold an object; anything else is one line naming the file."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise BadInputError(path, f"not a meta.json written by sfcomp reshard (unreadable JSON: {why}); "
                                  f"{hint}") from None
    if not isinstance(obj, dict):
        raise BadInputError(path, f"not a meta.json written by sfcomp reshard (a JSON {type(obj).__name__}, not an "
                                  f"object); {hint}")
    return obj


def _own_meta(meta_path: Path) -> dict:
    """The completion marker of a folder sfcomp reshard finished; a meta.json of anything else is refused."""
    meta = _json_object(meta_path)
    missing = [k for k in MARKER_KEYS if k not in meta]
    if missing:
        raise BadInputError(meta_path, f"not a meta.json written by sfcomp reshard (no {', '.join(missing)}); "
                                       f"{_NOT_OURS}")
    return meta


def _own_state(out: Path) -> dict | None:
    """The progress file of an unfinished sfcomp reshard in `out`, or None (absent or not ours)."""
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    ok = isinstance(state, dict) and {"subset_sha256", "shard_size", "shards_done", "next_input", "skip_selected",
                                      "output_count"} <= set(state)
    return state if ok else None


def _refuse_foreign(out: Path) -> None:
    """A non-empty output folder that carries neither reshard's marker nor its progress file is someone else's."""
    if not out.is_dir() or _own_state(out) is not None:
        return
    others = sorted(e.name for e in out.iterdir() if not e.name.startswith(".tmp-"))
    if others:
        raise BadInputError(out, f"output folder is not empty ({len(others)} entries, e.g. {others[0]}) and was not "
                                 f"made by sfcomp reshard (no meta.json or {STATE_FILE}); refusing to write into it, "
                                 "even with --overwrite: choose another -o")


def _remove_own_files(out: Path) -> int:
    """Remove the files sfcomp reshard writes (shards, stats, sample_ids.npy, meta.json, progress, temp files);
    anything else in the folder is left. Returns how many were removed."""
    n = 0
    for e in sorted(out.iterdir()):
        if _OWN_FILE.match(e.name) and (e.is_file() or e.is_symlink()):
            e.unlink()
            n += 1
    return n


def _reshard_inputs(subset_file, shards_dir: str) -> list[str]:
    """What a reshard reads: the subset (and its sidecar), the shard folder, and the pool around a POOL/shards."""
    inputs = [*with_sidecars([subset_file]), shards_dir]
    parent = os.path.dirname(os.path.abspath(shards_dir))
    if os.path.basename(os.path.abspath(shards_dir)) == "shards" and os.path.isdir(os.path.join(parent, "metadata")):
        inputs += pool_inputs(parent)
    return inputs


def reshard(input_dir: str | os.PathLike, subset_file: str | os.PathLike, output_dir: str | os.PathLike,
            shard_size: int = 10000, overwrite: bool = False, log=print,
            allow_empty: bool = False) -> ReshardReport:
    """Write the samples of `subset_file` found in `input_dir`'s shards to `output_dir` (see module doc).

    Refuses an unsorted subset. A finished output folder for the same subset is left as is (its report is
    returned); one for another subset needs `overwrite=True`.
    """
    if shard_size < 1:
        raise BadInputError(None, f"--shard-size must be >= 1, got {shard_size}")
    t0 = time.time()
    subset = load_sorted_subset(subset_file, allow_empty)
    subset_sha = _file_sha256(subset_file)
    shards_dir, tars = _input_shards(str(input_dir))
    out = Path(output_dir)
    check_outputs([out], _reshard_inputs(subset_file, shards_dir), what="-o", kind="dir")
    meta_path = out / "meta.json"
    meta = _own_meta(meta_path) if os.path.lexists(meta_path) else None
    if meta is not None:
        if meta.get("subset_sha256") == subset_sha and meta.get("shard_size") == shard_size and not overwrite:
            log(f"{out}: already resharded for this subset (meta.json present); nothing to do")
            known = set(ReshardReport.__dataclass_fields__)
            return ReshardReport(**{k: v for k, v in meta.items() if k in known})
        if not overwrite:
            raise BadInputError(out, "output folder holds a reshard of another subset or shard size "
                                     "(pass --overwrite to replace it)")
    else:
        _refuse_foreign(out)
    if overwrite and (meta is not None or _own_state(out) is not None):
        log(f"removed {_remove_own_files(out)} files from {out}")
    made = [p for p in (out, *out.parents) if not p.exists()]  # removed again if nothing is found
    out.mkdir(parents=True, exist_ok=True)

    report = ReshardReport(input_dir=str(shards_dir), output_dir=str(out), subset_file=str(subset_file),
                           subset_sha256=subset_sha, shard_size=shard_size, requested=len(subset),
                           requested_unique=len(subset) - U.count_duplicates(subset), input_shards=len(tars))
    expected = [_expected_count(t) for t in tars]
    report.input_shards_without_stats = sum(e is None for e in expected)
    if report.input_shards_without_stats:
        report.warnings.append(f"{report.input_shards_without_stats} input shards have no _stats.json "
                               "(img2dataset did not finish them); read anyway")
    report.expected_input_count = sum(e for e in expected if e is not None)

    state = _read_state(out, subset_sha, shard_size)
    report.resumed_from_shard = state["shards_done"]
    if state["shards_done"]:
        log(f"{out}: resuming after {state['shards_done']} finished output shards")
    shard_id = state["shards_done"]
    output_count = state["output_count"]
    skip = state["skip_selected"]  # selected samples of input shard `next_input` already written
    for stale in out.glob(".tmp-*"):  # a shard a killed run was writing; one a live writer holds stays
        if in_use(stale):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    shard: _ShardStream | None = None  # the output shard being filled; it started where the saved state points
    errors: list[str] = []
    found_unique = 0  # counted over a full pass only (not meaningful after a resume)
    # subset uids already written: a pool lists each uid once, a second sample with one is refused. On a resume,
    # read back from the finished output shards (the input shard it resumes in re-reads its written samples as
    # skipped ones, which are not second samples)
    written = np.zeros(len(subset), bool)
    if state["shards_done"]:
        done_uids = U.hex_to_uids(_written_uids(out, state["shards_done"]), out)
        written[subset_positions(subset, done_uids)] = True

    def flush() -> None:
        nonlocal shard_id, shard, output_count
        shard.close()
        write_json(out / OUTPUT_STATS_FORMAT.format(shard_id), {"successes": shard.count})
        output_count += shard.count
        shard_id += 1
        shard = None

    def save_state(next_input: int, skip_selected: int) -> None:
        write_json(out / STATE_FILE, {"subset_sha256": subset_sha, "shard_size": shard_size,
                                      "shards_done": shard_id, "next_input": next_input,
                                      "skip_selected": skip_selected, "output_count": output_count})

    try:
        for ti in range(state["next_input"], len(tars)):
            selected_here = 0  # selected outputs produced from this input shard so far (incl. skipped ones)
            to_skip = skip if ti == state["next_input"] else 0
            pending: list[dict] = []

            def drain(batch: list[dict]) -> None:
                nonlocal selected_here, to_skip, found_unique, shard
                keep, uid_hex = [], []
                for s in batch:
                    try:
                        uid_hex.append(json.loads(s["json"])["uid"])
                        keep.append(s)
                    except (KeyError, ValueError, TypeError) as e:
                        errors.append(f"{tars[ti]}: sample {s['__key__']}: no readable json uid ({e})")
                if not keep:
                    return
                try:
                    q = U.hex_to_uids(uid_hex, tars[ti])
                except BadInputError:  # one malformed uid: convert one by one, dropping only the bad ones
                    good = []
                    for s, u in zip(keep, uid_hex):
                        try:
                            good.append((s, u, U.hex_to_uids([u], tars[ti])))
                        except BadInputError as e:
                            errors.append(f"{tars[ti]}: sample {s['__key__']}: {e.problem}")
                    if not good:
                        return
                    keep, uid_hex = [g[0] for g in good], [g[1] for g in good]
                    q = U.concat(g[2] for g in good)
                counts = subset_counts(subset, q)
                positions = subset_positions(subset, q)
                for s, c, uid, pos in zip(keep, counts, uid_hex, positions):
                    if c:
                        if written[pos] and not to_skip:
                            raise _SecondSample(tars[ti], f"sample {s['__key__']}: uid {uid} is in the input "
                                                          "shards twice (an earlier sample has it; a pool holds "
                                                          "each uid once)")
                        written[pos] = True
                        found_unique += 1
                    for j in range(int(c)):
                        selected_here += 1
                        if to_skip:
                            to_skip -= 1
                            continue
                        if shard is None:
                            shard = _ShardStream(out / OUTPUT_SHARD_FORMAT.format(shard_id))
                        shard.write(f"{uid}-{j}", s)
                        if shard.count >= shard_size:
                            flush()
                            save_state(ti, selected_here)

            for s in iter_raw_samples(tars[ti], errors):
                report.processed_count += 1
                if "json" not in s:
                    errors.append(f"{tars[ti]}: sample {s['__key__']} has no json member")
                    continue
                pending.append(s)
                if len(pending) >= LOOKUP_BATCH:
                    drain(pending)
                    pending = []
            drain(pending)
            if shard is None:
                save_state(ti + 1, 0)
        if shard is not None:
            flush()
    except BaseException as e:
        if shard is not None:
            shard.abort()
        if isinstance(e, _SecondSample):
            if state["shards_done"] == 0:  # this run wrote all there is: take it back
                _remove_own_files(out)
                for d in made:  # innermost first
                    with contextlib.suppress(OSError):
                        d.rmdir()
            raise BadInputError(e.path, e.problem + ("; nothing written" if state["shards_done"] == 0 else
                                                     f"; {out}'s finished shards are kept")) from None
        raise
    save_state(len(tars), 0)

    report.output_shard_count = shard_id
    report.output_count = output_count
    report.not_found = report.requested - output_count
    report.found_unique = found_unique if report.resumed_from_shard == 0 else None
    report.corrupt_members = len(errors)
    if errors:
        report.warnings.append(f"{len(errors)} unreadable samples or tars; first: {errors[0]}")
    if report.resumed_from_shard == 0 and report.expected_input_count and \
            report.processed_count != report.expected_input_count and not report.input_shards_without_stats:
        report.warnings.append(f"expected {report.expected_input_count} input samples (from _stats.json) "
                               f"but found {report.processed_count}")
    if report.not_found:
        report.warnings.append(f"{report.not_found} of {report.requested} requested samples were not found "
                               "in the input shards")
    if report.requested and output_count == 0 and report.resumed_from_shard == 0:
        (out / STATE_FILE).unlink(missing_ok=True)
        for d in made:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise BadInputError(subset_file, f"none of the subset's {report.requested_unique} uids is in the input "
                                         f"shards {shards_dir} (a subset of another pool?); nothing written")
    shutil.copyfile(subset_file, out / ".sample_ids.npy.tmp")
    os.replace(out / ".sample_ids.npy.tmp", out / "sample_ids.npy")
    report.elapsed_s = round(time.time() - t0, 3)
    write_json(meta_path, {**report.as_dict(), "cwd": os.getcwd()})
    (out / STATE_FILE).unlink(missing_ok=True)
    for w in report.warnings:
        log(f"warning: {w}")
    return report


def shard_pattern(resharded_dir: str | os.PathLike) -> str:
    """The brace pattern of a finished reshard's shards (from meta.json, as DataComp's train.py builds it)."""
    meta_path = Path(resharded_dir) / "meta.json"
    if not meta_path.exists():
        raise BadInputError(resharded_dir, "no meta.json: not a finished reshard (run `sfcomp reshard` first)")
    meta = _json_object(meta_path, "reshard again into a new folder")
    try:
        n, fmt = int(meta["output_shard_count"]), str(meta["output_shard_format"])
    except (KeyError, TypeError, ValueError) as e:
        raise BadInputError(meta_path, f"no usable output_shard_count / output_shard_format ({e})") from None
    if n < 1:
        raise BadInputError(meta_path, "reshard holds no shards (no requested sample was found)")
    first, last = fmt.format(0).replace(".tar", ""), fmt.format(n - 1).replace(".tar", "")
    return brace_literal(resharded_dir) + os.sep + f"{{{first}..{last}}}.tar"


def brace_literal(folder: str | os.PathLike) -> str:
    """`folder` as a literal inside a webdataset / open_clip shard pattern: braces and backslashes escaped (both
    brace-expand with escapes on), so `/data/run {a,b}` is one folder, not two. open_clip splits a pattern on
    '::' before any escape is read: such a folder is refused."""
    s = os.fspath(folder)
    if "::" in s:
        raise BadInputError(folder, "open_clip reads '::' in training data as a list separator, so it cannot train "
                                    "from this folder: move or rename it")
    return re.sub(r"([\\{}])", r"\\\1", s)

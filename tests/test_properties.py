"""Property-based tests (hypothesis): whatever a user hands sfcomp, it answers, refuses in one line, and changes
no byte of its inputs.

- Readers (subset, score file, sidecar, metadata parquet, npz, shard tar): random bytes and random structures
  (valid files then truncated, extended or with a byte flipped; random dtypes, shapes, JSON, columns, tar
  members). The subset, score-file, npz and metadata parquet readers' outcomes are predicted (`subset_in`,
  `score_file_in`, `npz_in`, `metadata_in` / `uids_in`: the reading rules written out, so each case is exactly one
  result or one refusal, reader by reader); the shard tar readers return (iterators are drained) or raise
  BadInputError, nothing else.
- Valid files (any sorted unique subset, .npy or raw; any score file write_scores accepts): read back exactly.
- Commands (export-subset, validate-subset, scores-to-parquet, reshard, baseline, round --steps 1) through the
  real CLI group in this process (click's CliRunner, standalone mode like `sfcomp`): random argument values and
  random choices of good, broken and hostile input/output paths. Each test predicts, from what it drew, the one
  outcome the case must have (an oracle: the command's documented rules written out in the test, e.g. "a top
  fraction outside (0, 1]" or "an output that is an input"): exit 0, or exit 2 with one `error: ` line (the last
  stderr line), click's usage errors included; never a traceback, never the other exit code; no byte of any
  input path changed; a refused case leaves no output that was not there before.

Deterministic (`derandomize=True`, no example database). The number of cases run is printed in pytest's
terminal summary (tests/conftest.py) as "property-based test cases: N" (2482 when all pass; a failing test adds
hypothesis' shrinking replays). Exploring: SFCOMP_PROPERTY_LOG=FILE
records every failing case there as JSON lines instead of stopping at the first; SFCOMP_PROPERTY_OUTCOMES=FILE
records every command case's exit code and stderr.
"""
from __future__ import annotations

import collections
import io
import json
import math
import operator
import os
import re
import shutil
import tarfile
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import _e_harness as H
from sfcomp.errors import BadInputError
from sfcomp.scorefile import score_dtype, write_scores
from sfcomp.uids import UID_DTYPE

CASES: collections.Counter = collections.Counter()  # examples run per test, printed by tests/conftest.py

READERS = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck))
COMMANDS = settings(READERS, max_examples=150)
LOG = os.environ.get("SFCOMP_PROPERTY_LOG")
OUTCOMES = os.environ.get("SFCOMP_PROPERTY_OUTCOMES")


def _fail(test: str, case, problem: str) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps({"test": test, "case": case, "problem": problem}, default=str) + "\n")
        return
    raise AssertionError(f"{problem}\ncase: {case}")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("prop")


class Example:
    """A fresh folder for one example, removed afterwards."""

    def __init__(self, root: Path):
        self.root = root

    def __enter__(self) -> Path:
        self.dir = Path(tempfile.mkdtemp(dir=self.root))
        return self.dir

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ byte mutations
@st.composite
def mutated(draw, data: bytes) -> bytes:
    how = draw(st.sampled_from(["keep", "keep", "truncate", "append", "flip"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=64))
    if how == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    return data


def _npy(arr: np.ndarray) -> bytes:
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():  # a non-latin-1 field name: numpy writes 3.0 and says so
        warnings.filterwarnings("ignore", message="Stored array in format 3.0", category=UserWarning)
        np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _npy_version(arr: np.ndarray, major: int) -> bytes:
    """`arr` as a .npy of format version major.0 with 2.0's header layout (4.0: a version numpy does not load)."""
    v1 = _npy(arr)
    n = int.from_bytes(v1[8:10], "little")
    return NPY_MAGIC + bytes([major, 0]) + n.to_bytes(4, "little") + v1[10:10 + n] + v1[10 + n:]


NPY_DTYPES = [UID_DTYPE, score_dtype(["cosine"]), score_dtype(["cosine", "crossfit"]), np.dtype("<u8"),
              np.dtype([("f0", ">u8"), ("f1", ">u8")]), np.dtype([("f0", "<u8"), ("f1", "<u8"), ("cosine", "<f8")]),
              np.dtype([("a", "<u8"), ("b", "<u8")]), np.dtype("<f4"), np.dtype("S32"), np.dtype("<U32"),
              np.dtype("u1")]


@st.composite
def npy_arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from(NPY_DTYPES))
    shape = draw(st.sampled_from([(0,), (1,), (4,), (33,), (2, 3), ()]))
    arr = draw(hnp.arrays(dtype, shape))
    if arr.ndim == 1 and dtype.names and draw(st.booleans()):  # sorted and unique: reach the deeper checks
        arr = arr[np.unique(arr[list(dtype.names[:2])], return_index=True)[1]]
    return arr


NPY_MAGIC = b"\x93NUMPY"
random_bytes = st.binary(max_size=300) | st.binary(max_size=200).map(lambda b: NPY_MAGIC + b) | st.binary(
    max_size=200).map(lambda b: NPY_MAGIC + b"\x01\x00" + b)
npy_files = random_bytes | npy_arrays().map(_npy).flatmap(mutated)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
sidecars = st.one_of(
    st.none(),  # no sidecar
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"format": st.sampled_from(["sfcomp-scores/1", "x"]),
                           "n": st.integers(-1, 40) | st.text(max_size=3),
                           "fields": st.lists(st.sampled_from(["cosine", "crossfit", "f0"]), max_size=3) | json_values,
                           "default": st.sampled_from(["cosine", "crossfit", "nope"]) | json_values},
                          optional={"pool": json_values}).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64))


def _expect_bad_input_only(test: str, case, fn, *args, **kw) -> None:
    """`fn(*args)` (drained if it is an iterator) returns or raises BadInputError; anything else is a failure."""
    try:
        out = fn(*args, **kw)
        if hasattr(out, "__next__"):
            for _ in out:
                pass
    except BadInputError:
        pass
    except Exception as e:  # the property: nothing but BadInputError
        where = traceback.extract_tb(e.__traceback__)[-1]
        _fail(test, case, f"{fn.__module__}.{fn.__name__}: {type(e).__name__}: {e} "
                          f"(raised at {where.filename}:{where.lineno})")


def _expect_outcome(test: str, case, read, want, same) -> None:
    """`read()` returns what `same(got, want)` accepts, or raises BadInputError where the oracle's `want` is None
    (a refusal); anything else is a failure."""
    try:
        got = read()
    except BadInputError as e:
        if want is not None:
            _fail(test, case, f"refused what it must accept: {e}")
        return
    except Exception as e:  # noqa: BLE001 - the property: nothing but BadInputError
        where = traceback.extract_tb(e.__traceback__)[-1]
        _fail(test, case, f"{type(e).__name__}: {e} (raised at {where.filename}:{where.lineno})")
        return
    if want is None:
        _fail(test, case, "accepted what it must refuse")
    elif not same(got, want):
        _fail(test, case, f"read other data than the input holds: {got!r}"[:400])


def _same_rows(got, want: np.ndarray) -> bool:
    """Arrays, or a list of chunks, holding exactly `want`'s rows in `want`'s dtype."""
    parts = got if isinstance(got, list) else [np.asarray(got)]
    return all(c.dtype == want.dtype for c in parts) and b"".join(c.tobytes() for c in parts) == want.tobytes()


def _same_table(got, want) -> bool:
    """The same schema and the same values row by row; a NaN equals a NaN (`Table.equals` says it does not)."""
    def same(a, b) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    return got.schema.equals(want.schema) and all(
        len(g) == len(w) and all(map(same, g, w))
        for g, w in zip(got.to_pydict().values(), want.to_pydict().values(), strict=True))


# ------------------------------------------------------------------------------------------ readers
uid_pairs = st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), unique=True, max_size=40)


def _uid_bytes(pairs: list[tuple[int, int]], raw: bool, order: str) -> bytes:
    arr = np.array(sorted(pairs) if order == "sorted" else pairs, dtype=UID_DTYPE)
    if order == "duplicated" and len(arr):
        arr = np.sort(np.concatenate([arr, arr[:1]]), order=["f0", "f1"])
    return arr.tobytes() if raw else _npy(arr)


# subsets, sorted or not, .npy or raw, then truncated, extended or with a byte flipped: the cases near the rules
subset_files = st.builds(_uid_bytes, uid_pairs, st.booleans(),
                         st.sampled_from(["sorted", "sorted", "as drawn", "duplicated"])).flatmap(mutated)


def subset_in(data: bytes) -> np.ndarray | None:
    """The subset these bytes hold under DataComp's resharder's reading and sfcomp's rules, or None when they must
    be refused: a .npy (by its magic) of one 1-D little-endian u8,u8 array and nothing after it, or else raw 16-byte
    records (not a text file of hex uids); sorted by (f0, f1) and without duplicates."""
    from sfcomp.uids import looks_like_hex_text

    if data[:6] == NPY_MAGIC:
        f = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = header(f)
            start = f.tell()
        except Exception:  # noqa: BLE001 - any header numpy cannot read is not a .npy
            return None
        if dtype != UID_DTYPE or len(shape) != 1 or len(data) != start + shape[0] * UID_DTYPE.itemsize:
            return None
        arr = np.frombuffer(data, UID_DTYPE, count=shape[0], offset=start)
    elif looks_like_hex_text(data[:4096]) or len(data) % UID_DTYPE.itemsize:
        return None
    else:
        arr = np.frombuffer(data, UID_DTYPE)
    keys = arr["f0"].astype(object) * 2**64 + arr["f1"].astype(object)
    return arr if all(a < b for a, b in zip(keys[:-1], keys[1:])) else None


@READERS
@given(data=npy_files | subset_files, mmap=st.booleans())
@example(data=b"", mmap=True)  # the empty raw subset: valid, no rows
def test_read_subset_outcome_is_predicted(scratch, data, mmap):
    """read_subset + check_subset on any bytes: exactly the subset `subset_in` finds, or BadInputError when it
    finds none; nothing else."""
    from sfcomp.uids import check_subset, read_subset

    CASES["read_subset"] += 1
    want = subset_in(data)
    if OUTCOMES:
        with open(OUTCOMES, "a") as f:
            f.write(json.dumps({"test": "read_subset", "valid": want is not None}) + "\n")
    with Example(scratch) as d:
        p = d / "subset.npy"
        p.write_bytes(data)

        def read():
            got = read_subset(p, mmap=mmap)
            check_subset(p, got)
            return got
        _expect_outcome("read_subset", data, read, want, _same_rows)


@st.composite
def score_file_pairs(draw) -> tuple[bytes, bytes | None]:
    """A score file near the rules: sorted or not, scores finite or not, then mutated; and a sidecar that matches
    it, or not (wrong n, other fields, a default that is no field, empty, not an object, not JSON, none)."""
    pairs = draw(uid_pairs)
    fields = draw(st.lists(st.sampled_from(["cosine", "crossfit", "b32_x"]), min_size=1, max_size=3, unique=True))
    arr = np.zeros(len(pairs), score_dtype(fields))
    order = sorted(pairs) if draw(st.integers(0, 3)) else pairs
    arr["f0"], arr["f1"] = [p[0] for p in order], [p[1] for p in order]
    for f in fields:
        arr[f] = draw(hnp.arrays(np.float32, len(pairs), elements=st.floats(width=32) | st.just(0.5)))
    npy = draw(mutated(_npy(arr)))
    kind = draw(st.sampled_from(["match", "match", "match", "n", "fields", "default", "empty", "list", "junk", None]))
    side = {"format": "sfcomp-scores/1", "n": len(pairs), "fields": fields, "default": draw(st.sampled_from(fields))}
    if kind == "n":
        side["n"] = len(pairs) + draw(st.sampled_from([-1, 1]))
    elif kind == "fields":
        side["fields"] = fields[::-1] if len(fields) > 1 else fields + ["other"]
    elif kind == "default":
        side["default"] = "nope"
    elif kind == "empty":
        side = {}
    return npy, {None: None, "list": b"[1, 2]", "junk": b"{not json"}.get(kind, json.dumps(side).encode())


def score_file_in(npy: bytes, side: bytes | None) -> dict:
    """What each score-file reader must make of these bytes, None where it must refuse: "sidecar" (read_sidecar:
    none is {}; else a JSON object), "info" (score_info: a .npy numpy itself loads, 1-D, nothing after the array,
    dtype f0,f1 <u8 then <f4 score fields; a sidecar, unless empty, giving that n and those fields and a default
    among them), "chunks" (iter_score_chunks: the .npy rules, rows sorted by uid, each once, every score
    finite; the sidecar is not read) and "scores" (read_scores: all of it)."""
    sidecar = None
    if side is None:
        sidecar = {}
    else:
        try:
            obj = json.loads(io.TextIOWrapper(io.BytesIO(side)).read())  # as open(path) decodes it
            sidecar = obj if isinstance(obj, dict) else None
        except (ValueError, UnicodeDecodeError):
            pass
    out = {"sidecar": sidecar, "info": None, "chunks": None, "scores": None}
    f = io.BytesIO(npy)
    try:
        arr = np.load(f, allow_pickle=False)  # numpy's own reader is the reference
    except Exception:  # noqa: BLE001 - whatever numpy cannot load is not a .npy
        return out
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or f.tell() != len(npy):
        return out
    names, dt = arr.dtype.names, arr.dtype
    if (names is None or len(names) < 3 or names[:2] != ("f0", "f1") or dt["f0"] != np.dtype("<u8")
            or dt["f1"] != np.dtype("<u8") or any(dt[n] != np.dtype("<f4") for n in names[2:])):
        return out
    fields = list(names[2:])
    keys = arr["f0"].astype(object) * 2**64 + arr["f1"].astype(object)
    rows_ok = all(a < b for a, b in zip(keys[:-1], keys[1:])) and all(np.isfinite(arr[n]).all() for n in fields)
    out["chunks"] = arr if rows_ok else None
    if sidecar is None or (sidecar and (sidecar.get("n") != len(arr) or sidecar.get("fields") != fields
                                        or sidecar.get("default") not in fields)):
        return out
    out["info"] = {"n": len(arr), "fields": fields, "default": sidecar.get("default", fields[0]), "sidecar": sidecar}
    out["scores"] = arr if rows_ok else None
    return out


@READERS
@given(case=st.tuples(npy_files, sidecars) | score_file_pairs(), mmap=st.booleans())
# a format version numpy does not load: the header-only readers accepted it (found by this test, 2026-12-04)
@example(case=(_npy_version(np.array([(0, 1, 0.5), (0, 2, 0.25)], score_dtype(["cosine"])), 4), None), mmap=False)
@example(case=(_npy_version(np.array([(0, 1, 0.5), (0, 2, 0.25)], score_dtype(["cosine"])), 3), None), mmap=True)
# a utf-8 header (np.save's 3.0 for a non-latin-1 field name): the header readers decoded it as latin-1
@example(case=(_npy(np.array([(0, 1, 0.5)], score_dtype(["分数"]))), None), mmap=True)
@example(case=(NPY_MAGIC + b"\x03\x00" + (60).to_bytes(4, "little") +
               b"{'descr': 5, 'fortran_order': False, 'shape': (1,)}".ljust(60), None), mmap=True)
def test_score_file_readers_outcome_is_predicted(scratch, case, mmap):
    """Each score-file reader on any bytes: exactly what `score_file_in` predicts, or BadInputError where it
    predicts a refusal; nothing else."""
    from sfcomp.scorefile import iter_score_chunks, read_scores, read_sidecar, score_info

    CASES["score_file"] += 1
    data, side = case
    want = score_file_in(data, side)
    if OUTCOMES:
        with open(OUTCOMES, "a") as f:
            f.write(json.dumps({"test": "score_file", **{k: v is not None for k, v in want.items()}}) + "\n")
    with Example(scratch) as d:
        p = d / "s.npy"
        p.write_bytes(data)
        if side is not None:
            Path(f"{p}.json").write_bytes(side)
        shown = {"npy": data, "sidecar": side}
        readers = {"sidecar": (lambda: read_sidecar(p), operator.eq), "info": (lambda: score_info(p), operator.eq),
                   "chunks": (lambda: list(iter_score_chunks(p, rows=7)), _same_rows),
                   "scores": (lambda: read_scores(p, mmap=mmap), _same_rows)}
        for name, (read, same) in readers.items():
            _expect_outcome(f"score_file {name}", shown, read, want[name], same)


@settings(READERS, max_examples=100)
@given(pairs=uid_pairs, raw=st.booleans(), mmap=st.booleans())
def test_a_valid_subset_reads_back_exactly(scratch, pairs, raw, mmap):
    """The other side of the readers' property: every sorted, unique u8,u8 subset, as .npy or raw, is accepted
    and read back as written."""
    from hypothesis import assume

    from sfcomp.uids import check_subset, looks_like_hex_text, read_subset, sort_uids, write_subset

    CASES["valid_subset"] += 1
    want = sort_uids(np.array(pairs, dtype=UID_DTYPE))
    with Example(scratch) as d:
        p = d / "subset.npy"
        if raw:
            want.tofile(p)
            # documented limit: a raw file whose first bytes all spell 32-char hex words is refused as hex text
            assume(not looks_like_hex_text(p.read_bytes()[:4096]))
        else:
            write_subset(p, np.array(pairs, dtype=UID_DTYPE))
        got = read_subset(p, mmap=mmap)
        check_subset(p, got)
        assert np.array_equal(np.asarray(got), want) and got.dtype == UID_DTYPE


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(READERS, max_examples=100)
@given(pairs=uid_pairs.filter(len), fields=st.lists(st.sampled_from(["cosine", "crossfit", "b32_x"]), min_size=1,
                                                    max_size=3, unique=True), data=st.data(), mmap=st.booleans())
def test_a_valid_score_file_reads_back_exactly(scratch, pairs, fields, data, mmap):
    """Every score file write_scores accepts is read back, by every reader, as written (sorted by uid)."""
    from sfcomp.scorefile import iter_score_chunks, read_scores, score_info
    from sfcomp.uids import uid_order

    CASES["valid_score_file"] += 1
    uids = np.array(pairs, dtype=UID_DTYPE)
    values = {f: np.array(data.draw(st.lists(finite32, min_size=len(uids), max_size=len(uids))), np.float32)
              for f in fields}
    order = uid_order(uids["f0"], uids["f1"])
    with Example(scratch) as d:
        p = d / "s.npy"
        write_scores(p, uids, values, meta={"pool": "test"})
        info = score_info(p)
        assert (info["n"], info["fields"], info["default"]) == (len(uids), fields, fields[0])
        arr = read_scores(p, mmap=mmap)
        chunks = np.concatenate(list(iter_score_chunks(p, rows=7)))
        for got in (arr, chunks):
            assert np.array_equal(got["f0"], uids["f0"][order]) and np.array_equal(got["f1"], uids["f1"][order])
            for f in fields:  # -0.0 is stored as 0.0: equal as numbers
                assert np.array_equal(got[f], values[f][order])


COLUMN_NAMES = ["uid", "url", "text", "status", "clip_b32_similarity_score", "original_width", "key"]
HEX = "0123456789abcdef"
uid_like = st.text(HEX, min_size=32, max_size=32) | st.text(HEX + "ABCXYZ -", max_size=34)
uid_near_miss = st.one_of(st.text(HEX, min_size=32, max_size=32).map(str.upper).filter(lambda u: u != u.lower()),
                          st.text(HEX, min_size=31, max_size=31), st.text(HEX, min_size=33, max_size=33),
                          st.none())


@st.composite
def parquet_tables(draw, clean_uids: bool = False):
    """A table of random columns; `clean_uids`: it has a `uid` column whose rows are valid uids, all of them or all
    but one near miss."""
    import pyarrow as pa

    n = draw(st.integers(0, 6))
    names = draw(st.lists(st.sampled_from(COLUMN_NAMES), min_size=1, max_size=4, unique=True))
    if clean_uids and "uid" not in names:
        names = ["uid"] + names[:3]
    cols = {}
    for name in names:
        kinds = ["str", "uid", "int", "float", "binary", "null"]
        kind = "uid" if clean_uids and name == "uid" else draw(st.sampled_from(kinds + ["uid"] * 5 if name == "uid" else kinds))
        if kind in ("str", "uid"):
            value = (uid_like if kind == "uid" else st.text(max_size=6)) | st.none()
            # a uid column: mixed rows, clean (every row a uid), or clean but for one near miss
            if kind == "str":
                mode = "mixed"
            else:
                mode = draw(st.sampled_from(["clean", "one_bad"] if clean_uids else ["mixed", "clean", "one_bad"]))
            if mode != "mixed":
                value = st.text(HEX, min_size=32, max_size=32)
            vals = draw(st.lists(value, min_size=n, max_size=n))
            if mode == "one_bad" and n:
                vals[draw(st.integers(0, n - 1))] = draw(uid_near_miss)
            # the string types a parquet writer may give a uid column (pandas category: dictionary)
            arrow = draw(st.sampled_from(["string", "large_string", "binary", "large_binary", "dictionary"]))
            if arrow == "dictionary":
                cols[name] = pa.array(vals, pa.string()).dictionary_encode()
            elif arrow in ("binary", "large_binary"):
                cols[name] = pa.array([None if v is None else v.encode() for v in vals], getattr(pa, arrow)())
            else:
                cols[name] = pa.array(vals, getattr(pa, arrow)())
        elif kind == "int":
            cols[name] = pa.array(draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)), pa.int64())
        elif kind == "float":
            cols[name] = pa.array(draw(st.lists(st.floats(width=32), min_size=n, max_size=n)), pa.float32())
        elif kind == "binary":
            cols[name] = pa.array(draw(st.lists(st.binary(max_size=40), min_size=n, max_size=n)), pa.binary())
        else:
            cols[name] = pa.nulls(n)
    return pa.table(cols)


def _parquet(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


parquet_files = st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: b"PAR1" + b + b"PAR1"),
                          parquet_tables().map(_parquet), parquet_tables(clean_uids=True).map(_parquet),
                          parquet_tables().map(_parquet).flatmap(mutated))
UID_HEX = re.compile(r"[0-9a-f]{32}")


def metadata_in(data: bytes, columns: list[str] | None):
    """The table a metadata parquet holds, only `columns` (None: all), or None when it must be refused: what
    pyarrow's `read_table` reads from the bytes in memory, when every asked column is in the file's schema."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(io.BytesIO(data)).names
        if columns is not None and any(c not in names for c in columns):
            return None
        return pq.read_table(io.BytesIO(data), columns=columns)
    except Exception:  # noqa: BLE001 - not a parquet pyarrow reads
        return None


def uids_in(data: bytes) -> np.ndarray | None:
    """The `uid` column of a metadata parquet as `u8,u8` (row order), or None when it must be refused: a column of
    strings or bytes (plain or dictionary-encoded), no nulls, each exactly 32 lower-case hex characters."""
    import pyarrow as pa

    table = metadata_in(data, ["uid"])
    if table is None:
        return None
    col = table.column("uid")
    kind = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if not any(f(kind) for f in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                 pa.types.is_large_binary)):
        return None
    values = [v.decode("latin-1") if isinstance(v, bytes) else v for v in col.to_pylist()]
    if not all(isinstance(v, str) and UID_HEX.fullmatch(v) for v in values):
        return None
    return np.array([(int(v[:16], 16), int(v[16:], 16)) for v in values], dtype=UID_DTYPE)


@READERS
@given(data=parquet_files, columns=st.sampled_from([None, ["uid"], ["uid", "status"], ["nope"], []]))
def test_metadata_parquet_readers_outcome_is_predicted(scratch, data, columns):
    """read_metadata_file and read_uids on any bytes: exactly the table `metadata_in` and the uids `uids_in`
    find, or BadInputError where they find none."""
    from sfcomp.pool import read_metadata_file, read_uids

    CASES["metadata_parquet"] += 1
    want_table, want_uids = metadata_in(data, columns), uids_in(data)
    if OUTCOMES:
        with open(OUTCOMES, "a") as f:
            f.write(json.dumps({"test": "metadata_parquet", "table": want_table is not None,
                                "uids": want_uids is not None}) + "\n")
    with Example(scratch) as d:
        p = d / "m.parquet"
        p.write_bytes(data)
        case = {"parquet": data, "columns": columns}
        _expect_outcome("read_metadata_file", case, lambda: read_metadata_file(str(p), columns), want_table,
                        _same_table)
        _expect_outcome("read_uids", case, lambda: read_uids(str(p)), want_uids, _same_rows)


NPZ_KEYS = ["b32_img", "b32_txt", "l14_img", "x"]


@st.composite
def npz_files(draw) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=200) | st.binary(max_size=100).map(lambda b: b"PK\x03\x04" + b))
    arrays = {}
    for k in draw(st.lists(st.sampled_from(NPZ_KEYS), max_size=3, unique=True)):
        arrays[k] = draw(hnp.arrays(draw(st.sampled_from([np.float32, np.float16, np.uint8])),
                                    draw(st.sampled_from([(0, 4), (3, 4), (5, 2), (3,), ()]))))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return draw(mutated(buf.getvalue()))


def npz_in(data: bytes, keys: list[str], n_rows: int) -> dict[str, np.ndarray] | None:
    """The arrays `keys` of an npz beside a parquet of `n_rows` rows, or None when it must be refused: what numpy's
    own np.load reads as an npz holding every key, each array with one row per parquet row (not a scalar)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            out = {k: z[k] for k in keys}
    except Exception:  # noqa: BLE001 - not an npz numpy reads, a key missing, or a member it cannot read
        return None
    return out if all(a.ndim > 0 and len(a) == n_rows for a in out.values()) else None


@READERS
@given(data=npz_files(), keys=st.lists(st.sampled_from(NPZ_KEYS), max_size=2), n_rows=st.sampled_from([None, 3, 0]))
def test_npz_reader_outcome_is_predicted(scratch, data, keys, n_rows):
    """read_npz on any bytes: exactly the arrays `npz_in` finds, or BadInputError where it finds none."""
    import pyarrow as pa

    from sfcomp.pool import read_npz

    CASES["npz"] += 1
    want = npz_in(data, keys, 3 if n_rows is None else n_rows)  # None: the parquet's own 3 rows
    if OUTCOMES:
        with open(OUTCOMES, "a") as f:
            f.write(json.dumps({"test": "npz", "valid": want is not None}) + "\n")
    case = {"npz": data, "keys": keys, "n_rows": n_rows}
    with Example(scratch) as d:
        parquet = d / "m.parquet"
        parquet.write_bytes(_parquet(pa.table({"uid": pa.array(["0" * 32] * 3)})))
        (d / "m.npz").write_bytes(data)
        _expect_outcome("read_npz", case, lambda: read_npz(str(parquet), keys, n_rows), want,
                        lambda got, want: set(got) == set(want) and all(_same_rows(got[k], want[k]) for k in want))


def _tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _tiny_jpeg()
member_names = st.builds(lambda k, e: f"{k}.{e}" if e else k, st.sampled_from(["000000000", "000000001", "a/b", "x.y"]),
                         st.sampled_from(["jpg", "txt", "json", "png", "cls", ""]))
member_data = st.one_of(
    st.just(JPEG), st.binary(max_size=80), st.text(max_size=20).map(str.encode),
    st.builds(lambda u: json.dumps({"uid": u, "caption": "c"}).encode(), uid_like | json_values),
    json_values.map(lambda v: json.dumps(v).encode()))


@st.composite
def tar_files(draw) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=600))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in draw(st.lists(st.tuples(member_names, member_data), max_size=6)):
            info = tarfile.TarInfo(name)
            kind = draw(st.sampled_from([tarfile.REGTYPE] * 4 + [tarfile.DIRTYPE, tarfile.SYMTYPE]))
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.linkname = "elsewhere" if kind == tarfile.SYMTYPE else ""
                tf.addfile(info)
    return draw(mutated(buf.getvalue()))


@READERS
@given(data=tar_files())
def test_shard_readers_return_or_refuse(scratch, data):
    from sfcomp.eval.reshard import iter_raw_samples
    from sfcomp.pool import Pool, ShardErrors, iter_shard_samples, iter_tar_json

    CASES["shard_tar"] += 1
    with Example(scratch) as d:
        (d / "shards").mkdir()
        tar = d / "shards" / "00000000.tar"
        tar.write_bytes(data)
        _expect_bad_input_only("iter_tar_json", data, iter_tar_json, str(tar), ShardErrors())
        _expect_bad_input_only("iter_shard_samples", data, iter_shard_samples, [str(tar)], decode="pil")
        _expect_bad_input_only("iter_shard_samples", data, iter_shard_samples, [str(tar)], decode=None)
        _expect_bad_input_only("iter_raw_samples", data, iter_raw_samples, str(tar), [])
        _expect_bad_input_only("present_uids", data, Pool(str(d)).present_uids)


# ------------------------------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One tiny pool, the micro preset, a valid score file and subset of that pool (read-only for the tests:
    an example that may write near an input works on its own copy)."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() \
            and "SFCOMP_FASHION_MNIST_DIR" not in os.environ:
        pytest.skip("Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")
    from sfcomp.pool import Pool
    from sfcomp.uids import sort_uids, write_subset

    root = tmp_path_factory.mktemp("propcli")
    pool = H.make_pool(root / "pool", n=120, seed=4, samples_per_shard=60)
    uids = Pool(str(pool)).metadata_uids()
    rng = np.random.default_rng(0)
    scores = write_scores_file(root / "scores.npy", uids, rng.random(len(uids)))
    subset = root / "subset.npy"
    write_subset(subset, sort_uids(uids)[::2])
    assert len(uids) == N_POOL
    return World(root=root, pool=pool, scores=scores, subset=subset, preset=H.write_micro_preset(root / "micro.json"),
                 uids=uids, cache=root / "cache", score_values=np.load(scores), clip=_clip_scores(pool),
                 kept=_kept_by_filters(pool, root / "kept"))


def _clip_scores(pool: Path) -> dict:
    import pyarrow.parquet as pq

    parts = [pq.read_table(f) for f in sorted((pool / "metadata").glob("*.parquet"))]
    return {arch: np.concatenate([t[f"clip_{arch}_similarity_score"].to_numpy() for t in parts])
            for arch in ("b32", "l14")}


def _kept_by_filters(pool: Path, d: Path) -> dict:
    """Rows kept by the filters whose outcome rests on text/image rules (the oracle needs only "none or some")."""
    from baselines.apply import BaselineArgs, run_baseline

    d.mkdir()
    return {name: run_baseline(BaselineArgs(name=name, metadata_dir=str(pool / "metadata"), num_workers=1,
                                            save_path=str(d / f"{name}.npy"), allow_empty=True),
                               log=lambda m: None)["kept"] for name in ("basic_filter", "laion2b")}


class World(dict):
    def __repr__(self) -> str:  # hypothesis prints the fixture with a failing case: keep that short
        return f"World({self['root']})"


def write_scores_file(path: Path, uids, values) -> Path:
    write_scores(path, uids, {"cosine": values, "crossfit": values[::-1].copy()}, meta={"pool": "test"})
    return path


SCORE_KINDS = ["valid", "valid", "random", "truncated", "sidecar_list", "sidecar_garbage", "nan", "unsorted",
               "subset", "missing", "loop", "dir"]
SUBSET_KINDS = ["valid", "valid", "unsorted", "duplicates", "empty", "random", "missing", "loop", "raw", "foreign",
                "hex_text", "scores"]


def make_scores(world, d: Path, kind: str, data: bytes) -> Path:
    p = d / "in" / "scores.npy"
    p.parent.mkdir(exist_ok=True)
    if kind in ("valid", "truncated", "sidecar_list", "sidecar_garbage"):
        shutil.copy(world["scores"], p)
        shutil.copy(f"{world['scores']}.json", f"{p}.json")
        if kind == "truncated":
            p.write_bytes(p.read_bytes()[: max(1, len(data)) % p.stat().st_size])
        elif kind == "sidecar_list":
            Path(f"{p}.json").write_text("[1, 2]")
        elif kind == "sidecar_garbage":
            Path(f"{p}.json").write_bytes(not_a_json_object(data))
    elif kind == "random":
        p.write_bytes(data)  # no bytes hypothesis draws here make a .npy with a header (checked by the oracle)
    elif kind in ("nan", "unsorted"):
        u = np.sort(world["uids"]) if kind == "nan" else world["uids"][::-1]
        s = np.random.default_rng(1).random(len(u)).astype(np.float32)
        if kind == "nan":
            s[3] = np.nan
        H.write_score_file(p, u, s)
    elif kind == "subset":
        shutil.copy(world["subset"], p)
    elif kind == "loop":
        os.symlink(p.name, p)
    elif kind == "dir":
        p.mkdir()
        shutil.copy(world["scores"], p / "part.npy")
    return p


def not_a_json_object(data: bytes) -> bytes:
    """`data`, made sure not to parse as a JSON object (the kind "garbage" must be garbage)."""
    try:
        is_object = isinstance(json.loads(data), dict)
    except ValueError:
        is_object = False
    return b"\xff" + data if is_object or not data else data


def not_a_raw_subset(data: bytes) -> bytes:
    """`data`, made sure not to read as a raw u8,u8 memmap (16 bytes a uid): random bytes, never a subset."""
    return data + b"\0" if len(data) % 16 == 0 else data


def make_subset(world, d: Path, kind: str, data: bytes) -> Path:
    p = d / "in" / "subset.npy"
    p.parent.mkdir(exist_ok=True)
    sub = np.load(world["subset"])
    if kind == "valid":
        shutil.copy(world["subset"], p)
    elif kind == "unsorted":
        np.save(p, sub[::-1])
    elif kind == "duplicates":
        np.save(p, np.sort(np.concatenate([sub, sub[:3]])))
    elif kind == "empty":
        np.save(p, sub[:0])
    elif kind == "random":
        p.write_bytes(not_a_raw_subset(data))
    elif kind == "loop":
        os.symlink(p.name, p)
    elif kind == "raw":
        sub.tofile(p)
    elif kind == "foreign":
        f = np.empty(5, UID_DTYPE)
        f["f0"], f["f1"] = np.arange(5, dtype=np.uint64), 7
        np.save(p, f)
    elif kind == "hex_text":
        from sfcomp.uids import uids_to_hex

        p.write_text("\n".join(uids_to_hex(sub)) + "\n")
    elif kind == "scores":
        shutil.copy(world["scores"], p)
    return p


def make_out(d: Path, kind: str, inputs: list[Path], name: str = "out.npy") -> Path:
    """An output path of the given kind; 'input'/'input_sidecar'/'input_dir' point at an input."""
    (d / "afile").write_text("a file")
    if kind == "fresh":
        return d / "out" / name
    if kind == "under_file":
        return d / "afile" / name
    if kind == "existing":
        (d / name).write_bytes(b"old")
        return d / name
    if kind == "input":
        return inputs[0]
    if kind == "input_sidecar":
        return Path(f"{inputs[0]}.json")
    if kind == "input_dir":
        return inputs[0].parent / name
    if kind == "loop":
        os.symlink("loop.npy", d / "loop.npy")
        return d / "loop.npy"
    raise AssertionError(kind)


OUT_KINDS = ["fresh", "fresh", "under_file", "existing", "input", "input_sidecar", "input_dir", "loop"]


def run_command(test: str, args: list, inputs: list[Path], refusals: list[str], outputs: list[Path] = ()) -> None:
    """Run `sfcomp ARGS` in this process; check it ends as predicted (exit 2 with one `error: ` line when
    `refusals` names a reason, else exit 0), that no byte under `inputs` changed, and that a refused run left
    none of `outputs` that were not there before."""
    from click.testing import CliRunner

    from sfcomp.cli import main

    before = {str(p): H.tree_digest(p) for p in inputs}
    absent = [p for p in outputs if not os.path.lexists(p)]
    args = [str(a) for a in args]
    r = CliRunner().invoke(main, args)
    case = {"args": args, "expected": f"exit 2 ({'; '.join(refusals)})" if refusals else "exit 0"}
    problem = outcome_problem(r, refusals)
    if OUTCOMES:  # exploring: what each case ended with
        with open(OUTCOMES, "a") as f:
            f.write(json.dumps({"test": test, "args": args, "exit": r.exit_code, "refusals": refusals,
                                "stderr": r.stderr[-300:]}) + "\n")
    changed = [p for p in before if H.tree_digest(Path(p)) != before[p]]
    if changed:
        problem = (problem + "; " if problem else "") + f"input changed: {changed}"
    left = [str(p) for p in absent if r.exit_code != 0 and os.path.lexists(p)]
    if left:
        problem = (problem + "; " if problem else "") + f"refused, but left {left}"
    if problem:
        _fail(test, case, problem)


def outcome_problem(r, refusals: list[str]) -> str | None:
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        where = traceback.extract_tb(r.exc_info[2])[-1]
        return (f"traceback: {type(r.exception).__name__}: {r.exception} "
                f"(raised at {where.filename}:{where.lineno})")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if r.exit_code == 0:
        return f"exit 0, expected a refusal: {'; '.join(refusals)}" if refusals else None
    if not refusals:
        return f"exit {r.exit_code}, expected exit 0: stderr {lines[-3:]}"
    if r.exit_code != 2:
        return f"exit {r.exit_code}, expected exit 2: stderr {lines[-3:]}"
    if "Traceback (most recent call last)" in r.stderr:
        return f"exit 2 with a traceback: {lines[-1:]}"
    errors = [line for line in lines if line.startswith("error: ")]
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"exit 2 without exactly one final `error: ` line: {lines[-4:]}"
    return None


# ------------------------------------------------------------------------------------------ the oracles' rules
N_POOL = 120  # the world's pool
OUT_REFUSED = {"under_file": "output under a file", "existing": "output replaces a file that is not a subset",
               "input": "output is the input", "input_sidecar": "output is the input's sidecar",
               "loop": "output is a symlink loop"}  # "fresh" and "input_dir" (beside the input) are fine


def fraction_ok(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and 0 < v <= 1


def subset_refusals(kind: str, allow_duplicates: bool, allow_empty: bool) -> list[str]:
    """What reading a subset of `kind` (make_subset) refuses, before any pool is looked at."""
    if kind in ("valid", "raw", "foreign"):
        return []
    if kind == "duplicates":
        return [] if allow_duplicates else ["duplicate uids"]
    if kind == "empty":
        return [] if allow_empty else ["empty subset"]
    return [f"subset: {kind}"]


# mostly values a user means, some that no one should pass
good_fracs = st.sampled_from([0.1, 0.25, 0.5, 0.9, 1.0])
floats = st.one_of(good_fracs, good_fracs, good_fracs, st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.1, 1.5, 1e-300]))
small_ints = st.one_of(st.integers(1, 130), st.integers(-3, 300))
seeds = st.one_of(st.integers(0, 5), st.integers(0, 5), st.integers(-5, 5), st.sampled_from([2**63, 2**64, -2**63 - 1]))
sensible = st.sampled_from([True, True, False])


@COMMANDS
@given(scores=st.sampled_from(["valid"] * 6 + SCORE_KINDS), data=st.binary(max_size=200),
       out=st.sampled_from(["fresh"] * 4 + OUT_KINDS),
       rule=st.sampled_from(["--top-frac", "--top-frac", "--top-k", "--threshold", None, "two"]), frac=floats,
       k=small_ints, random_frac=st.none() | st.none() | floats, seed=seeds,
       field=st.sampled_from([None, None, None, "cosine", "crossfit", "nope", "f0"]),
       mode=st.sampled_from([None, "--streaming", "--in-memory"]), allow_empty=st.booleans())
def test_export_subset_outcome_is_predicted(world, scratch, scores, data, out, rule, frac, k, random_frac, seed,
                                            field, mode, allow_empty):
    CASES["export-subset"] += 1
    with Example(scratch) as d:
        s = make_scores(world, d, scores, data)
        o = make_out(d, out, [s])
        args = ["export-subset", "--scores", s, "-o", o, "--seed", seed]
        if rule == "two":
            args += ["--top-frac", frac, "--top-k", k]
        elif rule is not None:
            args += [rule, k if rule == "--top-k" else frac]
        args += [] if random_frac is None else ["--random-frac", random_frac]
        args += [] if field is None else ["--field", field]
        args += [] if mode is None else [mode]
        args += ["--allow-empty"] if allow_empty else []
        run_command("export-subset", args, [s, Path(f"{s}.json")],
                    export_refusals(world, scores, out, rule, frac, k, random_frac, field, allow_empty),
                    [o, Path(f"{o}.json"), d / "out"])


def export_refusals(world, scores: str, out: str, rule: str | None, frac: float, k: int, random_frac: float | None,
                    field: str | None, allow_empty: bool) -> list[str]:
    """export-subset's rules (docs/SUBSETS.md, sfcomp.select.mix_counts) over what the test drew."""
    why = [] if scores == "valid" else [f"score file: {scores}"]
    why += [OUT_REFUSED[out]] if out in OUT_REFUSED else []
    if field in ("nope", "f0"):
        why.append(f"no score field {field}")
    values = world["score_values"][field if field in ("cosine", "crossfit") else "cosine"]  # cosine: the default
    top = 0  # how many the top rule keeps (0 where the rule is refused: the case is refused anyway)
    if rule == "two":
        why.append("two top rules")
    elif rule == "--top-frac" and not fraction_ok(frac):
        why.append("top fraction not in (0, 1]")
    elif rule == "--top-frac":
        top = min(int(N_POOL * frac) + 1, N_POOL)
    elif rule == "--top-k" and not 0 <= k <= N_POOL:
        why.append("top-k not in [0, N]")
    elif rule == "--top-k":
        top = k
    elif rule == "--threshold" and not math.isfinite(frac):
        why.append("threshold not finite")
    elif rule == "--threshold":
        top = int((values >= np.float32(frac)).sum())
    random_frac = random_frac or None  # 0 is "no random part", as the CLI reads it
    n_random = 0
    if random_frac is not None:
        if fraction_ok(random_frac):
            n_random = int(N_POOL * random_frac)
        else:
            why.append("random fraction not in (0, 1]")
    if rule is None and random_frac is None:
        why.append("nothing to select")
    elif not (top or n_random) and not allow_empty:
        why.append("empty selection")
    return why


@COMMANDS
@given(subset=st.sampled_from(["valid"] * 3 + SUBSET_KINDS), data=st.binary(max_size=200),
       pool=st.sampled_from(["pool", "pool", "none", "missing", "file"]), flags=st.sets(
           st.sampled_from(["--allow-duplicates", "--no-shards", "--json", "--allow-empty"])))
def test_validate_subset_outcome_is_predicted(world, scratch, subset, data, pool, flags):
    CASES["validate-subset"] += 1
    with Example(scratch) as d:
        s = make_subset(world, d, subset, data)
        args = ["validate-subset", s, *sorted(flags)]
        pools = {"pool": world["pool"], "missing": d / "nopool", "file": s}
        args += [] if pool == "none" else ["--pool", pools[pool]]
        why = subset_refusals(subset, "--allow-duplicates" in flags, "--allow-empty" in flags)
        why += {"missing": ["no such pool"], "file": ["the pool is a file"],
                "pool": ["uids not in the pool"] if subset == "foreign" else []}.get(pool, [])
        run_command("validate-subset", args, [d / "in", world["pool"]], why)


@COMMANDS
@given(scores=st.sampled_from(["valid"] * 3 + SCORE_KINDS), data=st.binary(max_size=200),
       out=st.sampled_from(["fresh"] * 3 + OUT_KINDS))
def test_scores_to_parquet_outcome_is_predicted(world, scratch, scores, data, out):
    CASES["scores-to-parquet"] += 1
    with Example(scratch) as d:
        s = make_scores(world, d, scores, data)
        why = ([] if scores == "valid" else [f"score file: {scores}"]) + (
            [OUT_REFUSED[out]] if out in OUT_REFUSED else [])
        o = make_out(d, out, [s], "out.parquet")
        run_command("scores-to-parquet", ["scores-to-parquet", s, o], [s, Path(f"{s}.json")], why, [o, d / "out"])


@COMMANDS
@given(subset=st.sampled_from(["valid"] * 3 + SUBSET_KINDS), data=st.binary(max_size=200),
       source=st.sampled_from(["pool", "pool", "shards", "missing", "file"]),
       out=st.sampled_from(["fresh"] * 4 + ["pool", "shards", "metadata", "under_file", "inputs", "subset_file",
                            "unrelated_dir"]),
       shard_size=st.one_of(st.integers(1, 200), st.integers(1, 200), st.integers(-2, 200)),
       flags=st.sets(st.sampled_from(["--overwrite", "--json", "--allow-empty"])))
def test_reshard_outcome_is_predicted(world, scratch, subset, data, source, out, shard_size, flags):
    CASES["reshard"] += 1
    with Example(scratch) as d:
        s = make_subset(world, d, subset, data)
        pool = d / "in" / "pool"
        shutil.copytree(world["pool"], pool)
        (d / "afile").write_text("a file")
        (d / "unrelated").mkdir()
        (d / "unrelated" / "keep.txt").write_text("user data")
        sources = {"pool": pool, "shards": pool / "shards", "missing": d / "nope", "file": d / "afile"}
        outs = {"fresh": d / "out", "pool": pool, "shards": pool / "shards", "metadata": pool / "metadata" / "r",
                "under_file": d / "afile" / "r", "inputs": d / "in", "subset_file": s, "unrelated_dir": d / "unrelated"}
        args = ["reshard", "-i", sources[source], "-s", s, "-o", outs[out], "--shard-size", shard_size, *sorted(flags)]
        # the user's file in an output folder sfcomp did not make survives, --overwrite or not
        why = subset_refusals(subset, True, "--allow-empty" in flags)  # upsampling is DataComp's resharder's
        why += {"missing": ["no such input"], "file": ["the input is a file"]}.get(source, [])
        why += [] if out == "fresh" else [f"output: {out}"]  # metadata/: the pool's, read beside its shards/
        why += ["no subset uid is in the pool"] if subset == "foreign" else []
        why += [] if shard_size >= 1 else ["--shard-size < 1"]
        run_command("reshard", args, [d / "in", d / "unrelated" / "keep.txt"], why, [d / "out"])


@COMMANDS
@given(name=st.sampled_from(["no_filter", "basic_filter", "clip_score", "random", "laion2b"]),
       meta=st.sampled_from(["metadata", "metadata", "metadata", "metadata", "missing", "file", "empty_dir", "pool"]),
       save=st.sampled_from(["fresh"] * 4 + ["under_file", "dir", "parquet", "in_metadata", "existing"]),
       arch=st.sampled_from([None, "b32", "l14"]), threshold=st.none() | floats, fraction=st.none() | floats,
       workers=st.sampled_from([None, 1, 0, -1]), seed=st.none() | seeds, allow_empty=st.booleans(), sane=sensible)
@example(name="random", meta="metadata", save="fresh", arch=None, threshold=None, fraction=0.5, workers=1, seed=-1,
         allow_empty=False, sane=True)  # found by this test (hypothesis reaches it at some max_examples only)
def test_baseline_outcome_is_predicted(world, scratch, name, meta, save, arch, threshold, fraction, workers, seed,
                                       allow_empty, sane):
    CASES["baseline"] += 1
    with Example(scratch) as d:
        pool = d / "in" / "pool"
        shutil.copytree(world["pool"], pool)
        (d / "afile").write_text("a file")
        (d / "empty").mkdir()
        (d / "old.npy").write_bytes(b"old")
        parquet = sorted((pool / "metadata").glob("*.parquet"))[0]
        metas = {"metadata": pool / "metadata", "missing": d / "nope", "file": d / "afile", "empty_dir": d / "empty",
                 "pool": pool}
        saves = {"fresh": d / "out" / "b.npy", "under_file": d / "afile" / "b.npy", "dir": d / "empty",
                 "parquet": parquet, "in_metadata": pool / "metadata" / "b.npy", "existing": d / "old.npy"}
        args = ["baseline", name, "--metadata-dir", metas[meta], "--save-path", saves[save]]
        if sane:  # the options this baseline takes
            threshold = None if name != "clip_score" or fraction is not None else threshold
            fraction = fraction if name in ("clip_score", "random") else None
            arch = (arch or "b32") if name == "clip_score" else None
            fraction = 0.5 if name in ("clip_score", "random") and fraction is None and threshold is None else fraction
            seed = seed if name == "random" else None
            workers = 1
        for opt, v in [("--arch", arch), ("--threshold", threshold), ("--fraction", fraction),
                       ("--num-workers", 1 if workers is None else workers), ("--seed", seed)]:
            args += [] if v is None else [opt, v]
        args += ["--allow-empty"] if allow_empty else []
        run_command("baseline", args, [d / "in"], baseline_refusals(
            world, name, meta, save, arch, threshold, fraction, 1 if workers is None else workers, seed, allow_empty),
            [d / "out"])


TAKES = {"no_filter": set(), "basic_filter": set(), "laion2b": set(), "clip_score": {"arch", "threshold", "fraction"},
         "random": {"fraction", "seed"}}  # of the flags the test draws


def baseline_refusals(world, name: str, meta: str, save: str, arch, threshold, fraction, workers: int, seed,
                      allow_empty: bool) -> list[str]:
    """baseline's rules (baselines/apply.check_args, the options' checks) over what the test drew."""
    given = {k for k, v in dict(arch=arch, threshold=threshold, fraction=fraction, seed=seed).items() if v is not None}
    why = [f"{name} does not take --{k}" for k in sorted(given - TAKES[name])]
    why += [] if meta == "metadata" else [f"--metadata-dir: {meta}"]
    why += [] if save == "fresh" else [f"--save-path: {save}"]
    why += [] if workers >= 1 else ["--num-workers < 1"]
    if threshold is not None and not math.isfinite(threshold):
        why.append("--threshold not finite")
    if fraction is not None and not fraction_ok(fraction):
        why.append("--fraction not in (0, 1]")
    if seed is not None and seed < 0:
        why.append("--seed < 0")
    kept = {"no_filter": N_POOL, **world["kept"]}.get(name)
    if name == "clip_score":
        why += [] if arch else ["clip_score needs --arch"]
        why += [] if (fraction is None) != (threshold is None) else ["clip_score needs one of --fraction, --threshold"]
        scores = world["clip"][arch or "b32"]
        kept = int((scores >= np.float32(threshold)).sum()) if threshold is not None and math.isfinite(threshold) \
            else 1  # a fraction keeps the (int(N f) + 1)-th largest score and those above
    if name == "random":
        why += [] if fraction is not None else ["random needs --fraction"]
        kept = int(N_POOL * fraction) if fraction_ok(fraction) else 0
    if not why and not kept and not allow_empty:
        why.append(f"{name} keeps no row")
    return why


@settings(COMMANDS, max_examples=10)
@given(workdir=st.sampled_from(["fresh"] * 5 + ["under_file", "file", "in_pool"]),
       pool=st.sampled_from(["pool"] * 6 + ["missing", "file", "unconfigured_name"]),
       preset=st.sampled_from(["micro"] * 6 + ["missing", "garbage"]),
       folds=st.sampled_from([2, 2, 1, 0, -1]), top_frac=floats, random_frac=floats, round0_frac=floats,
       snapshots=st.sampled_from(["", "", "0.5", "abc", "1.5", "0.5,0.5", "-1"]),
       threads=st.sampled_from([1, 1, 0, -1]), device=st.sampled_from([None, None, "cpu", "bogus", "cuda"]),
       train_shards=st.sampled_from([None, None, "00000000", "99999999", ",", "abc"]),
       round_index=st.sampled_from([None, None, 0, -1, 7]), seed=seeds, sane=sensible)
def test_round_outcome_is_predicted(world, scratch, workdir, pool, preset, folds, top_frac, random_frac,
                                    round0_frac, snapshots, threads, device, train_shards, round_index, seed, sane):
    import torch

    if sane:  # a run a user means, with one hostile path at most
        folds, threads, device, round_index = 2, 1, None, None
        top_frac, random_frac, round0_frac = (v if 0 < v <= 1 else 0.5 for v in (top_frac, random_frac, round0_frac))
        snapshots = snapshots if snapshots in ("", "0.5") else ""
        train_shards = train_shards if train_shards in (None, "00000000") else None

    torch.set_num_threads(1)
    CASES["round"] += 1
    with Example(scratch) as d:
        (d / "afile").write_text("a file")
        (d / "garbage.json").write_bytes(b"{not json")
        own_pool = d / "in" / "pool"
        if workdir == "in_pool":
            shutil.copytree(world["pool"], own_pool)
        the_pool = own_pool if workdir == "in_pool" else world["pool"]
        pools = {"pool": the_pool, "missing": d / "nopool", "file": d / "afile", "unconfigured_name": "no-such-pool"}
        works = {"fresh": d / "work", "under_file": d / "afile" / "work", "file": d / "afile",
                 "in_pool": own_pool / "work"}
        presets = {"micro": world["preset"], "missing": d / "nope.json", "garbage": d / "garbage.json"}
        args = ["round", "--pool", pools[pool], "--workdir", works[workdir], "--preset", presets[preset],
                "--cache-dir", d / "cache" if workdir == "in_pool" else world["cache"], "--steps", 1, "--quiet",
                "--folds", folds, "--top-frac", top_frac, "--random-frac", random_frac, "--round0-frac", round0_frac,
                "--snapshots", snapshots, "--threads", threads, "--seed", seed]
        args += [] if device is None else ["--device", device]
        args += [] if train_shards is None else ["--train-shards", train_shards]
        args += [] if round_index is None else ["--round", round_index]
        why = round_refusals(workdir, pool, preset, folds, top_frac, random_frac, round0_frac, snapshots, threads,
                             device, train_shards, round_index, torch.cuda.is_available())
        run_command("round", args, [the_pool, world["preset"]], why, [d / "work"])


def round_refusals(workdir: str, pool: str, preset: str, folds: int, top_frac: float, random_frac: float,
                   round0_frac: float, snapshots: str, threads: int, device: str | None, train_shards: str | None,
                   round_index: int | None, has_cuda: bool) -> list[str]:
    """round's rules (sfcomp.loop.LoopConfig.check, the CLI's option types, sfcomp.guard) over what the test drew,
    for a fresh workdir."""
    why = [] if workdir == "fresh" else [f"--workdir: {workdir}"]
    why += [] if pool == "pool" else [f"--pool: {pool}"]
    why += [] if preset == "micro" else [f"--preset: {preset}"]
    why += [] if 1 <= folds <= 32 else ["--folds not in [1, 32]"]
    why += [] if folds != 1 else ["--folds 1 has no crossfit score (the default --score)"]
    why += [f"--{name} not in (0, 1]" for name, v in (("top-frac", top_frac), ("round0-frac", round0_frac))
            if not fraction_ok(v)]
    why += [] if 0 <= random_frac <= 1 else ["--random-frac not in [0, 1]"]
    why += [] if snapshots in ("", "0.5", "0.5,0.5") else [f"--snapshots {snapshots!r}"]
    why += [] if threads >= 1 else ["--threads < 1"]
    why += [] if device in (None, "cpu") or (device == "cuda" and has_cuda) else [f"--device {device}"]
    why += [] if train_shards in (None, "00000000") else [f"--train-shards {train_shards!r}"]
    why += [] if round_index in (None, 0) else [f"--round {round_index} on a fresh workdir"]
    return why

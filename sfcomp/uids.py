"""DataComp uids: 32-char lower-case hex <-> the `u8,u8` subset dtype, and subset files.

A uid is a 128-bit number; DataComp stores it as `(f0, f1) = divmod(int(uid, 16), 2**64)` in a structured
array of dtype `np.dtype("u8,u8")` (little-endian), sorted by (f0, f1), which is also hex-string order.
Everything here is vectorised: no Python loop over uids.
"""
from __future__ import annotations

import os
import tokenize
from pathlib import Path
from collections.abc import Iterable

import numpy as np

from .atomic import atomic_open
from .errors import BadInputError

UID_DTYPE = np.dtype([("f0", "<u8"), ("f1", "<u8")])
# what numpy's .npy header parser raises on a malformed header (it evaluates the header as a Python literal)
NPY_FORMAT_ERRORS = (ValueError, SyntaxError, tokenize.TokenError)

_HEX_CHARS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE = np.full(256, 255, dtype=np.uint8)  # ascii byte -> nibble; 255 marks a non-hex byte
_NIBBLE[_HEX_CHARS] = np.arange(16, dtype=np.uint8)


def _ascii_matrix(uids, source: str | None) -> np.ndarray:
    """Any array-like of 32-char strings -> (N, 32) uint8 ascii codes, without a per-uid loop where possible."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(uids, (pa.ChunkedArray, pa.Array)):
        chunks = uids.chunks if isinstance(uids, pa.ChunkedArray) else [uids]
        parts = [_arrow_ascii(c, source) for c in chunks]
        return np.concatenate(parts) if parts else np.empty((0, 32), np.uint8)
    if hasattr(uids, "to_numpy") and not isinstance(uids, np.ndarray):  # pandas Series / Index
        uids = uids.to_numpy()
    arr = np.asarray(uids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype("U")
        except (TypeError, ValueError) as e:
            raise BadInputError(source, f"uids must be strings ({e})") from None
    if arr.dtype.kind == "U":
        if arr.dtype.itemsize // 4 != 32:
            _raise_bad_length(arr, source)
        codes = arr.view(np.uint32).reshape(-1, 32)
        if len(codes) and codes.max() > 127:
            _raise_bad_chars(arr, codes >= 128, source)
        return codes.astype(np.uint8)
    if arr.dtype.kind == "S":
        if arr.dtype.itemsize != 32:
            _raise_bad_length(arr, source)
        return arr.view(np.uint8).reshape(-1, 32)
    raise BadInputError(source, f"uids must be 32-char hex strings, got dtype {arr.dtype}")


def _arrow_ascii(chunk, source: str | None) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_dictionary(chunk.type):  # a categorical column (pandas `category`, pyarrow dictionary_encode)
        chunk = chunk.dictionary_decode()
    if getattr(pa.types, "is_string_view", lambda t: False)(chunk.type):
        chunk = chunk.cast(pa.string())
    if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type) or pa.types.is_binary(chunk.type)
            or pa.types.is_large_binary(chunk.type)):
        raise BadInputError(source, f"uid column has type {chunk.type}, expected 32-char hex strings")
    if chunk.null_count:
        raise BadInputError(source, f"uid column has {chunk.null_count} null values")
    n = len(chunk)
    if n == 0:
        return np.empty((0, 32), np.uint8)
    off_dtype = np.int64 if pa.types.is_large_string(chunk.type) or pa.types.is_large_binary(chunk.type) else np.int32
    offsets = np.frombuffer(chunk.buffers()[1], dtype=off_dtype)[chunk.offset : chunk.offset + n + 1]
    lengths = np.diff(offsets)
    if (lengths != 32).any():
        bad = int(np.flatnonzero(lengths != 32)[0])
        raise BadInputError(source, f"malformed uid at row {bad}: {chunk[bad].as_py()!r} is not 32 hex characters")
    data = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)
    return data[offsets[0] : offsets[-1]].reshape(n, 32)


def _raise_bad_length(arr: np.ndarray, source: str | None):
    lengths = np.char.str_len(arr)
    bad = int(np.flatnonzero(lengths != 32)[0]) if (lengths != 32).any() else 0
    raise BadInputError(source, f"malformed uid at row {bad}: {_show(arr[bad])} is not 32 hex characters")


def _raise_bad_chars(arr: np.ndarray, bad_mask: np.ndarray, source: str | None):
    bad = int(np.flatnonzero(bad_mask.any(axis=1))[0])
    raise BadInputError(source, f"malformed uid at row {bad}: {_show(arr[bad])} is not lower-case hex")


def _show(x) -> str:
    if isinstance(x, (bytes, np.bytes_)):
        x = x.decode("ascii", "replace")
    return repr(str(x))


def hex_to_uids(uids, source: str | os.PathLike | None = None) -> np.ndarray:
    """32-char lower-case hex strings (list, numpy, pandas or pyarrow) -> structured `u8,u8` array, same order.

    Raises BadInputError naming `source` and the first bad row for a wrong length, upper case or a non-hex char.
    """
    src = None if source is None else os.fspath(source)
    codes = _ascii_matrix(uids, src)
    nib = _NIBBLE[codes]
    if len(nib) and nib.max() == 255:
        bad = int(np.flatnonzero((nib == 255).any(axis=1))[0])
        shown = codes[bad].tobytes().rstrip(b"\0").decode("ascii", "replace")
        # numpy pads shorter strings with NUL bytes: a NUL means the uid was too short
        why = "is not 32 hex characters" if (codes[bad] == 0).any() else "is not lower-case hex"
        raise BadInputError(src, f"malformed uid at row {bad}: {shown!r} {why}")
    packed = (nib[:, 0::2] << 4) | nib[:, 1::2]  # (N, 16) bytes, big-endian number
    be = np.ascontiguousarray(packed).view(">u8")  # (N, 2): hi, lo
    out = np.empty(len(codes), dtype=UID_DTYPE)
    out["f0"] = be[:, 0]
    out["f1"] = be[:, 1]
    return out


def uids_to_hex(uids: np.ndarray) -> np.ndarray:
    """Structured `u8,u8` array -> numpy array of 32-char lower-case hex str (dtype <U32)."""
    uids = np.asarray(uids)
    be = np.empty((len(uids), 2), dtype=">u8")
    be[:, 0] = uids["f0"]
    be[:, 1] = uids["f1"]
    b = be.view(np.uint8).reshape(-1, 16)
    chars = np.empty((len(uids), 32), dtype=np.uint8)
    chars[:, 0::2] = _HEX_CHARS[b >> 4]
    chars[:, 1::2] = _HEX_CHARS[b & 15]
    return chars.view("S32").reshape(-1).astype("U32")


def uid_order(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
    """Permutation sorting by (f0, f1): a fast uint64 argsort, lexsort only when some f0 repeats."""
    order = np.argsort(f0, kind="stable")
    s0 = f0[order]
    if len(s0) > 1 and (s0[1:] == s0[:-1]).any():
        order = np.lexsort((f1, f0))
    return order


def uid_le_next(f0: np.ndarray, f1: np.ndarray, strict: bool) -> np.ndarray:
    """For consecutive pairs: uid[i] < uid[i+1] (strict) or <= (not strict)."""
    a0, b0, a1, b1 = f0[:-1], f0[1:], f1[:-1], f1[1:]
    return (a0 < b0) | ((a0 == b0) & ((a1 < b1) if strict else (a1 <= b1)))


def uid_hex(f0, f1) -> str:
    """One uid's 32-char hex string from its two halves."""
    one = np.empty(1, UID_DTYPE)
    one["f0"], one["f1"] = f0, f1
    return str(uids_to_hex(one)[0])


def sort_uids(uids: np.ndarray) -> np.ndarray:
    """Sort by (f0, f1) (uid_order)."""
    uids = np.asarray(uids, dtype=UID_DTYPE)
    return uids[uid_order(uids["f0"], uids["f1"])]


def _le(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a["f0"] < b["f0"]) | ((a["f0"] == b["f0"]) & (a["f1"] <= b["f1"]))


def _eq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a["f0"] == b["f0"]) & (a["f1"] == b["f1"])


def first_unsorted(uids: np.ndarray) -> int | None:
    """Index i of the first pair with uids[i] > uids[i+1], or None when sorted (duplicates allowed)."""
    if len(uids) < 2:
        return None
    ok = _le(uids[:-1], uids[1:])
    return None if ok.all() else int(np.argmin(ok))


def count_duplicates(sorted_uids: np.ndarray) -> int:
    """Number of entries that repeat the entry before them, in a sorted array."""
    if len(sorted_uids) < 2:
        return 0
    return int(_eq(sorted_uids[:-1], sorted_uids[1:]).sum())


def unique_sorted(sorted_uids: np.ndarray) -> np.ndarray:
    if len(sorted_uids) < 2:
        return sorted_uids
    dup = _eq(sorted_uids[:-1], sorted_uids[1:])
    if not dup.any():
        return sorted_uids  # the common case: no copy
    keep = np.ones(len(sorted_uids), dtype=bool)
    keep[1:] = ~dup
    return sorted_uids[keep]


def isin_sorted(query: np.ndarray, sorted_ref: np.ndarray) -> np.ndarray:
    """Boolean mask: which `query` uids occur in `sorted_ref` (which must be sorted)."""
    ref0, ref1 = sorted_ref["f0"], sorted_ref["f1"]
    q0, q1 = query["f0"], query["f1"]
    lo = np.searchsorted(ref0, q0, side="left")
    hi = np.searchsorted(ref0, q0, side="right")
    found = np.zeros(len(query), dtype=bool)
    single = hi - lo == 1
    found[single] = ref1[lo[single]] == q1[single]
    # f0 collisions (two uids sharing their top 64 bits) are astronomically rare in random uids: check exactly.
    for i in np.flatnonzero(hi - lo > 1):
        found[i] = bool((ref1[lo[i] : hi[i]] == q1[i]).any())
    return found


def write_subset(path: str | os.PathLike, uids: np.ndarray, allow_duplicates: bool = False) -> np.ndarray:
    """Write a DataComp subset: exactly `u8,u8`, sorted, unique unless `allow_duplicates` (upsampling), atomic.

    Returns the array written.
    """
    arr = sort_uids(np.asarray(uids, dtype=UID_DTYPE))
    if not allow_duplicates:
        arr = unique_sorted(arr)
    with atomic_open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    return arr


NPY_VERSIONS = ((1, 0), (2, 0), (3, 0))  # the .npy format versions numpy itself loads


def read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an open .npy at its start, leaving `f` at the array data; ValueError
    (one of NPY_FORMAT_ERRORS) for a header numpy's np.load would refuse, an unknown format version included."""
    version = np.lib.format.read_magic(f)
    if version not in NPY_VERSIONS:
        raise ValueError(f"format version {version[0]}.{version[1]}; numpy reads 1.0, 2.0 and 3.0")
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return _read_header_3_0(f)


def _read_header_3_0(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Version 3.0: 2.0's layout with a utf-8 header (what np.save writes for a non-latin-1 field name), which
    numpy's public 2.0 reader would decode as latin-1 into other field names than np.load gives."""
    import ast

    size = int.from_bytes(f.read(4), "little")
    text = f.read(size)
    if len(text) != size:
        raise ValueError("EOF while reading the .npy header")
    d = ast.literal_eval(text.decode("utf-8"))  # ValueError/SyntaxError for what is not a literal, as numpy's
    if not (isinstance(d, dict) and set(d) == {"descr", "fortran_order", "shape"}
            and isinstance(d["shape"], tuple) and all(type(n) is int and n >= 0 for n in d["shape"])
            and isinstance(d["fortran_order"], bool)):
        raise ValueError(f"header is not a .npy header dict: {text[:80]!r}")
    try:
        dtype = np.lib.format.descr_to_dtype(d["descr"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"descr is not a dtype: {d['descr']!r} ({e})") from None
    return d["shape"], d["fortran_order"], dtype


def looks_like_subset(path: str | os.PathLike) -> bool:
    """`path` is a `.npy` of DataComp uids (`u8,u8`, one dimension), judged by its header alone."""
    try:
        with open(path, "rb") as f:
            shape, _, dtype = read_npy_header(f)
    except (OSError, ValueError, SyntaxError, TypeError):
        return False
    return len(shape) == 1 and dtype == UID_DTYPE


def check_subset_output(path: str | os.PathLike, what: str = "output") -> None:
    """A subset writer's output may replace an earlier subset, never another kind of file (sfcomp.guard)."""
    from .guard import check_replaceable

    check_replaceable(path, what=what, kind="DataComp subset (.npy of u8,u8 uids)", looks_like=looks_like_subset)


def read_subset(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Read a subset as DataComp's resharder does: `.npy` (by its magic bytes) or a raw `u8,u8` memmap.

    Refused (one line): a `.npy` with bytes after its array, and a text file of hex uids (which a raw memmap
    read would turn into garbage uids)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_TEXT_SNIFF)
    except FileNotFoundError:
        raise BadInputError(path, "subset file does not exist") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a folder, not a subset file") from None
    if head[:6] == b"\x93NUMPY":
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, *NPY_FORMAT_ERRORS) as e:
            raise BadInputError(path, f"unreadable .npy ({e})") from None
        if arr.dtype != UID_DTYPE:
            raise BadInputError(path, f"wrong dtype {arr.dtype}, expected u8,u8 (fields f0,f1, little-endian)")
        if arr.ndim != 1:
            raise BadInputError(path, f"subset must be 1-D, got shape {arr.shape}")
        check_npy_size(path, npy_data_offset(path) + arr.nbytes)
        return arr
    if looks_like_hex_text(head):
        raise BadInputError(path, "looks like a text file of hex uids, not a .npy subset: convert it with sfcomp."
                                  "uids.write_subset(OUT_NPY, sfcomp.uids.hex_to_uids(open(PATH).read().split()))")
    size = path.stat().st_size
    if size % UID_DTYPE.itemsize:
        raise BadInputError(path, f"neither .npy nor a raw u8,u8 memmap ({size} bytes is not a multiple of 16)")
    if size == 0:
        return np.empty(0, UID_DTYPE)
    return np.memmap(path, dtype=UID_DTYPE, mode="r") if mmap else np.fromfile(path, dtype=UID_DTYPE)


_TEXT_SNIFF = 4096
_HEX_TEXT = frozenset(b"0123456789abcdefABCDEF \t\r\n,")


def looks_like_hex_text(head: bytes) -> bool:
    """True when the first bytes of a file are a text list of 32-char hex uids (one per line, or separated by
    spaces/commas). Random uid bytes pass this with probability about (22/256)**len(head): never in practice."""
    if len(head) < 32 or not set(head) <= _HEX_TEXT:
        return False
    words = head.replace(b",", b" ").split()
    whole = words if len(head) < _TEXT_SNIFF else words[:-1]  # the last word may be cut by the sniff window
    return bool(whole) and all(len(w) == 32 for w in whole)


def npy_data_offset(path: str | os.PathLike) -> int:
    """Byte offset of the array data in a `.npy` file (after its header)."""
    with open(path, "rb") as f:
        read_npy_header(f)
        return f.tell()


def check_npy_size(path: str | os.PathLike, need: int) -> None:
    """Refuse a `.npy` whose file holds more bytes than its header's array (a concatenation, an append)."""
    size = os.path.getsize(path)
    if size > need:
        raise BadInputError(path, f"{size - need} trailing bytes after the array (the file is {size} bytes, its "
                                  f"header describes {need}); it is not one .npy array")


def refuse_empty(n: int, source: str | os.PathLike | None, reason: str, allow_empty: bool = False,
                 writing: bool = True) -> None:
    """The one rule for empty subsets, used by every command that writes a subset (`writing`: export-subset,
    baseline, the loop's mixes) and every one that reads one (validate-subset, reshard): an empty subset is
    refused unless the user passed --allow-empty."""
    if n or allow_empty:
        return
    if writing:
        raise BadInputError(source, f"selection is empty ({reason}); pass --allow-empty to write an empty subset")
    raise BadInputError(source, f"subset is empty ({reason}); pass --allow-empty to accept an empty subset")


def check_subset(path: str | os.PathLike, arr: np.ndarray, allow_duplicates: bool = False) -> None:
    """Raise BadInputError if `arr` (read from `path`) is unsorted or has duplicates (unless allowed)."""
    i = first_unsorted(arr)
    if i is not None:
        raise BadInputError(path, f"subset is not sorted (entry {i + 1} < entry {i}); DataComp's resharder "
                                  "would silently select the wrong samples: sort it (sfcomp.uids.write_subset)")
    if not allow_duplicates:
        d = count_duplicates(arr)
        if d:
            raise BadInputError(path, f"subset has {d} duplicate uids (pass --allow-duplicates if upsampling is meant)")


def concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return np.concatenate(parts) if parts else np.empty(0, UID_DTYPE)

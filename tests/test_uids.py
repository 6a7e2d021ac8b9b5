import uuid

import numpy as np
import pytest

from sfcomp import uids as U
from sfcomp.errors import BadInputError


def test_hand_computed_uids():
    a = U.hex_to_uids(["00000000000000010000000000000002", "ffffffffffffffffffffffffffffffff",
                       "0123456789abcdef fedcba9876543210".replace(" ", "")])
    assert (int(a[0]["f0"]), int(a[0]["f1"])) == (1, 2)
    assert (int(a[1]["f0"]), int(a[1]["f1"])) == (2**64 - 1, 2**64 - 1)
    assert (int(a[2]["f0"]), int(a[2]["f1"])) == (0x0123456789ABCDEF, 0xFEDCBA9876543210)


def test_matches_datacomp_divmod_rule_and_round_trips():
    hexes = [uuid.UUID(int=int(x)).hex for x in np.random.default_rng(0).integers(0, 2**62, 500)]
    hexes += [uuid.uuid4().hex for _ in range(500)]
    arr = U.hex_to_uids(hexes)
    for h, row in zip(hexes, arr):
        assert divmod(int(h, 16), 2**64) == (int(row["f0"]), int(row["f1"]))
    assert list(U.uids_to_hex(arr)) == hexes


def test_accepts_numpy_pandas_and_arrow():
    import pandas as pd
    import pyarrow as pa

    hexes = [uuid.uuid4().hex for _ in range(50)]
    ref = U.hex_to_uids(hexes)
    for form in (np.array(hexes), np.array(hexes, dtype="S32"), np.array(hexes, dtype=object), pd.Series(hexes),
                 pa.array(hexes), pa.chunked_array([hexes[:20], hexes[20:]]), pa.array(hexes).slice(0, 50)):
        assert np.array_equal(U.hex_to_uids(form), ref)
    sliced = pa.array(hexes).slice(10, 5)
    assert np.array_equal(U.hex_to_uids(sliced), ref[10:15])


def test_exact_datacomp_dtype_on_disk(tmp_path):
    arr = U.hex_to_uids([uuid.uuid4().hex for _ in range(10)])
    out = U.write_subset(tmp_path / "s.npy", arr)
    loaded = np.load(tmp_path / "s.npy")
    assert loaded.dtype == np.dtype("u8,u8")
    assert loaded.dtype.names == ("f0", "f1")
    assert all(loaded.dtype[name].byteorder in ("<", "=") for name in ("f0", "f1"))
    assert np.array_equal(loaded, out)


def test_sort_order_equals_hex_string_order(tmp_path):
    rng = np.random.default_rng(1)
    hexes = [uuid.uuid4().hex for _ in range(2000)]
    # force f0 ties so the tie-breaking path is exercised
    hexes += ["%016x%016x" % (7, int(x)) for x in rng.integers(0, 2**63, 50)]
    written = U.write_subset(tmp_path / "s.npy", U.hex_to_uids(hexes))
    assert list(U.uids_to_hex(written)) == sorted(set(hexes))
    assert U.first_unsorted(written) is None


def test_duplicates_removed_unless_upsampling(tmp_path):
    hexes = [uuid.uuid4().hex for _ in range(5)]
    arr = U.hex_to_uids(hexes + hexes[:2])
    assert len(U.write_subset(tmp_path / "a.npy", arr)) == 5
    up = U.write_subset(tmp_path / "b.npy", arr, allow_duplicates=True)
    assert len(up) == 7 and U.count_duplicates(up) == 2 and U.first_unsorted(up) is None


@pytest.mark.parametrize("bad,why", [
    ("abc", "32 hex"), ("0" * 33, "32 hex"), ("A" * 32, "lower-case hex"),
    ("g" * 32, "lower-case hex"), ("0" * 31 + " ", "lower-case hex"), ("é" * 32, "lower-case hex"),
])
def test_malformed_uids_name_the_file_and_row(bad, why):
    with pytest.raises(BadInputError) as e:
        U.hex_to_uids([uuid.uuid4().hex, bad], "meta/x.parquet")
    msg = str(e.value)
    assert msg.startswith("meta/x.parquet: ") and "row 1" in msg and why in msg and "\n" not in msg


def test_malformed_uid_in_arrow_column():
    import pyarrow as pa

    with pytest.raises(BadInputError, match="row 1"):
        U.hex_to_uids(pa.array([uuid.uuid4().hex, "short"]), "f.parquet")
    with pytest.raises(BadInputError, match="null"):
        U.hex_to_uids(pa.array([uuid.uuid4().hex, None]), "f.parquet")


def test_read_raw_memmap_form(tmp_path):
    arr = U.write_subset(tmp_path / "s.npy", U.hex_to_uids([uuid.uuid4().hex for _ in range(20)]))
    arr.tofile(tmp_path / "raw.bin")
    assert np.array_equal(U.read_subset(tmp_path / "raw.bin"), arr)
    (tmp_path / "odd.bin").write_bytes(b"x" * 17)
    with pytest.raises(BadInputError, match="multiple of 16"):
        U.read_subset(tmp_path / "odd.bin")


def test_wrong_dtype_and_unsorted_are_rejected(tmp_path):
    np.save(tmp_path / "be.npy", np.zeros(3, dtype=">u8,>u8"))
    with pytest.raises(BadInputError, match="wrong dtype"):
        U.read_subset(tmp_path / "be.npy")
    np.save(tmp_path / "named.npy", np.zeros(3, dtype=[("hi", "<u8"), ("lo", "<u8")]))
    with pytest.raises(BadInputError, match="wrong dtype"):
        U.read_subset(tmp_path / "named.npy")
    arr = U.hex_to_uids(["f" * 32, "0" * 32])
    with pytest.raises(BadInputError, match="not sorted"):
        U.check_subset("x.npy", arr)


def test_isin_sorted_with_f0_collisions():
    ref = U.sort_uids(U.hex_to_uids(["%016x%016x" % (5, i) for i in range(10)] + [uuid.uuid4().hex for _ in range(100)]))
    query = U.hex_to_uids(["%016x%016x" % (5, 3), "%016x%016x" % (5, 99), U.uids_to_hex(ref[50:51])[0], "f" * 32])
    assert U.isin_sorted(query, ref).tolist() == [True, False, True, False]


def test_atomic_write_leaves_nothing_on_crash(tmp_path, monkeypatch):
    target = tmp_path / "subset.npy"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(RuntimeError):
        U.write_subset(target, U.hex_to_uids([uuid.uuid4().hex]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["dictionary", "large_binary", "large_string", "string_view"])
def test_a_uid_column_of_any_arrow_string_kind_reads_the_same_uids(tmp_path, kind):
    """A metadata parquet's uid column as pandas or pyarrow may write it: categorical (dictionary-encoded), large,
    binary, string view (pyarrow >= 16): the same uids as the plain string column (a categorical one was refused)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sfcomp.pool import read_uids

    hexes = [f"{i:032x}" for i in (3, 1, 2, 1)]
    col = pa.array(hexes)
    if kind == "dictionary":
        col = col.dictionary_encode()
    elif kind == "string_view":
        if not hasattr(pa, "string_view"):
            pytest.skip("pyarrow without string_view")
        col = col.cast(pa.string_view())
    else:
        col = col.cast(getattr(pa, kind)())
    pq.write_table(pa.table({"uid": col}), tmp_path / "m.parquet")
    assert np.array_equal(read_uids(str(tmp_path / "m.parquet")), U.hex_to_uids(hexes))
    assert np.array_equal(U.hex_to_uids(col), U.hex_to_uids(hexes))

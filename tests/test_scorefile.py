"""Score files: format, atomic writes, validation on read, per-rank merge, parquet export."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sfcomp.errors import BadInputError
from sfcomp.scorefile import (default_field, iter_score_chunks, merge_score_files, read_scores, score_dtype,
                              score_fields, scores_to_parquet, sidecar_path, write_scores)
from sfcomp.uids import UID_DTYPE, uids_to_hex


def make_uids(n: int, rng, f0_range: int = 2**64) -> np.ndarray:
    u = np.empty(n, UID_DTYPE)
    u["f0"] = rng.integers(0, f0_range, n, dtype=np.uint64)
    u["f1"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    return u


def one_line_naming(err: BadInputError, path) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(str(path))


def listing(d):
    return sorted(p.name for p in d.iterdir())


def test_roundtrip_sorted_by_uid_with_sidecar(tmp_path):
    rng = np.random.default_rng(0)
    u = make_uids(1000, rng, f0_range=50)  # many equal f0: order must fall back to f1
    cos = rng.normal(size=1000).astype(np.float32)
    cf = rng.normal(size=1000)
    p = tmp_path / "scores.npy"
    write_scores(p, u, {"cosine": cos, "crossfit": cf}, meta={"round": 2, "pool": "demo"}, default="crossfit")
    arr = read_scores(p)
    assert isinstance(arr, np.memmap)
    assert arr.dtype == score_dtype(["cosine", "crossfit"])
    order = np.lexsort((u["f1"], u["f0"]))
    assert (arr["f0"] == u["f0"][order]).all() and (arr["f1"] == u["f1"][order]).all()
    assert (arr["cosine"] == cos[order]).all()
    assert (arr["crossfit"] == cf[order].astype(np.float32)).all()
    assert score_fields(p) == ["cosine", "crossfit"]
    assert default_field(p) == "crossfit"
    side = json.loads(sidecar_path(p).read_text())
    assert side == {"format": "sfcomp-scores/1", "n": 1000, "fields": ["cosine", "crossfit"],
                    "default": "crossfit", "round": 2, "pool": "demo"}
    assert listing(tmp_path) == ["scores.npy", "scores.npy.json"]  # no temp files left
    # the first two fields are a DataComp subset dtype
    assert np.asarray(arr[["f0", "f1"]]).astype(UID_DTYPE).dtype == UID_DTYPE


def test_negative_zero_stored_as_zero(tmp_path):
    u = make_uids(2, np.random.default_rng(1))
    write_scores(tmp_path / "s.npy", u, {"s": np.array([-0.0, 1.0], np.float32)})
    assert not np.signbit(read_scores(tmp_path / "s.npy")["s"]).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_refused_nothing_written(tmp_path, bad):
    u = make_uids(10, np.random.default_rng(2))
    s = np.ones(10, np.float32)
    s[7] = bad
    p = tmp_path / "scores.npy"
    with pytest.raises(BadInputError, match="non-finite") as e:
        write_scores(p, u, {"cosine": s})
    one_line_naming(e.value, p)
    assert listing(tmp_path) == []


def test_duplicate_uids_refused_nothing_written(tmp_path):
    u = make_uids(10, np.random.default_rng(3))
    u[4] = u[8]
    p = tmp_path / "scores.npy"
    with pytest.raises(BadInputError, match="duplicate uid") as e:
        write_scores(p, u, {"cosine": np.zeros(10)})
    one_line_naming(e.value, p)
    assert listing(tmp_path) == []


def test_write_refuses_bad_names_and_lengths(tmp_path):
    u = make_uids(3, np.random.default_rng(4))
    for scores, match in [({"f0": np.zeros(3)}, "bad score field"), ({"a b": np.zeros(3)}, "bad score field"),
                          ({}, "no score fields"), ({"s": np.zeros(4)}, "shape")]:
        with pytest.raises(BadInputError, match=match):
            write_scores(tmp_path / "s.npy", u, scores)
    with pytest.raises(BadInputError, match="default"):
        write_scores(tmp_path / "s.npy", u, {"s": np.zeros(3)}, default="t")
    with pytest.raises(BadInputError, match="reserved"):
        write_scores(tmp_path / "s.npy", u, {"s": np.zeros(3)}, meta={"n": 5})
    assert listing(tmp_path) == []


def test_a_field_name_outside_latin1_reads_back_under_its_own_name(tmp_path, capfd):
    """A non-latin-1 field name (a valid identifier) makes numpy write .npy format 3.0, a utf-8 header: every reader
    gives the name as written (the header-only readers decoded it as latin-1, so sfcomp refused its own file), and
    writing prints no warning."""
    from click.testing import CliRunner

    from sfcomp.cli import main as cli
    from sfcomp.scorefile import score_info

    path = tmp_path / "s.npy"
    uids = make_uids(5, np.random.default_rng(0))
    write_scores(path, uids, {"分数": np.arange(5.0)})
    assert open(path, "rb").read(8) == b"\x93NUMPY\x03\x00" and capfd.readouterr().err == ""
    assert score_info(path)["fields"] == ["分数"] and read_scores(path).dtype.names[2:] == ("分数",)
    assert [c.dtype.names[2:] for c in iter_score_chunks(path, rows=2)] == [("分数",)] * 3
    r = CliRunner().invoke(cli, ["export-subset", "--scores", str(path), "--top-frac", "0.4", "-o",
                                 str(tmp_path / "sub.npy")])
    assert r.exit_code == 0 and r.output.strip().endswith("by 分数"), r.output


def test_overwrite_replaces_pair(tmp_path):
    rng = np.random.default_rng(5)
    p = tmp_path / "s.npy"
    write_scores(p, make_uids(5, rng), {"a": np.zeros(5)})
    write_scores(p, make_uids(7, rng), {"b": np.ones(7), "c": np.ones(7)}, default="c")
    assert score_fields(p) == ["b", "c"] and default_field(p) == "c" and len(read_scores(p)) == 7


@pytest.mark.parametrize("dtype", [UID_DTYPE, np.dtype([("f0", "<u8"), ("f1", "<u8"), ("s", "<f8")]),
                                   np.dtype([("f0", ">u8"), ("f1", ">u8"), ("s", "<f4")]), np.dtype("<f4")])
def test_wrong_dtype_is_one_line_error(tmp_path, dtype):
    p = tmp_path / "bad.npy"
    np.save(p, np.zeros(4, dtype))
    with pytest.raises(BadInputError, match="not a score file") as e:
        read_scores(p)
    one_line_naming(e.value, p)


@pytest.mark.parametrize("problem", ["unsorted", "duplicate", "nan"])
def test_hand_made_bad_file_detected_across_chunks(tmp_path, problem):
    rng = np.random.default_rng(6)
    u = np.sort(make_uids(10, rng))
    arr = np.zeros(10, score_dtype(["s"]))
    arr["f0"], arr["f1"] = u["f0"], u["f1"]
    if problem == "unsorted":
        arr[[5, 6]] = arr[[6, 5]]
    elif problem == "duplicate":
        arr[6] = arr[5]
    else:
        arr["s"][6] = np.nan
    p = tmp_path / "bad.npy"
    np.save(p, arr)
    match = {"unsorted": "not sorted", "duplicate": "duplicate uid", "nan": "non-finite"}[problem]
    with pytest.raises(BadInputError, match=match) as e:
        read_scores(p)
    one_line_naming(e.value, p)
    with pytest.raises(BadInputError, match=match):  # row 6 starts a chunk of 3: the check spans chunks
        list(iter_score_chunks(p, rows=3))


def test_truncated_and_missing_file(tmp_path):
    rng = np.random.default_rng(7)
    p = tmp_path / "s.npy"
    write_scores(p, make_uids(100, rng), {"s": np.zeros(100)})
    data = p.read_bytes()
    p.write_bytes(data[:-30])
    with pytest.raises(BadInputError, match="truncated"):
        read_scores(p)
    with pytest.raises(BadInputError, match="does not exist"):
        read_scores(tmp_path / "nope.npy")
    p.write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="not a .npy"):
        read_scores(p)


def test_sidecar_mismatch_and_missing_sidecar(tmp_path):
    rng = np.random.default_rng(8)
    p = tmp_path / "s.npy"
    write_scores(p, make_uids(5, rng), {"a": np.zeros(5), "b": np.zeros(5)}, default="b")
    side = json.loads(sidecar_path(p).read_text())
    sidecar_path(p).write_text(json.dumps({**side, "n": 6}))
    with pytest.raises(BadInputError, match="sidecar does not match"):
        read_scores(p)
    sidecar_path(p).write_text(json.dumps({**side, "n": "5"}))  # a string: the message shows it is one
    with pytest.raises(BadInputError, match=r"\(n='5' .* vs n=5 "):
        read_scores(p)
    sidecar_path(p).unlink()
    assert default_field(p) == "a"  # no sidecar: the first field
    assert len(read_scores(p)) == 5


def test_merge_per_rank_files_equals_single_write(tmp_path):
    rng = np.random.default_rng(9)
    n = 5000
    u = make_uids(n, rng)
    scores = {"cosine": rng.normal(size=n).astype(np.float32), "crossfit": rng.normal(size=n).astype(np.float32)}
    write_scores(tmp_path / "all.npy", u, scores, meta={"round": 1}, default="crossfit")
    parts = []
    for r, idx in enumerate(np.array_split(rng.permutation(n), 3)):  # ranks own interleaved uids
        p = tmp_path / f"rank{r}.npy"
        write_scores(p, u[idx], {k: v[idx] for k, v in scores.items()},
                     meta={"round": 1, "rank": r, "world_size": 3}, default="crossfit")
        parts.append(p)
    side = merge_score_files(parts, tmp_path / "merged.npy", chunk_rows=700)
    assert (tmp_path / "merged.npy").read_bytes() == (tmp_path / "all.npy").read_bytes()
    assert side == json.loads(sidecar_path(tmp_path / "all.npy").read_text())


def test_merge_refuses_duplicates_and_field_mismatch(tmp_path):
    rng = np.random.default_rng(10)
    u = make_uids(100, rng)
    write_scores(tmp_path / "a.npy", u[:60], {"s": np.zeros(60)})
    write_scores(tmp_path / "b.npy", u[50:], {"s": np.zeros(50)})
    out = tmp_path / "m.npy"
    with pytest.raises(BadInputError, match="also occurs") as e:
        merge_score_files([tmp_path / "a.npy", tmp_path / "b.npy"], out, chunk_rows=32)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(tmp_path / "b.npy")) and str(tmp_path / "a.npy") in msg
    assert listing(tmp_path) == ["a.npy", "a.npy.json", "b.npy", "b.npy.json"]  # no output, no temp files
    write_scores(tmp_path / "c.npy", u[60:], {"t": np.zeros(40)})
    with pytest.raises(BadInputError, match="fields"):
        merge_score_files([tmp_path / "a.npy", tmp_path / "c.npy"], out)
    assert not out.exists()


def test_scores_to_parquet_joins_by_hex_uid(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(11)
    u = make_uids(2500, rng)
    s = rng.normal(size=2500).astype(np.float32)
    p = tmp_path / "s.npy"
    write_scores(p, u, {"cosine": s}, meta={"round": 3})
    assert scores_to_parquet(p, tmp_path / "s.parquet", chunk_rows=1000) == 2500
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert list(df.columns) == ["uid", "cosine"] and df["cosine"].dtype == np.float32
    meta = pd.DataFrame({"uid": uids_to_hex(u), "expected": s})
    joined = meta.merge(df, on="uid")
    assert len(joined) == 2500 and (joined["expected"] == joined["cosine"]).all()
    assert df["uid"].is_monotonic_increasing

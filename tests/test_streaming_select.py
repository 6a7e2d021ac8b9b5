"""Streaming selection and export: the same uids (same bytes) as the in-memory path, bounded passes, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sfcomp.errors import BadInputError
from sfcomp.export import export_from_arrays, export_subset, sha256_file
from sfcomp.scorefile import write_scores
from sfcomp.select import make_mix
from sfcomp.streaming_select import stream_select
from sfcomp.uids import UID_DTYPE, check_subset, read_subset, write_subset


def make_pool(tmp_path, n, seed, parts=4, ties=0.1, f0_range=2**64, name="p"):
    rng = np.random.default_rng(seed)
    u = np.empty(n, UID_DTYPE)
    u["f0"] = rng.integers(0, f0_range, n, dtype=np.uint64)
    u["f1"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    s = (np.round(rng.normal(size=n) / ties) * ties if ties else np.zeros(n)).astype(np.float32)
    paths = []
    for j, idx in enumerate(np.array_split(rng.permutation(n), parts)):  # parts interleave in uid order
        p = tmp_path / f"{name}{j}.npy"
        write_scores(p, u[idx], {"cosine": s[idx], "other": -s[idx]})
        paths.append(p)
    return u, s, paths


RULES = [dict(top_frac=0.3), dict(top_frac=0.0001), dict(top_frac=1.0), dict(top_k=777, random_frac=0.2, seed=5),
         dict(top_k=1), dict(threshold=0.5, random_count=100, seed=2), dict(random_frac=0.5, seed=9),
         dict(top_frac=0.7, random_frac=0.5, seed=1), dict(top_k=0, random_count=50)]


@pytest.mark.parametrize("case", [
    dict(n=6000, seed=0, ties=0.1, budget=100),  # forces radix histogram passes
    dict(n=6000, seed=1, ties=0.0, budget=50, f0_range=3),  # all scores equal, colliding f0: digits run into uids
    dict(n=3000, seed=2, ties=1e-3, budget=1 << 23),  # everything fits: collect at once
])
def test_streaming_equals_in_memory(tmp_path, case):
    budget = case.pop("budget")
    u, s, paths = make_pool(tmp_path, **case)
    for rule in RULES:
        mix, info = make_mix(u, s, **rule)
        write_subset(tmp_path / "mem.npy", mix)
        got = stream_select(paths, tmp_path / "stream.npy", chunk_rows=500, budget_rows=budget, **rule)
        got.pop("passes")
        assert got == info, rule
        assert (tmp_path / "stream.npy").read_bytes() == (tmp_path / "mem.npy").read_bytes(), rule
    assert not list(tmp_path.glob(".tmp-*"))


def test_streaming_all_scores_tied_top_k(tmp_path):
    u, s, paths = make_pool(tmp_path, 4000, seed=3, ties=0.0)
    got = stream_select(paths, tmp_path / "o.npy", top_k=1000, chunk_rows=300, budget_rows=64)
    sel = read_subset(tmp_path / "o.npy")
    assert got["union"] == len(sel) == 1000
    assert (sel == np.sort(u)[:1000]).all()  # all tied: the 1000 smallest uids


def test_streaming_passes_are_few_on_a_typical_pool(tmp_path):
    _, _, paths = make_pool(tmp_path, 20_000, seed=4, ties=0.0001, parts=3)
    # 20k rows, budget 2k: one histogram pass resolves both rules' boundary bins, one collects, one selects
    kw = dict(top_frac=0.3, random_frac=0.1, chunk_rows=1000, budget_rows=2000)
    assert stream_select(paths, tmp_path / "o.npy", check_parts_disjoint=False, **kw)["passes"] == 3
    assert stream_select(paths, tmp_path / "o.npy", **kw)["passes"] == 4  # + the merge pass over all uids


def test_field_choice(tmp_path):
    u, s, paths = make_pool(tmp_path, 2000, seed=5)
    mix, _ = make_mix(u, -s, top_k=100)
    stream_select(paths, tmp_path / "o.npy", field="other", top_k=100)
    assert (read_subset(tmp_path / "o.npy") == mix).all()
    with pytest.raises(BadInputError, match="no score field 'nope'"):
        stream_select(paths, tmp_path / "o2.npy", field="nope", top_k=100)


def test_export_in_memory_and_streaming_same_bytes_and_sidecar(tmp_path):
    u, s, paths = make_pool(tmp_path, 5000, seed=6, parts=3)
    single = tmp_path / "all.npy"
    write_scores(single, u, {"cosine": s, "other": -s}, default="cosine")
    kw = dict(top_frac=0.3, random_frac=0.1, seed=3)
    a = export_subset(single, tmp_path / "a.npy", **kw)
    b = export_subset(single, tmp_path / "b.npy", streaming=True, **kw)
    c = export_subset(paths, tmp_path / "c.npy", **kw)  # several parts: streams automatically
    assert a["method"] == "in-memory" and b["method"] == c["method"] == "streaming"
    data = (tmp_path / "a.npy").read_bytes()
    assert (tmp_path / "b.npy").read_bytes() == data == (tmp_path / "c.npy").read_bytes()
    arr = read_subset(tmp_path / "a.npy")
    check_subset(tmp_path / "a.npy", arr)
    side = json.loads((tmp_path / "a.npy.json").read_text())
    assert side["inputs"] == [{"path": str(single), "n": 5000, "sha256": sha256_file(single), "default": "cosine"}]
    assert side["output_sha256"] == sha256_file(tmp_path / "a.npy")
    assert side["field"] == "cosine" and side["top_frac"] == 0.3 and side["random_frac"] == 0.1 and side["seed"] == 3
    assert side["counts"]["union"] == len(arr) and side["counts"]["random"] == 500
    assert {k: v for k, v in c["counts"].items() if k != "passes"} == a["counts"]


def test_bad_part_midway_leaves_nothing(tmp_path):
    u, s, paths = make_pool(tmp_path, 3000, seed=7, parts=3)
    arr = np.load(paths[2])
    arr["cosine"][17] = np.inf
    np.save(paths[2], arr)  # bypasses write_scores' check, as a foreign tool would
    out = tmp_path / "o.npy"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BadInputError, match="non-finite") as e:
        export_subset(paths, out, top_frac=0.3)
    assert str(e.value).startswith(str(paths[2])) and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bad_inputs_one_line_errors(tmp_path):
    u, s, paths = make_pool(tmp_path, 2000, seed=8, parts=2)
    out = tmp_path / "o.npy"
    cases = []
    # uid in two parts (per-rank files that overlap): found by the merge, named
    dup = tmp_path / "dup.npy"
    write_scores(dup, u[:5], {"cosine": np.full(5, 99.0), "other": np.zeros(5)})
    cases.append(([paths[0], paths[1], dup], dict(top_k=10), "also occurs", None))
    # wrong dtype
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros(3, np.dtype([("f0", "<u8"), ("f1", "<u8"), ("cosine", "<f8")])))
    cases.append(([wrong], dict(top_frac=0.3), "not a score file", wrong))
    # unsorted
    uns = tmp_path / "uns.npy"
    a = np.load(paths[0])
    a[[3, 4]] = a[[4, 3]]
    np.save(uns, a)
    cases.append(([uns, paths[1]], dict(top_frac=0.3), "not sorted", uns))
    # inf in a field that is not ranked: refused by both paths (streaming used to check the ranked field only)
    inf = tmp_path / "inf.npy"
    write_scores(inf, u[:50], {"cosine": np.linspace(0, 1, 50), "other": np.zeros(50)})
    a = np.load(inf)
    a["other"][7] = np.inf
    np.save(inf, a)
    cases.append(([inf], dict(top_frac=0.3, field="cosine"), "non-finite .* score 'other'", inf))
    # fractions outside (0, 1], parts larger than the pool
    cases.append((paths, dict(top_frac=1.5), r"\(0, 1\]", paths[0]))
    cases.append((paths, dict(top_frac=0.3, random_frac=-0.1), r"\(0, 1\]", paths[0]))
    cases.append((paths, dict(top_k=2001), "larger than the pool", paths[0]))
    cases.append((paths, dict(top_frac=0.5, random_count=2001), "larger than the pool", paths[0]))
    for inputs, kw, match, named in cases:
        for streaming in (True, False) if len(inputs) == 1 else (True,):
            with pytest.raises(BadInputError, match=match) as e:
                export_subset(inputs, out, streaming=streaming, **kw)
            msg = str(e.value)
            assert "\n" not in msg and (named is None or msg.startswith(str(named))), msg
            assert not out.exists() and not (tmp_path / "o.npy.json").exists()
            assert not list(tmp_path.glob(".tmp-*"))


def test_export_directory_of_parts_and_from_arrays(tmp_path):
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    u, s, paths = make_pool(parts_dir, 3000, seed=9, parts=3)
    side = export_subset(parts_dir, tmp_path / "d.npy", top_k=300, random_frac=0.1, seed=4, hash_inputs=False)
    assert [i["path"] for i in side["inputs"]] == [str(p) for p in paths]
    side2 = export_from_arrays(u, s, tmp_path / "e.npy", top_k=300, random_frac=0.1, seed=4, field="cosine")
    assert (tmp_path / "d.npy").read_bytes() == (tmp_path / "e.npy").read_bytes()
    assert side2["counts"] == {k: v for k, v in side["counts"].items() if k != "passes"}
    # round 0: a uniform sample of the pool, no scores yet
    side3 = export_from_arrays(u, None, tmp_path / "r0.npy", random_frac=0.25, seed=1)
    assert side3["counts"]["union"] == 750 and len(read_subset(tmp_path / "r0.npy")) == 750
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no \\*.npy score files"):
        export_subset(empty, tmp_path / "x.npy", top_frac=0.3)


def test_kill_9_midway_then_rerun_gives_identical_subset(tmp_path):
    import os
    import subprocess
    import sys
    import time

    u, s, paths = make_pool(tmp_path, 60_000, seed=10, parts=4)
    out_dir = tmp_path / "out"
    out = out_dir / "mix.npy"
    kw = dict(top_frac=0.3, random_frac=0.1, seed=2)
    mix, _ = make_mix(u, s, **kw)
    # small chunks make the run long enough to be killed inside its selection pass and inside its merge
    code = ("from sfcomp.streaming_select import stream_select; "
            f"stream_select({[str(p) for p in paths]!r}, {str(out)!r}, chunk_rows=256, **{kw!r})")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    def spill_dir():
        return [p for p in out_dir.glob(".tmp-mix.npy.parts.*") if p.is_dir()]
    def merge_tmp():
        return [p for p in out_dir.glob(".tmp-mix.npy.*") if p.is_file()]
    killed = 0
    for landed in (spill_dir, merge_tmp):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if out_dir.exists() and landed():
                proc.kill()
                killed += 1
                break
            time.sleep(0.001)
        proc.wait()
        assert not out.exists() or (read_subset(out) == mix).all()  # only ever a complete subset
    assert killed and list(out_dir.glob(".tmp-*"))  # a kill landed mid-way and left its temp files
    export_subset(paths, out, streaming=True, **kw)
    write_subset(tmp_path / "ref.npy", mix)
    assert out.read_bytes() == (tmp_path / "ref.npy").read_bytes()
    assert not list(out_dir.glob(".tmp-*"))  # the rerun cleared what the killed runs left

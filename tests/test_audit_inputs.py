"""Defects found by the input-protection audit: a folder a user names as an output that sfcomp (or img2dataset)
cleans up in by name, and an error exit that aborted after its one line.

- `--cache-dir` holding a user's files: the cache build overwrote `uids.npy` / `pixels.npy`, deleted every
  `parts/*.npz` / `parts/*.done` and every `.tmp-*` in it, and removed `parts/`.
- `download --out` holding a user's files: `clean_partial_shards` deleted every `*_stats.json` without its
  shard, and img2dataset removed `_tmp/` recursively.
- an error line for bad metadata read on the thread pool (`validate-subset --pool` with a malformed uid): about
  one exit in ten then aborted (`terminate called without an active exception`, exit 134).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import _e_harness as H
from sfcomp.cache import build_cache
from sfcomp.errors import BadInputError
from sfcomp.model import load_preset

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    pool = H.make_pool(root / "pool", n=120, seed=5, samples_per_shard=60)
    preset = H.write_micro_preset(root / "micro.json")
    return {"root": root, "pool": pool, "preset": preset}


def _users_folder(path: Path) -> Path:
    (path / "parts").mkdir(parents=True)
    (path / "uids.npy").write_text("my own uids\n")
    (path / "parts" / "holiday.npz").write_text("my photos\n")
    (path / ".tmp-notes.txt").write_text("notes\n")
    return path


def test_cache_dir_holding_a_users_files_is_refused_and_nothing_in_it_changes(base, tmp_path):
    cache = _users_folder(tmp_path / "mine")
    before = H.tree_digest(cache)
    work = tmp_path / "work"
    r = H.cli("round", "--pool", base["pool"], "--workdir", work, "--preset", base["preset"], "--cache-dir", cache,
              "--steps", "1", "--threads", "1", "--quiet")
    H.assert_one_line_error(r, cache, "cache folder holds 3 entries not made by the cache build (e.g. .tmp-notes.txt)",
                            "refusing to write into it")
    assert H.tree_digest(cache) == before
    assert sorted(p.name for p in cache.iterdir()) == [".tmp-notes.txt", "parts", "uids.npy"]
    assert not work.exists()


def test_cache_dir_a_build_killed_before_its_pool_json_left_is_still_built(base, tmp_path):
    cache = tmp_path / "cache"
    (cache / "parts").mkdir(parents=True)
    (cache / ".build.lock").write_bytes(b"")
    (cache / ".tmp-pool.json.k1ll3d").write_bytes(b"{")
    c = build_cache(base["pool"], load_preset(str(base["preset"])), cache, progress=False)
    assert c.manifest["rows"] > 0 and not (cache / ".tmp-pool.json.k1ll3d").exists()


def test_library_cache_build_refuses_a_users_folder(base, tmp_path):
    cache = _users_folder(tmp_path / "mine")
    with pytest.raises(BadInputError, match="not made by the cache build"):
        build_cache(base["pool"], load_preset(str(base["preset"])), cache, progress=False)
    assert (cache / "parts" / "holiday.npz").read_text() == "my photos\n"


def test_download_into_a_users_folder_is_refused_and_nothing_in_it_changes(tmp_path):
    urls = tmp_path / "urls.parquet"
    pq.write_table(pa.table({"url": ["http://127.0.0.1:1/a.jpg"], "text": ["a"], "uid": ["0" * 32]}), urls)
    out = tmp_path / "results"
    (out / "_tmp").mkdir(parents=True)
    (out / "_tmp" / "precious.txt").write_text("keep\n")
    (out / "run1_stats.json").write_text('{"loss": 1}\n')
    before = H.tree_digest(out)
    r = H.cli("download", urls, "--out", out, "--processes", "1", "--threads", "1", "--timeout", "1")
    H.assert_one_line_error(r, out, "--out holds 2 entries not made by img2dataset (e.g. _tmp)",
                            "refusing to write into it")
    assert H.tree_digest(out) == before


def test_bad_metadata_error_exits_2_every_time(base, tmp_path):
    """A subprocess each time: the abort happened at interpreter exit, after the error line."""
    import shutil

    pool = tmp_path / "pool"
    shutil.copytree(base["pool"], pool)
    meta = sorted((pool / "metadata").glob("*.parquet"))[0]
    t = pq.read_table(meta)
    uids = t.column("uid").to_pylist()
    uids[2] = "xyz"
    pq.write_table(t.set_column(0, "uid", pa.array(uids)), meta)
    subset = tmp_path / "sub.npy"
    from sfcomp import uids as U

    U.write_subset(subset, U.hex_to_uids([u for u in uids if len(u) == 32][:5]))
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    codes, lines = [], set()
    for _ in range(25):
        p = subprocess.run([sys.executable, "-m", "sfcomp", "validate-subset", str(subset), "--pool", str(pool)],
                           capture_output=True, text=True, env=env, timeout=120)
        codes.append(p.returncode)
        lines.add(tuple(p.stderr.splitlines()))
    assert codes == [2] * 25
    assert lines == {(f"error: {meta}: malformed uid at row 2: 'xyz' is not 32 hex characters",)}


def test_workdir_holding_a_users_files_is_refused_and_nothing_in_it_changes(base, tmp_path):
    """A run replaces W/final_scores.npy and removes W/.tmp-* files: a folder that is not a workdir is refused."""
    work = tmp_path / "results"
    work.mkdir()
    (work / "final_scores.npy").write_text("my scores\n")
    (work / ".tmp-draft.txt").write_text("draft\n")
    before = H.tree_digest(work)
    r = H.cli("round", "--pool", base["pool"], "--workdir", work, "--preset", base["preset"], "--steps", "1",
              "--threads", "1", "--quiet")
    H.assert_one_line_error(r, work, "--workdir holds 2 entries not made by sfcomp run (e.g. .tmp-draft.txt)",
                            "refusing to write into it")
    assert H.tree_digest(work) == before


def test_make_pool_into_a_users_folder_is_refused_and_nothing_in_it_changes(tmp_path):
    """A build writes truth.parquet, eval/, reference/ over what is there and removes _work/ at its end."""
    out = tmp_path / "mine"
    (out / "_work").mkdir(parents=True)
    (out / "_work" / "thesis.tex").write_text("chapter 1\n")
    (out / "truth.parquet").write_text("not a parquet\n")
    before = H.tree_digest(out)
    r = H.cli("make-pool", "--out", out, "--size", "50", "--direct", "--quiet")
    H.assert_one_line_error(r, out, "--out holds 2 entries not made by make-pool (e.g. _work)",
                            "refusing to write into it")
    assert H.tree_digest(out) == before


@pytest.fixture()
def scores(base, tmp_path):
    import glob

    import numpy as np

    from sfcomp import uids as U
    from sfcomp.scorefile import write_scores

    hexes = sorted(u for f in sorted(glob.glob(str(base["pool"] / "metadata" / "*.parquet")))
                   for u in pq.read_table(f, columns=["uid"]).column("uid").to_pylist())
    path = tmp_path / "s.npy"
    write_scores(path, U.hex_to_uids(hexes), {"cosine": np.linspace(0, 1, len(hexes)).astype(np.float32)})
    return path


def test_export_onto_a_pool_shard_is_refused_and_the_shard_is_unchanged(base, scores, tmp_path):
    """A shard is not an input of export-subset, but it is not a subset either: never replaced."""
    import shutil

    pool = tmp_path / "pool"
    shutil.copytree(base["pool"], pool)
    shard = sorted((pool / "shards").glob("*.tar"))[0]
    before = H.tree_digest(pool)
    r = H.cli("export-subset", "--scores", scores, "--top-frac", "0.3", "-o", shard)
    H.assert_one_line_error(r, shard, "names an existing file that is not a DataComp subset", "refusing to replace")
    assert H.tree_digest(pool) == before


def test_export_replaces_its_own_earlier_subset(scores, tmp_path):
    from sfcomp import uids as U

    out = tmp_path / "s30.npy"
    assert H.cli("export-subset", "--scores", scores, "--top-frac", "0.5", "-o", out)[0] == 0
    half = len(U.read_subset(out))
    code, _, err = H.cli("export-subset", "--scores", scores, "--top-frac", "0.25", "-o", out)
    assert (code, err) == (0, "")
    assert len(U.read_subset(out)) < half  # replaced by the 25% export


def test_export_whose_sidecar_path_is_a_users_file_is_refused(scores, tmp_path):
    out = tmp_path / "notes"
    (tmp_path / "notes.json").write_text("not json, my notes\n")
    r = H.cli("export-subset", "--scores", scores, "--top-frac", "0.3", "-o", out)
    H.assert_one_line_error(r, tmp_path / "notes.json", "not a JSON sidecar", "refusing to replace")
    assert not out.exists() and (tmp_path / "notes.json").read_text() == "not json, my notes\n"


def test_baseline_onto_a_users_other_npy_is_refused(base, tmp_path):
    import numpy as np

    target = tmp_path / "embeddings.npy"
    np.save(target, np.ones((4, 8), np.float32))
    before = target.read_bytes()
    r = H.cli("baseline", "no_filter", "--metadata-dir", base["pool"] / "metadata", "--save-path", target,
              "--num-workers", "1")
    H.assert_one_line_error(r, target, "--save-path names an existing file that is not a DataComp subset")
    assert target.read_bytes() == before


def test_scores_to_parquet_replaces_only_its_own_parquet(scores, tmp_path):
    foreign = tmp_path / "truth.parquet"
    pq.write_table(pa.table({"uid": ["0" * 32], "clean": [True]}), foreign)
    before = foreign.read_bytes()
    r = H.cli("scores-to-parquet", scores, foreign)
    H.assert_one_line_error(r, foreign, "not a parquet written by scores-to-parquet", "refusing to replace")
    assert foreign.read_bytes() == before
    own = tmp_path / "s.parquet"
    assert H.cli("scores-to-parquet", scores, own)[0] == 0
    assert H.cli("scores-to-parquet", scores, own)[0] == 0
    assert pq.read_table(own).num_rows == 120

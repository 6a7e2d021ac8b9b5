"""Nothing a user types may destroy their data (issue 11: items 1, 2, 3, the output-path parts of 11, reshard's
part of 12). Every command that writes refuses an output that is, contains or lies inside one of its inputs
(sfcomp.guard), with one line and exit 2, and leaves every input byte and file name as it was.

One pool for the module; a test that points a command at the pool itself works on a copy of it.
"""
from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import _e_harness as H
from sfcomp import uids as U
from sfcomp.scorefile import write_scores

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("protect")
    pool = H.make_pool(root / "pool", n=120, seed=5, samples_per_shard=60)
    hexes = sorted(u for f in sorted(glob.glob(str(pool / "metadata" / "*.parquet")))
                   for u in pq.read_table(f, columns=["uid"]).column("uid").to_pylist())
    uids = U.hex_to_uids(hexes)
    subset = root / "sub.npy"
    U.write_subset(subset, uids[::2])
    scores = root / "s.npy"
    write_scores(scores, uids, {"cosine": np.linspace(0, 1, len(uids)).astype(np.float32)})
    rng = np.random.default_rng(0)
    foreign = root / "foreign.npy"  # a subset of another pool: none of its uids is in this one
    U.write_subset(foreign, U.hex_to_uids(sorted(rng.bytes(16).hex() for _ in range(115))))
    return {"root": root, "pool": pool, "subset": subset, "scores": scores, "foreign": foreign}


def _copy_pool(base, tmp_path) -> Path:
    dst = tmp_path / "pool"
    shutil.copytree(base["pool"], dst)
    return dst


class Unchanged:
    """Digests of input paths taken now; `check()` asserts no byte and no file name changed."""

    def __init__(self, *paths: Path):
        self.paths = paths
        self.before = {str(p): H.tree_digest(p) for p in paths}

    def check(self) -> None:
        for p in self.paths:
            assert H.tree_digest(p) == self.before[str(p)], f"{p} changed"


# ------------------------------------------------------------------------------------------ item 1
def test_item1_reshard_overwrite_onto_the_pool_folder(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool, base["subset"])
    r = H.cli("reshard", "-i", pool / "shards", "-s", base["subset"], "-o", pool, "--overwrite")
    H.assert_one_line_error(r, pool, "contains the input", "shards")
    keep.check()


# ------------------------------------------------------------------------------------------ item 2
@pytest.mark.parametrize("via", ["shards", "pool"])
def test_item2_reshard_into_the_input_shards(base, tmp_path, via):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool, base["subset"])
    src = pool / "shards" if via == "shards" else pool
    r = H.cli("reshard", "-i", src, "-s", base["subset"], "-o", pool / "shards")
    H.assert_one_line_error(r, pool / "shards", "is an input")
    keep.check()


def test_item2_reshard_into_the_pool_metadata(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool, base["subset"])
    r = H.cli("reshard", "-i", pool / "shards", "-s", base["subset"], "-o", pool / "metadata", "--overwrite")
    H.assert_one_line_error(r, pool / "metadata", "is an input")
    keep.check()


def test_item2_reshard_into_the_subsets_folder(base, tmp_path):
    sub = tmp_path / "sub.npy"
    shutil.copyfile(base["subset"], sub)
    keep = Unchanged(base["pool"], tmp_path)
    r = H.cli("reshard", "-i", base["pool"], "-s", sub, "-o", tmp_path, "--overwrite")
    H.assert_one_line_error(r, tmp_path, "contains the input", "sub.npy")
    keep.check()


def test_item2_reshard_through_a_symlink_to_the_pool(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    (tmp_path / "alias").symlink_to(pool)
    keep = Unchanged(pool, base["subset"])
    r = H.cli("reshard", "-i", pool, "-s", base["subset"], "-o", tmp_path / "alias" / "shards")
    H.assert_one_line_error(r, tmp_path / "alias" / "shards", "is an input")
    keep.check()


# ------------------------------------------------------------------------------------------ item 3
def _scores_copy(base, tmp_path) -> Path:
    s = tmp_path / "s.npy"
    shutil.copyfile(base["scores"], s)
    shutil.copyfile(f"{base['scores']}.json", f"{s}.json")
    return s


@pytest.mark.parametrize("variant", ["in-memory", "streaming", "sidecar"])
def test_item3_export_onto_its_score_file(base, tmp_path, variant):
    s = _scores_copy(base, tmp_path)
    keep = Unchanged(tmp_path)
    out = Path(f"{s}.json") if variant == "sidecar" else s
    mode = "--streaming" if variant == "streaming" else "--in-memory"
    r = H.cli("export-subset", "--scores", s, "--top-frac", "0.5", mode, "-o", out)
    H.assert_one_line_error(r, out, "is an input")
    keep.check()


@pytest.mark.parametrize("target", ["s.npy", "s.npy.json"])
def test_item3_scores_to_parquet_onto_its_score_file(base, tmp_path, target):
    s = _scores_copy(base, tmp_path)
    keep = Unchanged(tmp_path)
    r = H.cli("scores-to-parquet", s, tmp_path / target)
    H.assert_one_line_error(r, tmp_path / target, "is an input")
    keep.check()


def test_item3_export_whose_sidecar_would_overwrite_an_input(base, tmp_path):
    # -o X where X.json is the score file: the subset's own sidecar would overwrite it
    s = tmp_path / "t.json"
    shutil.copyfile(base["scores"], s)
    keep = Unchanged(tmp_path)
    r = H.cli("export-subset", "--scores", s, "--top-frac", "0.5", "-o", tmp_path / "t")
    H.assert_one_line_error(r, s, "is an input")
    keep.check()


# ------------------------------------------------------------------------------------------ item 11: output paths
def test_baseline_save_path_that_is_a_folder(base, tmp_path):
    (tmp_path / "out.npy").mkdir()
    keep = Unchanged(base["pool"])
    r = H.cli("baseline", "no_filter", "--metadata-dir", base["pool"] / "metadata", "--save-path",
              tmp_path / "out.npy", "--num-workers", "1")
    H.assert_one_line_error(r, tmp_path / "out.npy", "is an existing folder")
    keep.check()


def test_baseline_save_path_under_a_file(base, tmp_path):
    (tmp_path / "file").write_text("x")
    keep = Unchanged(base["pool"], tmp_path)
    r = H.cli("baseline", "no_filter", "--metadata-dir", base["pool"] / "metadata", "--save-path",
              tmp_path / "file" / "out.npy", "--num-workers", "1")
    H.assert_one_line_error(r, tmp_path / "file" / "out.npy", "lies under", "which is a file")
    keep.check()


def test_baseline_save_path_inside_the_metadata(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool)
    out = pool / "metadata" / "out.npy"
    r = H.cli("baseline", "no_filter", "--metadata-dir", pool / "metadata", "--save-path", out, "--num-workers", "1")
    H.assert_one_line_error(r, out, "lies inside the input")
    keep.check()


@pytest.mark.parametrize("command", ["export-subset", "scores-to-parquet", "reshard"])
def test_output_under_an_existing_file(base, tmp_path, command):
    s = _scores_copy(base, tmp_path)
    (tmp_path / "file").write_text("x")
    keep = Unchanged(tmp_path, base["pool"])
    out = tmp_path / "file" / "out.npy"
    args = {"export-subset": ["export-subset", "--scores", s, "--top-frac", "0.5", "-o", out],
            "scores-to-parquet": ["scores-to-parquet", s, out],
            "reshard": ["reshard", "-i", base["pool"], "-s", base["subset"], "-o", out]}[command]
    H.assert_one_line_error(H.cli(*args), out, "lies under", "which is a file")
    keep.check()


@pytest.mark.parametrize("command", ["export-subset", "scores-to-parquet"])
def test_file_output_onto_an_existing_folder(base, tmp_path, command):
    s = _scores_copy(base, tmp_path)
    out = tmp_path / "out.npy"
    out.mkdir()
    keep = Unchanged(tmp_path)
    args = {"export-subset": ["export-subset", "--scores", s, "--top-frac", "0.5", "-o", out],
            "scores-to-parquet": ["scores-to-parquet", s, out]}[command]
    H.assert_one_line_error(H.cli(*args), out, "is an existing folder")
    keep.check()


def test_reshard_output_onto_an_existing_file(base, tmp_path):
    out = tmp_path / "out"
    out.write_text("my file")
    keep = Unchanged(tmp_path, base["pool"])
    r = H.cli("reshard", "-i", base["pool"], "-s", base["subset"], "-o", out)
    H.assert_one_line_error(r, out, "is an existing file")
    keep.check()


# ------------------------------------------------------------------------------------------ reshard --overwrite
@pytest.mark.parametrize("flag", ["--overwrite", None])
def test_reshard_into_a_foreign_folder(base, tmp_path, flag):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "00000000.tar").write_bytes(b"my own tar")
    keep = Unchanged(out, base["pool"])
    r = H.cli("reshard", "-i", base["pool"], "-s", base["subset"], "-o", out, *([flag] if flag else []))
    H.assert_one_line_error(r, out, "not made by sfcomp reshard")
    keep.check()


def test_reshard_overwrite_removes_only_its_own_files(base, tmp_path):
    out = tmp_path / "out"
    assert H.cli("reshard", "-i", base["pool"], "-s", base["subset"], "-o", out)[0] == 0
    written = len(H.all_files(out))  # shards, their stats, sample_ids.npy, meta.json
    (out / "notes.txt").write_text("kept")
    other = tmp_path / "other.npy"
    U.write_subset(other, U.read_subset(base["subset"])[:5])
    code, stdout, err = H.cli("reshard", "-i", base["pool"], "-s", other, "-o", out, "--overwrite")
    assert (code, (out / "notes.txt").read_text(), f"removed {written} files from {out}" in err) \
        == (0, "kept", True), err


@pytest.mark.parametrize("garbage", ["not json {", "[1, 2]"])
def test_reshard_garbage_meta_json(base, tmp_path, garbage):
    out = tmp_path / "out"
    out.mkdir()
    (out / "meta.json").write_text(garbage)
    keep = Unchanged(out, base["pool"])
    r = H.cli("reshard", "-i", base["pool"], "-s", base["subset"], "-o", out, "--overwrite")
    H.assert_one_line_error(r, out / "meta.json", "not a meta.json written by sfcomp reshard")
    keep.check()


# ------------------------------------------------------------------------------------------ item 12 (reshard)
def test_reshard_subset_from_another_pool(base, tmp_path):
    keep = Unchanged(base["pool"], base["foreign"])
    r = H.cli("reshard", "-i", base["pool"], "-s", base["foreign"], "-o", tmp_path / "out")
    H.assert_one_line_error(r, base["foreign"], "none of the subset's 115 uids is in the input shards")
    assert not (tmp_path / "out").exists()
    keep.check()


# ------------------------------------------------------------------------------------------ other writers
def test_compare_md_onto_its_results(base, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.jsonl").write_text(json.dumps({"key": "x", "dataset": "x", "metrics": {}}) + "\n")
    keep = Unchanged(run)
    r = H.cli("compare", run, "--md", run / "eval_results.jsonl")
    H.assert_one_line_error(r, run / "eval_results.jsonl", "is an input")
    keep.check()


def test_evaluate_out_inside_the_eval_sets(base, tmp_path):
    evals = tmp_path / "eval"
    (evals / "task").mkdir(parents=True)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    keep = Unchanged(evals, ckpt)
    r = H.cli("evaluate", "--checkpoint", ckpt, "--model", "ViT-B-32", "--eval", evals, "--out", evals / "task")
    H.assert_one_line_error(r, evals / "task" / "eval_results.jsonl", "lies inside the input")
    keep.check()


def test_train_eval_out_is_the_pool(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool)
    r = H.cli("train-eval", "--subset", base["subset"], "--pool", pool, "--eval", pool / "eval",
              "--out", pool / "shards")
    H.assert_one_line_error(r, pool / "shards" / "run.json", "lies inside the input")
    keep.check()


def test_download_out_is_its_url_folder(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool)
    r = H.cli("download", pool / "metadata", "--out", pool / "metadata")
    H.assert_one_line_error(r, pool / "metadata", "contains the input")
    keep.check()


def test_make_pool_out_inside_the_source_dataset(base, tmp_path, monkeypatch):
    src = tmp_path / "fmnist"
    src.mkdir()
    for f in sorted(glob.glob("/usr/share/datasets/fashion-mnist/*.gz")):
        (src / Path(f).name).symlink_to(f)
    monkeypatch.setenv("SFCOMP_FASHION_MNIST_DIR", str(src))
    keep = Unchanged(src)
    r = H.cli("make-pool", "--out", src / "pool", "--size", "50", "--quiet")
    H.assert_one_line_error(r, src / "pool", "lies inside the input")
    keep.check()


@pytest.mark.parametrize("where", ["pool", "shards", "metadata"])
def test_loop_workdir_on_the_pool(base, tmp_path, where):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool)
    workdir = {"pool": pool, "shards": pool / "shards" / "w", "metadata": pool / "metadata" / "w"}[where]
    preset = H.write_micro_preset(tmp_path / "micro.json")
    r = H.cli("round", "--pool", pool, "--workdir", workdir, "--preset", preset, "--steps", "1", "--threads", "1",
              "--quiet")
    H.assert_one_line_error(r, workdir, "--workdir")
    keep.check()


def test_loop_cache_dir_in_the_shards(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool)
    preset = H.write_micro_preset(tmp_path / "micro.json")
    r = H.cli("round", "--pool", pool, "--workdir", tmp_path / "w", "--preset", preset, "--cache-dir",
              pool / "shards" / "cache", "--steps", "1", "--threads", "1", "--quiet")
    H.assert_one_line_error(r, pool / "shards" / "cache", "--cache-dir lies inside the input")
    assert not (tmp_path / "w").exists()
    keep.check()


def test_loop_workdir_inside_the_pool_with_the_default_cache_runs(base, tmp_path):
    # POOL/work and the default cache POOL/.sfcomp-cache are outside metadata/ and shards/: allowed
    pool = _copy_pool(base, tmp_path)
    keep = Unchanged(pool / "metadata", pool / "shards", pool / "truth.parquet")
    preset = H.write_micro_preset(tmp_path / "micro.json")
    code, out, err = H.cli("round", "--pool", pool, "--workdir", pool / "work", "--preset", preset, "--steps", "1",
                           "--threads", "1", "--quiet")
    assert (code, (pool / "work" / "round_00" / "done.json").exists(), (pool / ".sfcomp-cache").is_dir()) \
        == (0, True, True), err
    keep.check()


@pytest.fixture(scope="module")
def finished_round0(base, tmp_path_factory):
    """A workdir with round 0 finished (a --round0-from source) and the cache it was built with."""
    root = tmp_path_factory.mktemp("round0")
    preset = H.write_micro_preset(root / "micro.json")
    code, _, err = H.cli("round", "--pool", base["pool"], "--workdir", root / "w0", "--preset", preset,
                         "--cache-dir", root / "cache", "--steps", "1", "--threads", "1", "--quiet")
    assert code == 0, err
    return {"w0": root / "w0", "cache": root / "cache", "preset": preset}


@pytest.mark.parametrize("where,fragment", [
    ("w0", "--workdir is an input of this command"), ("w0/sub", "--workdir lies inside the input"),
    ("cache", "--workdir is the --cache-dir"), ("cache/w", "--workdir lies inside the --cache-dir"),
])
def test_loop_workdir_inside_the_round0_source_or_the_cache_is_refused(base, finished_round0, tmp_path, where,
                                                                       fragment):
    # found by an audit (2026-12-04): both were accepted (only the pool's parts were checked)
    w0, cache = finished_round0["w0"], finished_round0["cache"]
    workdir = {"w0": w0, "w0/sub": w0 / "sub", "cache": cache, "cache/w": cache / "w"}[where]
    keep = Unchanged(w0, cache)
    r = H.cli("run", "--pool", base["pool"], "--workdir", workdir, "--preset", finished_round0["preset"],
              "--cache-dir", cache, "--round0-from", w0, "--rounds", "2", "--steps", "1", "--threads", "1", "--quiet")
    H.assert_one_line_error(r, workdir, fragment)
    keep.check()


def test_loop_workdir_inside_the_default_cache_is_refused(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    workdir = pool / ".sfcomp-cache" / "w"
    r = H.cli("round", "--pool", pool, "--workdir", workdir, "--preset", H.write_micro_preset(tmp_path / "m.json"),
              "--steps", "1", "--threads", "1", "--quiet")
    H.assert_one_line_error(r, workdir, f"--workdir lies inside the cache folder {pool / '.sfcomp-cache'}")
    assert not (pool / ".sfcomp-cache").exists()


def test_loop_cache_inside_the_workdir_and_round0_from_a_sibling_run(base, finished_round0, tmp_path):
    # the layouts that stay allowed: W/cache, and --round0-from another workdir
    w = tmp_path / "w"
    code, _, err = H.cli("run", "--pool", base["pool"], "--workdir", w, "--preset", finished_round0["preset"],
                         "--cache-dir", w / "cache", "--round0-from", finished_round0["w0"], "--rounds", "1",
                         "--steps", "1", "--threads", "1", "--quiet")
    assert code == 0, err
    assert (w / "round_00" / "done.json").exists() and (w / "cache" / "manifest.json").exists()


def test_export_into_its_score_folder(base, tmp_path):
    # a folder of score files is accepted by the library (the CLI takes files): an output inside it is refused
    from sfcomp.errors import BadInputError
    from sfcomp.export import export_subset

    folder = tmp_path / "scores"
    folder.mkdir()
    _scores_copy(base, folder)
    keep = Unchanged(folder)
    with pytest.raises(BadInputError, match="lies inside the input"):
        export_subset(folder, folder / "out.npy", top_frac=0.5)
    keep.check()


def test_read_only_output_folder(base, tmp_path, monkeypatch):
    # tests run as root, which writes through permission bits: the folder is made to read as not writable
    import os

    s = _scores_copy(base, tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == str(ro)
                        else real_access(p, mode, **kw))
    keep = Unchanged(tmp_path)
    r = H.cli("export-subset", "--scores", s, "--top-frac", "0.5", "-o", ro / "out.npy")
    H.assert_one_line_error(r, ro / "out.npy", "is not writable")
    keep.check()

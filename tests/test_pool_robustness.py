"""A pool's bad samples and odd files never stop a round (issue 11 items 7-10, 12): a caption that is not UTF-8,
a caption of a megabyte, a disk that fills during cache consolidation, a symlink loop / dangling symlink / folder
named `*.tar` among the shards, a sample without its .json, a pool path holding `::`, a copied pool's cache.

Every pool here is a copy of one tiny pool (120 rows, 2 shards of 60), edited with tarfile. Table of results:
docs/RELIABILITY.md.
"""
from __future__ import annotations

import errno
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

import _e_harness as H

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    pool = H.make_pool(root / "pool", n=120, seed=21, samples_per_shard=60)
    preset = H.write_micro_preset(root / "micro.json")
    streamed = root / "micro-streamed.json"
    streamed.write_text(json.dumps({**H.MICRO_PRESET, "name": "micro-streamed", "cache": False}))
    return {"root": root, "pool": pool, "preset": preset, "streamed": streamed}


@pytest.fixture(autouse=True)
def _no_shared_cache(monkeypatch):
    monkeypatch.delenv("SFCOMP_CACHE_DIR", raising=False)


def _copy_pool(base, dst: Path) -> Path:
    shutil.copytree(base["pool"], dst, symlinks=True)
    return dst


def _round(base, pool: Path, tmp_path: Path, *extra, preset: str = "preset", cache: bool = True):
    args = ["round", "--pool", pool, "--workdir", tmp_path / "work", "--preset", base[preset], "--steps", "1",
            "--folds", "2", "--threads", "1", "--quiet", *extra]
    if cache:
        args += ["--cache-dir", tmp_path / "cache"]
    return H.cli(*args)


def _report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "work" / "round_00" / "report.json").read_text())


def _edit_tar(tar: Path, edit) -> None:
    """Rewrite `tar` member by member; `edit(name, data)` returns the new bytes, or None to drop the member."""
    with tarfile.open(tar) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, data in members:
            data = edit(m.name, data)
            if data is None:
                continue
            m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    tar.write_bytes(buf.getvalue())


def _first_key(tar: Path) -> str:
    with tarfile.open(tar) as tf:
        return tf.getnames()[0].split(".")[0]


# ------------------------------------------------------------------------------------------ item 7
@pytest.mark.parametrize("mode", ["cached", "streamed"])
def test_caption_that_is_not_utf8_is_replaced_and_counted(base, tmp_path, mode):
    pool = _copy_pool(base, tmp_path / "pool")
    tar = pool / "shards" / "00000000.tar"
    key = _first_key(tar)
    _edit_tar(tar, lambda name, data: b"a photo of a \xff\xfe dress \xc3" if name == f"{key}.txt" else data)
    r = _round(base, pool, tmp_path, preset="preset" if mode == "cached" else "streamed", cache=mode == "cached")
    assert r[0] == 0, r
    assert _report(tmp_path)["shard_errors"]["captions_not_utf8"] == 1


# ------------------------------------------------------------------------------------------ item 8
def test_normal_caption_tokens_are_unchanged():
    from open_clip.tokenizer import SimpleTokenizer

    from sfcomp.text import tokenize_captions

    texts = ["a photo of a dress", "cheap sandal free shipping " * 12, "日本語のキャプション " * 20, ""]
    want = SimpleTokenizer(context_length=77)(texts).numpy().astype(np.int32)
    assert np.array_equal(tokenize_captions(texts, 77), want)


def test_million_char_caption_tokenises_like_its_prefix():
    from open_clip.tokenizer import SimpleTokenizer

    from sfcomp.text import tokenize_captions

    # BPE of one 1,000,000-letter word alone is quadratic (hours); the first 14 tokens come from its start
    word = np.random.default_rng(0).integers(97, 123, 1_000_000).astype(np.uint8).tobytes().decode()
    words = "my favourite ankle boot " * 3
    texts = [words + " " * 50_000 + "bag " * 200 + word, "x" * 1_000_000, word]
    prefixes = [words + "bag " * 20, "x" * 200, word[:200]]
    want = SimpleTokenizer(context_length=16)(prefixes).numpy().astype(np.int32)
    assert np.array_equal(tokenize_captions(texts, 16), want)


# ------------------------------------------------------------------------------------------ item 9
FSIZE_LIMIT = 256 * 1024  # above one shard's part (~170 kB), below the consolidated pixels.npy (~330 kB)


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG, like ENOSPC


@pytest.fixture(scope="module")
def disk_full(base):
    """A round run by the real `sfcomp` binary under RLIMIT_FSIZE: the cache's parts fit, its pixels.npy not."""
    root = base["root"] / "diskfull"
    pool = _copy_pool(base, root / "pool")
    cache = root / "cache"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SFCOMP_CACHE_DIR", None)
    p = subprocess.run([*H.SFCOMP_CMD, "round", "--pool", str(pool), "--workdir", str(root / "work"),
                        "--preset", str(base["preset"]), "--cache-dir", str(cache), "--steps", "1", "--threads",
                        "1", "--quiet"], check=False, env=env, preexec_fn=_limit_file_size, capture_output=True,
                       text=True, timeout=600)
    return {"pool": pool, "cache": cache, "result": (p.returncode, p.stdout, p.stderr),
            "temps": H.stray_files(cache)}


def test_disk_full_during_cache_consolidation_is_one_line(disk_full):
    H.assert_one_line_error(disk_full["result"], disk_full["cache"], "disk full while writing the cache",
                            os.strerror(errno.EFBIG))


def test_disk_full_during_cache_consolidation_leaves_no_temp_file(disk_full):
    assert disk_full["temps"] == []


def test_rerun_after_disk_full_resumes_to_the_same_cache(base, disk_full, tmp_path):
    from sfcomp.cache import build_cache
    from sfcomp.model import load_preset

    preset = load_preset(str(base["preset"]))
    assert disk_full["result"][0] == 2, disk_full["result"]
    got = build_cache(str(disk_full["pool"]), preset, disk_full["cache"], progress=False)
    want = build_cache(str(base["pool"]), preset, tmp_path / "ref-cache", progress=False)
    names = ("uids.npy", "pixels.npy", "tokens.npy", "shard.npy")
    assert [(got.root / n).read_bytes() for n in names] == [(want.root / n).read_bytes() for n in names]


# ------------------------------------------------------------------------------------------ item 10
def _bad_entry(shards: Path, kind: str) -> None:
    if kind == "symlink-loop":
        os.symlink("00000007.tar", shards / "00000007.tar")
    elif kind == "dangling-symlink":
        os.symlink(shards / "nowhere.tar", shards / "00000007.tar")
    else:
        (shards / "00000007.tar").mkdir()


@pytest.mark.parametrize("kind", ["symlink-loop", "dangling-symlink", "folder"])
def test_unreadable_entry_in_shards_is_a_missing_shard(base, tmp_path, kind):
    pool = _copy_pool(base, tmp_path / "pool")
    _bad_entry(pool / "shards", kind)
    r = _round(base, pool, tmp_path)
    assert r[0] == 0, r
    assert _report(tmp_path)["shard_errors"]["missing_shards"] == 1


def test_unreadable_entry_in_shards_is_a_missing_shard_when_streamed(base, tmp_path):
    pool = _copy_pool(base, tmp_path / "pool")
    _bad_entry(pool / "shards", "symlink-loop")
    r = _round(base, pool, tmp_path, preset="streamed", cache=False)
    assert r[0] == 0, r
    assert _report(tmp_path)["shard_errors"]["missing_shards"] == 1


# ------------------------------------------------------------------------------------------ item 12
def test_sample_without_json_is_one_corrupt_member(base, tmp_path):
    pool = _copy_pool(base, tmp_path / "pool")
    tar = pool / "shards" / "00000000.tar"
    key = _first_key(tar)
    _edit_tar(tar, lambda name, data: None if name == f"{key}.json" else data)
    r = _round(base, pool, tmp_path)
    assert r[0] == 0, r
    assert _report(tmp_path)["shard_errors"]["corrupt_members"] == 1


def test_pool_path_with_double_colon_is_a_local_path(base, tmp_path):
    pool = _copy_pool(base, tmp_path / "my::pool")
    r = _round(base, pool, tmp_path)
    assert r[0] == 0, r


def test_copied_and_edited_pool_builds_its_own_default_cache(base, tmp_path):
    from sfcomp.pool import Pool, pool_fingerprint

    a = _copy_pool(base, tmp_path / "a")
    assert _round(base, a, tmp_path / "ra", cache=False)[0] == 0  # default cache: a/.sfcomp-cache
    b = tmp_path / "b"
    shutil.copytree(a, b)
    for p in (b / "shards").glob("00000001*"):  # edited: one shard fewer
        p.unlink()
    r = _round(base, b, tmp_path / "rb", cache=False)
    assert r[0] == 0, r
    manifest = json.loads(next((b / ".sfcomp-cache").glob("*/manifest.json")).read_text())
    assert manifest["pool_fingerprint"] == pool_fingerprint(Pool(str(b)))

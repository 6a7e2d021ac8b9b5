"""`sfcomp download` end to end: a real HTTP server on 127.0.0.1, real img2dataset, no mocks.

Some URLs 404 and some serve undecodable bytes; the shards must hold exactly the decodable ones, in DataComp's
layout, and a rerun after an interruption must redo only the unfinished shards.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sfcomp.download import DATACOMP_SETTINGS, clean_partial_shards, download
from sfcomp.errors import BadInputError
from sfcomp.sources import fashion_mnist as F
from sfcomp.sources.pool_plan import corrupt_bytes, encode_image
from sfcomp.sources.serve import BlobServer, write_blob

N = 250
PER_SHARD = 100
STATS_KEYS = {"count", "successes", "failed_to_download", "failed_to_resize", "duration", "start_time",
              "end_time", "status_dict"}
JSON_KEYS = {"uid", "caption", "url", "key", "status", "width", "height", "original_width", "original_height",
             "exif", "sha256", "face_bboxes"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """N image URLs on a live local server: 404s at rows % 25 == 3, undecodable files at rows % 25 == 7."""
    root = tmp_path_factory.mktemp("site")
    images, labels = F.load("test")
    rng = np.random.default_rng(0)
    files, kinds, shapes = [], [], []
    for i in range(N):
        w, h = [(96, 96), (120, 60), (40, 80), (28, 28)][i % 4]
        data = encode_image(images[i], w, h, "png" if i % 5 == 0 else "jpg")
        kind = "404" if i % 25 == 3 else ("corrupt" if i % 25 == 7 else "ok")
        if kind == "corrupt":
            data = corrupt_bytes(data, rng)
        files.append(b"" if kind == "404" else data)
        kinds.append(kind)
        shapes.append((w, h))
    spans = write_blob(root / "blob.bin", files)
    uids = [f"{int(a):016x}{int(b):016x}" for a, b in rng.integers(0, 2**64, (N, 2), dtype=np.uint64)]
    paths = [f"/img/{u}.jpg" for u in uids]
    routes = {p: s for p, s, k in zip(paths, spans, kinds) if k != "404"}
    server = BlobServer(root / "blob.bin", routes).start()
    table = pa.table({
        "uid": uids,
        "url": [server.base_url + p for p in paths],
        "text": [f"a photo of a {F.PROMPT_CLASSNAMES[int(labels[i])]} number {i}" for i in range(N)],
        "face_bboxes": pa.array([[] for _ in range(N)], pa.list_(pa.list_(pa.float64()))),
    })
    pq.write_table(table, root / "urls.parquet")
    yield {"root": root, "uids": uids, "kinds": kinds, "shapes": shapes, "files": files,
           "texts": table.column("text").to_pylist(), "urls": root / "urls.parquet", "server": server}
    server.close()


@pytest.fixture(scope="module")
def downloaded(site, tmp_path_factory):
    """One real download through the CLI; then the library call, which finds every shard done and spawns nothing."""
    from sfcomp.cli import main

    out = tmp_path_factory.mktemp("dl") / "shards"
    cli = CliRunner().invoke(main, ["download", str(site["urls"]), "--out", str(out), "--image-size", "32",
                                    "--processes", "1", "--threads", "4", "--samples-per-shard", str(PER_SHARD)])
    assert cli.exit_code == 0, cli.output
    result = download(site["urls"], out, image_size=32, processes=1, threads=4, samples_per_shard=PER_SHARD,
                      quiet=True)
    return out, result, cli.output


def _tar_samples(tar_path):
    samples: dict[str, dict] = {}
    with tarfile.open(tar_path) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


def test_datacomp_settings_are_datacomps():
    assert DATACOMP_SETTINGS["input_format"] == "parquet"
    assert DATACOMP_SETTINGS["url_col"] == "url" and DATACOMP_SETTINGS["caption_col"] == "text"
    assert DATACOMP_SETTINGS["save_additional_columns"] == ["uid"]
    assert DATACOMP_SETTINGS["output_format"] == "webdataset"
    assert DATACOMP_SETTINGS["number_sample_per_shard"] == 10000 and DATACOMP_SETTINGS["oom_shard_count"] == 8
    assert DATACOMP_SETTINGS["resize_mode"] == "keep_ratio_largest"
    assert DATACOMP_SETTINGS["encode_format"] == "jpg" and DATACOMP_SETTINGS["image_size"] == 512


def test_counts_requested_vs_downloaded(site, downloaded):
    _, r, cli_output = downloaded
    kinds = np.array(site["kinds"])
    assert r.requested == N
    assert r.downloaded == int((kinds == "ok").sum())
    assert r.failed_to_download == int((kinds == "404").sum())
    assert r.failed_to_resize == int((kinds == "corrupt").sum())
    assert r.shards == 3 and r.shards_skipped == 3  # the second call found all shards finished
    assert f"requested {N}, downloaded {r.downloaded} " in cli_output
    assert "3 shards (0 already done before this run)" in cli_output


def test_shard_files_and_stats(site, downloaded):
    out = downloaded[0]
    names = sorted(os.listdir(out))
    assert names == [f"{s:08d}{ext}" for s in range(3) for ext in (".parquet", ".tar", "_stats.json")]
    total = 0
    for s in range(3):
        stats = json.loads((out / f"{s:08d}_stats.json").read_text())
        assert set(stats) == STATS_KEYS
        assert stats["count"] == min(PER_SHARD, N - s * PER_SHARD)
        assert stats["successes"] + stats["failed_to_download"] + stats["failed_to_resize"] == stats["count"]
        assert stats["successes"] == len(_tar_samples(out / f"{s:08d}.tar"))
        status = pq.read_table(out / f"{s:08d}.parquet").to_pandas()
        assert len(status) == stats["count"]  # the status table has every row, failures included
        total += stats["count"]
    assert total == N


def test_tar_members_and_json(site, downloaded):
    out = downloaded[0]
    by_uid = {u: i for i, u in enumerate(site["uids"])}
    seen = set()
    for s in range(3):
        for key, members in _tar_samples(out / f"{s:08d}.tar").items():
            assert set(members) == {"jpg", "txt", "json"}
            assert len(key) == 2 + 8 and int(key) // 10**2 == s  # 10^oom * shard + index, 8-digit shard part
            meta = json.loads(members["json"])
            assert JSON_KEYS <= set(meta)
            i = by_uid[meta["uid"]]
            assert site["kinds"][i] == "ok"
            assert meta["key"] == key and meta["status"] == "success"
            assert members["txt"].decode() == meta["caption"] == site["texts"][i]
            assert meta["sha256"] == hashlib.sha256(site["files"][i]).hexdigest()
            w, h = site["shapes"][i]
            assert (meta["original_width"], meta["original_height"]) == (w, h)
            assert max(meta["width"], meta["height"]) == 32  # keep_ratio_largest: longest side = image_size
            assert meta["face_bboxes"] == []
            assert members["jpg"][:2] == b"\xff\xd8"  # re-encoded as jpg, whatever was served
            seen.add(meta["uid"])
    ok = {u for u, k in zip(site["uids"], site["kinds"]) if k == "ok"}
    assert seen == ok


def test_status_table_records_failures(site, downloaded):
    out = downloaded[0]
    t = pa.concat_tables([pq.read_table(out / f"{s:08d}.parquet") for s in range(3)]).to_pandas()
    kind = dict(zip(site["uids"], site["kinds"]))
    want = {"ok": "success", "404": "failed_to_download", "corrupt": "failed_to_resize"}
    assert all(want[kind[u]] == st for u, st in zip(t["uid"], t["status"]))


def test_resume_redoes_only_unfinished_shards(site, downloaded, tmp_path):
    import shutil

    out = tmp_path / "shards"
    shutil.copytree(downloaded[0], out)
    # an interruption: shard 1 never finished (no stats), shard 2 died while writing its stats file
    (out / "00000001_stats.json").unlink()
    (out / "00000001.tar").write_bytes(b"partial")
    (out / "00000002_stats.json").write_text('{"count": 5')
    before = {s: os.stat(out / f"{s:08d}.tar").st_mtime_ns for s in range(3)}
    r = download(site["urls"], out, image_size=32, processes=1, threads=4, samples_per_shard=PER_SHARD, quiet=True)
    after = {s: os.stat(out / f"{s:08d}.tar").st_mtime_ns for s in range(3)}
    assert after[0] == before[0]  # finished shard untouched
    assert after[1] != before[1] and after[2] != before[2]
    assert r.shards == 3 and r.shards_skipped == 1
    assert r.downloaded == downloaded[1].downloaded
    assert len(_tar_samples(out / "00000001.tar")) == json.loads((out / "00000001_stats.json").read_text())["successes"]


def test_resume_after_a_real_kill(site, tmp_path):
    """SIGKILL the whole `sfcomp download` process group mid-run; the rerun keeps the finished shards."""
    import signal
    import subprocess
    import sys
    import time

    served = [i for i, k in enumerate(site["kinds"]) if k == "ok"][:200]
    routes = {f"/s/{i}.jpg": site["server"].routes[f"/img/{site['uids'][i]}.jpg"] for i in served}
    urls = tmp_path / "urls.parquet"
    with BlobServer(site["root"] / "blob.bin", routes, delay_s=0.03) as slow:
        pq.write_table(pa.table({"uid": [site["uids"][i] for i in served],
                                 "url": [f"{slow.base_url}/s/{i}.jpg" for i in served],
                                 "text": [site["texts"][i] for i in served]}), urls)
        out = tmp_path / "shards"
        cmd = [sys.executable, "-c", "from sfcomp.cli import main; main()", "download", str(urls), "--out", str(out),
               "--image-size", "32", "--processes", "1", "--threads", "2", "--samples-per-shard", "40"]
        p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not list(out.glob("*_stats.json")) and p.poll() is None:
            time.sleep(0.1)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        done = {f.name: (out / f.name.replace("_stats.json", ".tar")).stat().st_mtime_ns
                for f in out.glob("*_stats.json")}
        assert 1 <= len(done) < 5
        r = download(urls, out, image_size=32, processes=1, threads=4, samples_per_shard=40, quiet=True)
    assert r.shards == 5 and r.shards_skipped == len(done) and r.downloaded == len(served)
    assert all((out / n.replace("_stats.json", ".tar")).stat().st_mtime_ns == m for n, m in done.items())
    present = {json.loads(s["json"])["uid"] for t in sorted(out.glob("*.tar")) for s in _tar_samples(t).values()}
    assert present == {site["uids"][i] for i in served}


def test_clean_partial_shards_keeps_good_ones(tmp_path):
    (tmp_path / "00000000.tar").write_bytes(b"")
    (tmp_path / "00000000.parquet").write_bytes(b"")
    (tmp_path / "00000000_stats.json").write_text('{"successes": 1}')
    (tmp_path / "00000001_stats.json").write_text('{"successes": 1}')  # no tar
    assert [os.path.basename(p) for p in clean_partial_shards(tmp_path)] == ["00000001_stats.json"]
    assert (tmp_path / "00000000_stats.json").exists()


def test_bad_url_list_is_one_line_error(tmp_path):
    pq.write_table(pa.table({"link": ["http://127.0.0.1:9/x.jpg"], "text": ["x"], "uid": ["0" * 32]}),
                   tmp_path / "bad.parquet")
    with pytest.raises(BadInputError, match=r"bad.parquet: url parquet has no column 'url'"):
        download(tmp_path / "bad.parquet", tmp_path / "out")

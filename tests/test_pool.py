import io
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from poolfactory import write_tiny_pool
from sfcomp import uids as U
from sfcomp.errors import BadInputError
from sfcomp.pool import Pool, ShardErrors, read_metadata_file, read_npz


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    info = write_tiny_pool(root, n=240, seed=3, samples_per_shard=100)
    return root, info


def test_reads_img2dataset_layout(pool_dir):
    root, info = pool_dir
    pool = Pool(root)
    assert len(pool.metadata_files()) == 2
    assert list(U.uids_to_hex(pool.metadata_uids())) == info["uids"]
    assert set(U.uids_to_hex(pool.present_uids())) == info["present"]
    assert [s["successes"] for s in pool.shard_stats().values()] == [
        sum(u in info["present"] for u in info["uids"][a:a + 100]) for a in (0, 100, 200)]
    samples = list(pool.iter_samples())
    assert {s["uid"] for s in samples} == info["present"]
    by_uid = dict(zip(info["uids"], range(240)))
    table = pool.read_metadata(["uid", "text"])
    texts = dict(zip(table.column("uid").to_pylist(), table.column("text").to_pylist()))
    for s in samples:  # joined by json uid, not by key
        assert s["text"] == texts[s["uid"]] and s["image"].size == (32, 32) and s["uid"] in by_uid


def test_reads_only_the_columns_asked_for(pool_dir):
    root, _ = pool_dir
    t = Pool(root).read_metadata(["uid", "clip_l14_similarity_score"])
    assert t.column_names == ["uid", "clip_l14_similarity_score"]


def test_uid_filter_runs_before_decoding(pool_dir, monkeypatch):
    root, info = pool_dir
    keep = set(sorted(info["present"])[:10])
    import PIL.Image

    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
    got = [s["uid"] for s in Pool(root).iter_samples(keep_uid=keep.__contains__)]
    assert set(got) == keep and len(opened) == 10


def test_fsspec_url(pool_dir):
    root, info = pool_dir
    pool = Pool(f"file://{root}")
    assert len(pool.metadata_uids()) == 240
    assert {s["uid"] for s in pool.iter_samples(decode=None)} == info["present"]


def test_missing_metadata_folder(tmp_path):
    with pytest.raises(BadInputError, match="metadata folder does not exist"):
        Pool(tmp_path).metadata_files()
    (tmp_path / "metadata").mkdir()
    with pytest.raises(BadInputError, match="no .parquet files"):
        Pool(tmp_path).metadata_files()


def test_parquet_without_uid_column(tmp_path):
    (tmp_path / "metadata").mkdir()
    pq.write_table(pa.table({"text": ["a"]}), tmp_path / "metadata" / "x.parquet")
    with pytest.raises(BadInputError) as e:
        Pool(tmp_path).metadata_uids()
    assert "x.parquet: parquet has no column 'uid'" in str(e.value)


def test_truncated_parquet(tmp_path, pool_dir):
    root, _ = pool_dir
    src = Pool(root).metadata_files()[0]
    data = open(src, "rb").read()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"t\.parquet: unreadable parquet"):
        read_metadata_file(str(tmp_path / "t.parquet"), ["uid"])


def test_npz_row_count_mismatch(tmp_path):
    pq.write_table(pa.table({"uid": ["0" * 32, "1" * 32]}), tmp_path / "m.parquet")
    np.savez(tmp_path / "m.npz", l14_img=np.zeros((3, 4), np.float16))
    with pytest.raises(BadInputError, match=r"m\.npz: npz array 'l14_img' has 3 rows but its parquet has 2"):
        read_npz(str(tmp_path / "m.parquet"), ["l14_img"])
    with pytest.raises(BadInputError, match="no array 'b32_img'"):
        read_npz(str(tmp_path / "m.parquet"), ["b32_img"])


def test_malformed_uid_in_metadata(tmp_path):
    (tmp_path / "metadata").mkdir()
    pq.write_table(pa.table({"uid": ["0" * 32, "XYZ"]}), tmp_path / "metadata" / "bad.parquet")
    with pytest.raises(BadInputError, match=r"bad\.parquet: malformed uid at row 1"):
        Pool(tmp_path).metadata_uids()


def _rewrite_tar(src, dst, corrupt_key=None, truncate=False):
    with tarfile.open(src) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as out:
        for m, data in members:
            if corrupt_key and m.name == f"{corrupt_key}.json":
                data = b"{not json"
                m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    raw = buf.getvalue()
    open(dst, "wb").write(raw[: len(raw) * 2 // 3] if truncate else raw)


def test_corrupt_member_is_skipped_and_counted(tmp_path, pool_dir):
    root, info = pool_dir
    shards = Pool(root).shard_files()
    with tarfile.open(shards[0]) as tf:
        first_key = tf.getnames()[0].split(".")[0]
    _rewrite_tar(shards[0], tmp_path / "c.tar", corrupt_key=first_key)
    _rewrite_tar(shards[1], tmp_path / "t.tar", truncate=True)
    errors = ShardErrors()
    got = list(Pool(root).iter_samples(shards=[str(tmp_path / "c.tar"), str(tmp_path / "t.tar"),
                                               str(tmp_path / "gone.tar"), shards[2]], errors=errors))
    assert errors.corrupt_members >= 2 and errors.missing_shards == 1
    assert any("c.tar" in m for m in errors.messages) and any("t.tar" in m for m in errors.messages)
    n_full = sum(1 for _ in Pool(root).iter_samples(shards=[shards[0]], decode=None))
    n_last = sum(1 for _ in Pool(root).iter_samples(shards=[shards[2]], decode=None))
    from_c = sum(1 for s in got if s["shard"].endswith("c.tar"))
    assert from_c == n_full - 1
    assert sum(1 for s in got if s["shard"] == shards[2]) == n_last  # the pass went on after the bad ones

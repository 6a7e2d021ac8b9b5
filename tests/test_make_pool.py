"""`sfcomp make-pool` builds a small pool through the real HTTP + img2dataset path; its layout is checked file by
file against DataComp's (docs: shared/docs/datacomp-reference.md). A `--direct` build with the same seed must
give the same files. Plus the pure parts: noise assignment, profiles, captions, determinism.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sfcomp.errors import SfcompError
from sfcomp.makepool import METADATA_COLUMNS, make_pool
from sfcomp.sources import captions as C
from sfcomp.sources import fashion_mnist as F
from sfcomp.sources import noise as NZ
from sfcomp.sources.pool_plan import plan_pool

SIZE = 240
PER_SHARD = 100
QUICK = dict(size=SIZE, samples_per_shard=PER_SHARD, processes=1, threads=4, ref_size=300, ref_steps=2,
             ref_batch_size=32, retrieval_size=40, eval_size=120, image_size=48, seed=3, progress=False,
             log=lambda m: None)
DTYPES = {"uid": "string", "url": "string", "text": "string", "original_width": "int64",
          "original_height": "int64", "clip_b32_similarity_score": "float", "clip_l14_similarity_score": "float",
          "face_bboxes": "list<element: list<element: double>>", "sha256": "string"}
JSON_KEYS = {"uid", "caption", "url", "key", "status", "width", "height", "original_width", "original_height",
             "exif", "sha256", "face_bboxes"}
STATS_KEYS = {"count", "successes", "failed_to_download", "failed_to_resize", "duration", "start_time",
              "end_time", "status_dict"}
HEX32 = re.compile(r"^[0-9a-f]{32}$")
FASHION = dict(vocab=F.CAPTIONS, served_sides=F.SERVED_SIDES, served_side_p=F.SERVED_SIDE_P)  # make-pool's words


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("pools") / "http"
    info = make_pool(out, **QUICK)
    return out, info


def _metadata(out: Path) -> pd.DataFrame:
    files = sorted((out / "metadata").glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _shard_samples(out: Path) -> dict[str, dict]:
    """uid -> {"key", "shard", "jpg", "txt", "json"} over all tars."""
    by_uid = {}
    for tar in sorted((out / "shards").glob("*.tar")):
        groups: dict[str, dict] = {}
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                groups.setdefault(key, {})[ext] = tf.extractfile(m).read()
        for key, g in groups.items():
            assert set(g) == {"jpg", "txt", "json"}, (tar, key, set(g))
            meta = json.loads(g["json"])
            by_uid[meta["uid"]] = dict(g, key=key, shard=int(tar.stem), meta=meta)
    return by_uid


def test_top_level_layout(pool):
    out, info = pool
    assert (out / ".complete").read_text() == "ok\n"
    assert sorted(p.name for p in out.iterdir()) == [".complete", "eval", "make_pool.json", "metadata", "reference",
                                                      "shards", "truth.parquet"]
    assert info["requested"] == SIZE and 0 < info["downloaded"] < SIZE


def test_metadata_files_columns_dtypes(pool):
    out, _ = pool
    files = sorted((out / "metadata").glob("*"))
    stems = {f.stem for f in files}
    assert len(stems) >= 2 and all(HEX32.match(s) for s in stems)
    assert sorted(f.name for f in files) == sorted([f"{s}.parquet" for s in stems] + [f"{s}.npz" for s in stems])
    for f in (out / "metadata").glob("*.parquet"):
        schema = pq.read_schema(f)
        assert schema.names == METADATA_COLUMNS
        assert {n: str(schema.field(n).type) for n in schema.names} == DTYPES
    meta = _metadata(out)
    assert len(meta) == SIZE and meta["uid"].is_unique
    assert meta["uid"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert meta["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()
    assert (meta["face_bboxes"].map(len) == 0).all()
    assert meta["url"].str.match(r"^http://127\.0\.0\.1:\d+/img/").all()
    assert set(meta.columns).isdisjoint({"clean", "noise_type", "class"})  # ground truth stays out


def test_npz_keys_shapes_norms_alignment(pool):
    out, _ = pool
    for f in (out / "metadata").glob("*.parquet"):
        t = pq.read_table(f).to_pandas()
        raw = (f.with_suffix(".npz")).read_bytes()
        z = np.load(io.BytesIO(raw))
        assert sorted(z.files) == ["b32_img", "b32_txt", "l14_img", "l14_txt"]
        for k, d in [("b32_img", 512), ("b32_txt", 512), ("l14_img", 768), ("l14_txt", 768)]:
            assert z[k].shape == (len(t), d) and z[k].dtype == np.float16
            assert np.allclose(np.linalg.norm(z[k].astype(np.float32), axis=1), 1.0, atol=2e-3)
        # uncompressed: every member is stored, not deflated
        import zipfile

        with zipfile.ZipFile(f.with_suffix(".npz")) as zf:
            assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        # row alignment: the score columns are the cosines of the same rows' embeddings
        for arch in ("b32", "l14"):
            cos = np.einsum("ij,ij->i", z[f"{arch}_img"].astype(np.float32), z[f"{arch}_txt"].astype(np.float32))
            assert np.allclose(cos, t[f"clip_{arch}_similarity_score"].to_numpy(), atol=1e-5)


def test_shard_files_stats_and_status_tables(pool):
    out, _ = pool
    names = sorted(p.name for p in (out / "shards").iterdir())
    n = len(names) // 3
    assert n >= 3 and names == sorted(f"{s:08d}{e}" for s in range(n) for e in (".tar", ".parquet", "_stats.json"))
    total = 0
    for s in range(n):
        stats = json.loads((out / "shards" / f"{s:08d}_stats.json").read_text())
        assert set(stats) == STATS_KEYS
        status = pq.read_table(out / "shards" / f"{s:08d}.parquet").to_pandas()
        assert len(status) == stats["count"] <= PER_SHARD
        assert (status["status"] == "success").sum() == stats["successes"]
        total += stats["count"]
    assert total == SIZE  # every metadata row was requested exactly once


def test_tar_samples_match_metadata(pool):
    out, _ = pool
    meta = _metadata(out).set_index("uid")
    samples = _shard_samples(out)
    assert set(samples) <= set(meta.index)  # every shard uid is in the metadata
    for uid, s in samples.items():
        m, row = s["meta"], meta.loc[uid]
        assert JSON_KEYS <= set(m) and m["status"] == "success" and m["key"] == s["key"]
        assert len(s["key"]) == 2 + 8 and int(s["key"]) // 10**2 == s["shard"]
        assert s["txt"].decode() == m["caption"] == row["text"]
        assert m["url"] == row["url"] and m["sha256"] == row["sha256"]
        assert (m["original_width"], m["original_height"]) == (row["original_width"], row["original_height"])
        assert max(m["width"], m["height"]) == QUICK["image_size"]
        assert s["jpg"][:2] == b"\xff\xd8"


def test_failures_are_the_planned_ones(pool):
    out, info = pool
    truth = pd.read_parquet(out / "truth.parquet").set_index("uid")
    present = set(_shard_samples(out))
    served_ok = set(truth.index[truth["served"] == "ok"])
    assert present == served_ok
    assert (truth["served"] != "ok").sum() >= 1
    status = pd.concat([pq.read_table(p).to_pandas() for p in sorted((out / "shards").glob("*.parquet"))])
    st = dict(zip(status["uid"], status["status"]))
    assert all(st[u] == "failed_to_download" for u in truth.index[truth["served"] == "404"])
    assert all(st[u] == "failed_to_resize" for u in truth.index[truth["served"] == "undecodable"])
    assert info["downloaded"] == len(present)


def test_truth_file(pool):
    out, info = pool
    truth = pd.read_parquet(out / "truth.parquet")
    assert {"uid", "clean", "noise_type", "class"} <= set(truth.columns)
    assert truth["clean"].dtype == bool and truth["class"].between(0, 9).all()
    assert set(truth["uid"]) == set(_metadata(out)["uid"])
    base = truth[truth["noise_type"] != "duplicate"]
    assert (base["clean"] == (base["noise_type"] == "clean")).all()
    assert abs((~base["clean"]).mean() - 0.5) < 0.01  # --noise 0.5 is exact on non-duplicate samples
    assert set(base["noise_type"]) - {"clean"} <= set(NZ.NOISE_TYPES)
    assert info["noise_mix"] == pytest.approx(truth["noise_type"].value_counts(normalize=True).round(4).to_dict())


def test_clean_captions_name_their_class(pool):
    out, _ = pool
    meta = _metadata(out).set_index("uid")
    truth = pd.read_parquet(out / "truth.parquet").set_index("uid")
    clean = truth[truth["clean"]]
    hits = [any(s.lower() in meta.loc[u, "text"].lower() for s in F.SYNONYMS[c])
            for u, c in zip(clean.index, clean["class"])]
    assert np.mean(hits) == 1.0


def test_eval_sets_clip_benchmark_wds(pool):
    import webdataset as wds

    out, _ = pool
    cls_dir = out / "eval" / "fashion_mnist"
    n = int((cls_dir / "test" / "nshards.txt").read_text())
    assert [f"{i}.tar" for i in range(n)] == sorted(p.name for p in (cls_dir / "test").glob("*.tar"))
    assert (cls_dir / "classnames.txt").read_text().splitlines() == F.PROMPT_CLASSNAMES
    templates = (cls_dir / "zeroshot_classification_templates.txt").read_text().splitlines()
    assert templates and all("{c}" in t for t in templates)
    assert not (cls_dir / "dataset_type.txt").exists()
    urls = [str(cls_dir / "test" / f"{i}.tar") for i in range(n)]
    ds = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("png", "cls")
    labels = [c for _, c in ds]
    _, want = F.load("test")
    assert labels == [int(x) for x in want[: QUICK["eval_size"]]]

    ret = out / "eval" / "fashion_mnist_retrieval"
    assert (ret / "dataset_type.txt").read_text().strip() == "retrieval"
    n = int((ret / "test" / "nshards.txt").read_text())
    ds = wds.WebDataset([str(ret / "test" / f"{i}.tar") for i in range(n)], shardshuffle=False)
    items = list(ds.decode("pil").to_tuple("png", "txt"))
    assert len(items) == QUICK["retrieval_size"]
    assert all(len(t.splitlines()) == 2 and img.size == (28, 28) for img, t in items)


def test_rerun_is_a_no_op_and_other_args_refused(pool):
    out, info = pool
    stamp = (out / ".complete").stat().st_mtime_ns
    assert make_pool(out, **QUICK)["requested"] == info["requested"]
    assert (out / ".complete").stat().st_mtime_ns == stamp
    with pytest.raises(SfcompError, match="other arguments"):
        make_pool(out, **dict(QUICK, noise=0.3))


def test_direct_build_gives_the_same_files(pool, tmp_path, capfd):
    import shutil

    from sfcomp.makepool import PoolBuilder

    out, _ = pool
    b = PoolBuilder(tmp_path / "direct", direct=True, **QUICK)
    b._check_args()  # a started build (its _work/args.json): the models it finds there are its own
    (b.work / "reference").mkdir(parents=True)  # same seed, same models: reuse them to save the training
    for p in (out / "reference").glob("*.pt"):
        shutil.copyfile(p, b.work / "reference" / p.name)
    capfd.readouterr()
    info = b.build()
    assert capfd.readouterr().out == ""  # progress=False (make-pool --quiet): img2dataset's progress too
    a, b = _metadata(out), _metadata(tmp_path / "direct")
    pd.testing.assert_frame_equal(a.drop(columns="face_bboxes"), b.drop(columns="face_bboxes"))  # scores too
    sa, sb = _shard_samples(out), _shard_samples(tmp_path / "direct")
    assert set(sa) == set(sb)
    for uid in sa:
        assert sa[uid]["jpg"] == sb[uid]["jpg"] and sa[uid]["txt"] == sb[uid]["txt"]
        assert sa[uid]["meta"] == sb[uid]["meta"] or \
            {k: v for k, v in sa[uid]["meta"].items() if k != "key"} == \
            {k: v for k, v in sb[uid]["meta"].items() if k != "key"}  # completion order may differ
    assert info["direct"] is True


def test_resume_after_losing_a_shard(pool, tmp_path):
    """A build cut off during download: rerunning finishes the missing shard and keeps the others."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(pool[0], out)
    # rebuild the state of an interrupted run: work files back, completion markers gone, shard 1 lost
    (out / ".complete").unlink()
    (out / "make_pool.json").unlink()
    for p in (out / "shards").glob("00000001*"):
        p.unlink()
    (out / "truth.parquet").unlink()
    builder_args = dict(QUICK)
    from sfcomp.makepool import PoolBuilder

    b = PoolBuilder(out, **builder_args)
    b.work.mkdir()
    (b.work / "args.json").write_text(json.dumps(b.args))
    b.plan()  # the plan is deterministic: regenerated identically
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    info = b.build()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    assert "00000001.tar" in after and all(after[k] == v for k, v in before.items())
    assert info["downloaded"] == pool[1]["downloaded"]
    assert set(_shard_samples(out)) == set(_shard_samples(pool[0]))


# ---- pure parts ----------------------------------------------------------------------------------------------
def test_assign_types_exact_counts():
    rng = np.random.default_rng(0)
    prof = NZ.get_profile("default")
    types = NZ.assign_types(1000, 0.5, prof, rng)
    assert (types == "clean").sum() == 500
    w = np.array(list(prof["noise_types"].values()), float)
    w /= w.sum()
    for (k, _), share in zip(prof["noise_types"].items(), w):
        assert abs((types == k).sum() - 500 * share) <= 1
    with pytest.raises(SfcompError):
        NZ.assign_types(10, 1.5, prof, rng)


@pytest.mark.parametrize("name,dominant", [("misaligned", {"misaligned_swap", "misaligned_class"}),
                                           ("junk", {"junk_repeated"}), ("memorizable", {"random_string"}),
                                           ("neardup", {"neardup_conflict"})])
def test_profiles_shape_the_noise(name, dominant):
    images, labels = F.load("test")
    plan = plan_pool(images, labels, 400, 0.5, NZ.get_profile(name), seed=1, ref_size=100, **FASHION)
    t = plan.table
    noisy = t[~t["clean"] & (t["noise_type"] != "duplicate")]
    assert noisy["noise_type"].isin(dominant).mean() >= 0.69
    if name == "junk":
        assert t.loc[t["noise_type"] == "junk_repeated", "text"].nunique() <= len(NZ.JUNK_REPEATED)
    if name == "memorizable":
        strings = t.loc[t["noise_type"] == "random_string", "text"]
        assert strings.is_unique
    if name == "neardup":
        nd = t[t["noise_type"] == "neardup_conflict"]
        assert (nd["variant"] == "neardup").all()
        for _, r in nd.head(20).iterrows():  # the caption names another class than the image shows
            assert not any(s in r["text"].lower() for s in F.SYNONYMS[int(r["class"])] if len(s) > 4)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(SfcompError, match="unknown noise mix 'nope'"):
        NZ.get_profile("nope")


def test_plan_is_deterministic_and_uids_are_128_bit():
    images, labels = F.load("test")
    prof = NZ.get_profile("default")
    a = plan_pool(images, labels, 300, 0.5, prof, seed=7, ref_size=100, **FASHION)
    b = plan_pool(images, labels, 300, 0.5, prof, seed=7, ref_size=100, **FASHION)
    c = plan_pool(images, labels, 300, 0.5, prof, seed=8, ref_size=100, **FASHION)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert np.array_equal(a.pixels, b.pixels)
    assert not set(a.table["uid"]) & set(c.table["uid"])
    assert a.table["uid"].str.fullmatch(r"[0-9a-f]{32}").all() and a.table["uid"].is_unique
    ints = [int(u, 16) for u in a.table["uid"]]
    assert max(ints) > 2**120  # the high bits are used
    # the reference split never enters the pool
    assert not set(a.ref_indices) & set(a.table["source_index"])


def test_pixel_attributes_follow_pixels():
    dark = np.zeros((28, 28), np.uint8)
    dark[4:24, 6:22] = 60
    light = dark.copy()
    light[4:24, 6:22] = 230
    assert C.pixel_attributes(dark, 0)["tone"] == "dark"
    assert C.pixel_attributes(light, 0)["tone"] == "light"
    rng = np.random.default_rng(0)
    caps = [F.CAPTIONS.caption(1, C.pixel_attributes(light, 1), rng).lower() for _ in range(200)]
    assert len(set(caps)) > 100  # many templates and synonyms
    assert all(any(s in c for s in F.SYNONYMS[1]) for c in caps)


def test_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SFCOMP_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(SfcompError, match="dataset-fashion-mnist"):
        F.load("train")


def test_cli_make_pool_help_and_bad_mix(tmp_path):
    from sfcomp.cli import main

    r = CliRunner().invoke(main, ["make-pool", "--help"])
    assert r.exit_code == 0 and "--noise-mix" in r.output and "--direct" in r.output
    r = CliRunner().invoke(main, ["make-pool", "--out", str(tmp_path / "p"), "--noise-mix", "nope"])
    assert r.exit_code == 2 and "unknown noise mix 'nope'" in r.output


def test_pool_larger_than_supply_reposts_altered_copies():
    images, labels = F.load("test")
    plan = plan_pool(images, labels, 300, 0.5, NZ.get_profile("misaligned"), seed=2, ref_size=9800,  # 200 left
                     **FASHION)
    t = plan.table
    reposts = np.flatnonzero((t["variant"] == "repost").to_numpy())
    assert len(reposts) >= 90 and (t["variant"] == "original").sum() == 200
    src = t["source_index"].to_numpy()
    assert all(not np.array_equal(plan.pixels[i], images[src[i]]) for i in reposts)  # altered, not copied
    assert (t["class"].to_numpy() == labels[src]).all()


def test_download_waits_for_the_metadata_port_held_by_another_socket():
    """The metadata urls name a port fixed by the seed; a socket that holds it for a moment (it lies in the
    kernel's ephemeral range) is waited out, so the shards' urls still equal the metadata's."""
    import socket
    import threading

    from sfcomp.makepool import _wait_for_port

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    assert _wait_for_port(port, seconds=0.3) is False  # held throughout: the caller serves on another port
    threading.Timer(0.5, holder.close).start()
    assert _wait_for_port(port, seconds=60) is True

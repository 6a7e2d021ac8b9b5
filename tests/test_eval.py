"""The evaluation side: reshard semantics, fixed scales, a real tiny open_clip_train run, zero-shot metrics on a
wds set written here, compare's table and plot."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from poolfactory import CLASSES, load_fashion_mnist, write_tiny_pool

from sfcomp.eval import reshard as R
from sfcomp.eval.compare import compare
from sfcomp.eval.evaluate import classification_metrics, find_tasks, read_results, retrieval_metrics
from sfcomp.eval.scales import get_scale, load_scales
from sfcomp.eval.train import trainer_args
from sfcomp import uids as U
from sfcomp.errors import BadInputError

ROOT = Path(__file__).resolve().parent.parent
SFCOMP = [sys.executable, "-c", "import sys; from sfcomp.cli import main; sys.argv[0] = 'sfcomp'; main()"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    info = write_tiny_pool(root, n=600, seed=3, samples_per_shard=150)
    return root, info


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def pool_samples(root: Path) -> dict[str, dict[str, bytes]]:
    by_uid = {}
    for tar in sorted((root / "shards").glob("*.tar")):
        for s in read_tar(tar).values():
            by_uid[json.loads(s["json"])["uid"]] = s
    return by_uid


# ---- reshard -------------------------------------------------------------------------------------------------
def test_reshard_selects_upsamples_and_counts(pool, tmp_path):
    root, info = pool
    present = sorted(info["present"])
    absent = sorted(set(info["uids"]) - info["present"])[:7]
    rng = np.random.default_rng(0)
    chosen = list(rng.choice(present, 200, replace=False))
    twice, thrice = chosen[:10], chosen[10:15]
    unknown = [rng.bytes(16).hex() for _ in range(4)]
    listed = chosen + twice + thrice * 2 + absent + unknown
    subset = U.write_subset(tmp_path / "sub.npy", U.hex_to_uids(listed), allow_duplicates=True)
    assert len(subset) == len(listed)

    rep = R.reshard(root, tmp_path / "sub.npy", tmp_path / "out", shard_size=64, log=lambda m: None)
    expected = Counter(u for u in listed if u in info["present"])
    assert rep.requested == len(listed)
    assert rep.requested_unique == len(set(listed))
    assert rep.output_count == sum(expected.values()) == 200 + 10 + 10
    assert rep.not_found == len(absent) + len(unknown)
    assert rep.found_unique == 200
    assert rep.processed_count == len(info["present"]) == rep.expected_input_count

    out = tmp_path / "out"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["output_shard_count"] == rep.output_shard_count == -(-220 // 64)
    assert meta["output_shard_format"] == "{:08d}.tar"
    assert (out / "sample_ids.npy").read_bytes() == (tmp_path / "sub.npy").read_bytes()
    written: Counter = Counter()
    originals = pool_samples(root)
    total = 0
    for i in range(rep.output_shard_count):
        samples = read_tar(out / f"{i:08d}.tar")
        stats = json.loads((out / f"{i:08d}_stats.json").read_text())
        assert stats["successes"] == len(samples) and len(samples) <= 64
        total += len(samples)
        for key, s in samples.items():
            uid, j = key.rsplit("-", 1)
            assert json.loads(s["json"])["uid"] == uid
            assert 0 <= int(j) < expected[uid]
            assert s == originals[uid]  # every member copied byte for byte
            written[uid] += 1
    assert total == rep.output_count and written == expected


def test_reshard_refuses_unsorted_subset(pool, tmp_path):
    root, info = pool
    arr = U.sort_uids(U.hex_to_uids(sorted(info["present"])[:50]))[::-1].copy()
    np.save(tmp_path / "unsorted.npy", arr)
    with pytest.raises(BadInputError, match="not sorted"):
        R.reshard(root, tmp_path / "unsorted.npy", tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out" / "meta.json").exists()
    r = subprocess.run([*SFCOMP, "reshard", "-i", str(root), "-s",
                        str(tmp_path / "unsorted.npy"), "-o", str(tmp_path / "out2")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "not sorted" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _pool_copy_with_a_second_copy_of_shard_0(root: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(root, dst)
    last = max(int(p.stem) for p in (dst / "shards").glob("*.tar"))
    shutil.copy(dst / "shards" / "00000000.tar", dst / "shards" / f"{last + 1:08d}.tar")
    return dst / "shards" / f"{last + 1:08d}.tar"


def test_reshard_refuses_a_pool_holding_a_uid_twice_and_writes_nothing(pool, tmp_path):
    # found by an audit (2026-12-04): "resharded 90/60 requested samples ... -30 not found"
    root, info = pool
    second = _pool_copy_with_a_second_copy_of_shard_0(root, tmp_path / "dup")
    U.write_subset(tmp_path / "sub.npy", U.hex_to_uids(sorted(info["present"])))
    r = subprocess.run([*SFCOMP, "reshard", "-i", str(tmp_path / "dup"), "-s", str(tmp_path / "sub.npy"), "-o",
                        str(tmp_path / "out" / "r")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {second}: sample ") and "is in the input shards twice" in r.stderr
    assert r.stderr.rstrip().endswith("; nothing written")
    assert not (tmp_path / "out").exists()


def test_reshard_resumed_past_a_uid_it_wrote_refuses_its_second_sample(pool, tmp_path, monkeypatch):
    # the first sample with the uid is in an output shard a killed run finished: read back from it on resume
    root, info = pool
    U.write_subset(tmp_path / "sub.npy", U.hex_to_uids(sorted(info["present"])))
    real_write, calls = R._ShardStream.write, {"n": 0}

    def crash_in_the_second_shard(self, key, sample):
        calls["n"] += 1
        if calls["n"] == 60:
            raise KeyboardInterrupt("simulated crash")
        real_write(self, key, sample)

    import shutil
    shutil.copytree(root, tmp_path / "pool")
    monkeypatch.setattr(R._ShardStream, "write", crash_in_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        R.reshard(tmp_path / "pool", tmp_path / "sub.npy", tmp_path / "out", shard_size=40, log=lambda m: None)
    monkeypatch.setattr(R._ShardStream, "write", real_write)
    last = max(int(p.stem) for p in (tmp_path / "pool" / "shards").glob("*.tar"))
    shutil.copy(tmp_path / "pool" / "shards" / "00000000.tar", tmp_path / "pool" / "shards" / f"{last + 1:08d}.tar")
    with pytest.raises(BadInputError, match=r"is in the input shards twice .*; \S+'s finished shards are kept"):
        R.reshard(tmp_path / "pool", tmp_path / "sub.npy", tmp_path / "out", shard_size=40, log=lambda m: None)
    assert (tmp_path / "out" / "00000000.tar").exists() and not (tmp_path / "out" / "meta.json").exists()


def test_reshard_resumes_after_a_crash_to_the_same_bytes(pool, tmp_path, monkeypatch):
    root, info = pool
    U.write_subset(tmp_path / "sub.npy", U.hex_to_uids(sorted(info["present"])[::2]))
    ref = R.reshard(root, tmp_path / "sub.npy", tmp_path / "ref", shard_size=40, log=lambda m: None)

    real_write, calls = R._ShardStream.write, {"n": 0}

    def crash_mid_third_shard(self, key, sample):
        calls["n"] += 1
        if calls["n"] == 100:  # shard_size 40: sample 100 is in the middle of the third shard
            raise KeyboardInterrupt("simulated crash")
        real_write(self, key, sample)

    monkeypatch.setattr(R._ShardStream, "write", crash_mid_third_shard)
    with pytest.raises(KeyboardInterrupt):
        R.reshard(root, tmp_path / "sub.npy", tmp_path / "out", shard_size=40, log=lambda m: None)
    assert not (tmp_path / "out" / "meta.json").exists()
    assert not (tmp_path / "out" / "00000002.tar").exists()
    assert not list((tmp_path / "out").glob(".tmp-*"))  # the half-written shard was removed
    (tmp_path / "out" / ".tmp-00000002.tar.12345").write_bytes(b"left by a killed process")
    monkeypatch.setattr(R._ShardStream, "write", real_write)
    rep = R.reshard(root, tmp_path / "sub.npy", tmp_path / "out", shard_size=40, log=lambda m: None)
    assert not list((tmp_path / "out").glob(".tmp-*"))
    assert rep.resumed_from_shard == 2
    assert rep.output_count == ref.output_count and rep.output_shard_count == ref.output_shard_count
    for i in range(ref.output_shard_count):
        assert (tmp_path / "out" / f"{i:08d}.tar").read_bytes() == (tmp_path / "ref" / f"{i:08d}.tar").read_bytes()
    # a finished reshard is not redone; another subset into the same folder needs overwrite
    assert R.reshard(root, tmp_path / "sub.npy", tmp_path / "out", shard_size=40, log=lambda m: None).output_count \
        == ref.output_count
    U.write_subset(tmp_path / "other.npy", U.hex_to_uids(sorted(info["present"])[:5]))
    with pytest.raises(BadInputError, match="another subset"):
        R.reshard(root, tmp_path / "other.npy", tmp_path / "out", shard_size=40, log=lambda m: None)
    assert R.reshard(root, tmp_path / "other.npy", tmp_path / "out", shard_size=40, overwrite=True,
                     log=lambda m: None).output_count == 5


def test_subset_counts_handles_top_half_collisions():
    ref = np.zeros(6, U.UID_DTYPE)
    ref["f0"] = [1, 1, 1, 5, 5, 2**64 - 1]
    ref["f1"] = [3, 3, 9, 0, 2**63, 7]
    q = np.zeros(5, U.UID_DTYPE)
    q["f0"] = [1, 1, 5, 5, 2**64 - 1]
    q["f1"] = [3, 4, 2**63, 1, 7]
    assert R.subset_counts(ref, q).tolist() == [2, 0, 1, 0, 1]


# ---- scales and trainer arguments ------------------------------------------------------------------------------
def test_scales_are_datacomps_table():
    s = load_scales()
    table = {  # DataComp scale_configs.py: model, global batch, lr, warmup, samples seen, beta2
        "small": ("ViT-B-32", 4096, 5e-4, 500, 12_800_000, None),
        "medium": ("ViT-B-32", 4096, 5e-4, 500, 128_000_000, None),
        "large": ("ViT-B-16", 8192, 5e-4, 500, 1_280_000_000, None),
        "xlarge": ("ViT-L-14", 90112, 1e-3, 10000, 12_800_000_000, 0.95),
    }
    for name, (model, batch, lr, warmup, seen, beta2) in table.items():
        c = s[name]
        assert (c["model"], c["batch_size"], c["learning_rate"], c["warmup"], c["train_num_samples"], c["beta2"]) \
            == (model, batch, lr, warmup, seen, beta2)
        assert c["wd"] == 0.2 and c["num_checkpoints"] == 5
    assert "tiny" in s


def test_trainer_args_follow_datacomp_train_py():
    args = trainer_args(get_scale("xlarge"), "/d/{00000000..00000009}.tar", "/logs", "exp", seed=3, world_size=8,
                        accum_freq=2)
    opt = {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--") and not args[i + 1].startswith("--")}
    assert "--dataset-resampled" in args and opt["--dataset-type"] == "webdataset"
    assert opt["--batch-size"] == str(90112 // 16)
    assert opt["--train-num-samples"] == str(12_800_000_000 // 5) and opt["--epochs"] == "5"
    assert opt["--lr"] == "0.001" and opt["--warmup"] == "10000" and opt["--beta2"] == "0.95"
    assert opt["--wd"] == "0.2" and opt["--seed"] == "3" and opt["--resume"] == "latest"
    assert {"--local-loss", "--gather-with-grad", "--grad-checkpointing", "--save-most-recent"} <= set(args)
    small = trainer_args(get_scale("small"), "x.tar", "/l", "e")
    assert "--beta2" not in small and small[small.index("--batch-size") + 1] == "4096"
    with pytest.raises(BadInputError, match="divisible"):
        trainer_args(get_scale("small"), "x.tar", "/l", "e", world_size=3)


# ---- evaluation metrics -------------------------------------------------------------------------------------------
def test_classification_metrics_by_hand():
    logits = np.array([[3, 1, 0], [0, 2, 1], [0, 2, 1], [1, 0, 2]], dtype=float)  # preds 0, 1, 1, 2
    m = classification_metrics(logits, np.array([0, 1, 2, 2]))
    assert m["acc1"] == 0.75 and m["acc5"] is None  # under 5 classes: no top-5
    assert m["mean_per_class_recall"] == pytest.approx((1 + 1 + 0.5) / 3)
    logits5 = np.eye(6)[[1, 2, 3, 4]] + np.arange(6)[::-1] * 0.1  # true class second best for sample 0
    m5 = classification_metrics(logits5, np.array([0, 2, 3, 5]))
    assert m5["acc1"] == 0.5 and m5["acc5"] == 0.75


def test_retrieval_metrics_by_hand():
    img = np.eye(3)
    # image 0 has captions 0 and 1, image 1 caption 2, image 2 caption 3 (scores = txt @ img.T = txt)
    txt = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0.1, 0.9], [0, 0, 1.0]])
    owner = np.array([0, 0, 1, 2])
    m = retrieval_metrics(txt, img, owner, ks=(1, 2))
    assert m["image_retrieval_recall@1"] == 0.5  # texts 0 and 3 find their image first; 1 and 2 second
    assert m["image_retrieval_recall@2"] == 1.0
    # per image, best text: img0 -> text 0 (own), img1 -> text 1 (image 0's), img2 -> text 3 (own)
    assert m["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert m["text_retrieval_recall@2"] == 1.0  # image 1: text 1 (.8), then its own text 2 (.1)
    assert m["mean_recall@1"] == pytest.approx(0.5 * (0.5 + 2 / 3))


def write_wds_classification(task: Path, n: int, shards: int = 2) -> None:
    images, labels = load_fashion_mnist("test", limit=n)
    (task / "test").mkdir(parents=True)
    per = -(-n // shards)
    for s in range(shards):
        with tarfile.open(task / "test" / f"{s}.tar", "w") as tf:
            for i in range(s * per, min(n, (s + 1) * per)):
                buf = io.BytesIO()
                from PIL import Image

                Image.fromarray(images[i]).save(buf, format="PNG")
                for ext, data in (("png", buf.getvalue()), ("cls", str(int(labels[i])).encode())):
                    info = tarfile.TarInfo(f"s{i:06d}.{ext}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    (task / "test" / "nshards.txt").write_text(f"{shards}\n")
    (task / "classnames.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (task / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n{c} for sale\n")


def write_wds_retrieval(task: Path, n: int) -> None:
    images, labels = load_fashion_mnist("test", limit=n)
    (task / "test").mkdir(parents=True)
    with tarfile.open(task / "test" / "0.tar", "w") as tf:
        for i in range(n):
            buf = io.BytesIO()
            from PIL import Image

            Image.fromarray(images[i]).convert("RGB").save(buf, format="JPEG")
            caps = f"a photo of a {CLASSES[labels[i]]}\nmy {CLASSES[labels[i]]}".encode()
            for ext, data in (("jpg", buf.getvalue()), ("txt", caps)):
                info = tarfile.TarInfo(f"r{i:06d}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    (task / "test" / "nshards.txt").write_text("1\n")
    (task / "dataset_type.txt").write_text("retrieval\n")


def test_find_tasks_datacomp_layout_and_plain_folders(tmp_path):
    dc = tmp_path / "datacomp"
    write_wds_classification(dc / "wds_vtab-caltech101_test", 12)
    write_wds_classification(dc / "wds_cifar10_test", 12)
    tasks, notes = find_tasks(dc)
    assert [(t.key, t.name, t.main_metric) for t in tasks] == [
        ("vtab/caltech101", "Caltech-101", "mean_per_class_recall"), ("cifar10", "CIFAR-10", "acc1")]
    assert any("ImageNet 1k" in n and "not downloaded" in n for n in notes)
    assert any("Flickr" in n and "not evaluated here" in n for n in notes)
    plain = tmp_path / "plain"
    write_wds_classification(plain / "fmnist", 12)
    write_wds_retrieval(plain / "fmnist_ret", 6)
    tasks, _ = find_tasks(plain)
    assert [(t.key, t.kind, t.main_metric) for t in tasks] == [
        ("fmnist", "classification", "acc1"), ("fmnist_ret", "retrieval", "mean_recall@1")]
    with pytest.raises(BadInputError, match="no eval task 'nope'"):
        find_tasks(plain, ["nope"])
    with pytest.raises(BadInputError, match="no clip_benchmark wds eval sets"):
        find_tasks(tmp_path / "datacomp" / "wds_cifar10_test" / "test")


# ---- a real tiny run: reshard -> open_clip_train -> evaluate -> compare ------------------------------------------
def test_train_eval_through_open_clip_train_then_compare(pool, tmp_path):
    from sfcomp.eval.pipeline import train_eval

    root, info = pool
    clean = [u for u, c in zip(info["uids"], info["clean"]) if c]
    U.write_subset(tmp_path / "clean.npy", U.hex_to_uids(clean))
    evald = tmp_path / "evalsets"
    write_wds_classification(evald / "fmnist", 60)
    write_wds_retrieval(evald / "fmnist_ret", 20)
    import logging

    levels = {name: logging.getLogger(name).level for name in ("", "torch._dynamo", "PIL", "sfcomp")}
    run = train_eval(tmp_path / "run", evald, subset=tmp_path / "clean.npy", pool=root, method="clean",
                     scale="tiny", seed=1, samples_seen=512, shard_size=100, threads=2, log=lambda m: None)
    # open_clip's trainer sets every logger to INFO; the caller's levels are given back (no leaked INFO lines)
    assert {name: logging.getLogger(name).level for name in levels} == levels
    ckpt = Path(run["checkpoint"])
    assert ckpt.exists() and ckpt.name == "epoch_latest.pt"
    tinfo = json.loads((tmp_path / "run" / "train" / "info.json").read_text())
    assert "--dataset-resampled" in tinfo["trainer_args"] and tinfo["standard"] is False
    assert tinfo["scale_config"]["train_num_samples"] == 512
    assert tinfo["scale_config"]["warmup"] == 1  # 30 steps of 76,800 samples, scaled to 512 samples seen
    log = (tmp_path / "run" / "train" / "train" / "out.log").read_text()
    assert "Train Epoch: 0" in log  # open_clip's own trainer ran
    assert run["clean_precision"] == 1.0 and run["subset_size"] == len(clean)

    rows = read_results(tmp_path / "run" / "eval_results.jsonl")
    assert [r["key"] for r in rows] == ["fmnist", "fmnist_ret"]
    for r in rows:
        assert set(r) == {"key", "dataset", "metrics", "eval_code"}
        assert 0.0 <= r["metrics"]["main_metric"] <= 1.0
    assert rows[0]["metrics"]["main_metric"] == rows[0]["metrics"]["acc1"]
    assert rows[1]["metrics"]["main_metric"] == rows[1]["metrics"]["mean_recall@1"]
    summary = json.loads((tmp_path / "run" / "eval_summary.json").read_text())
    assert summary["average"] == pytest.approx(np.mean([r["metrics"]["main_metric"] for r in rows]))

    # the preprocessed-image cache gives the same numbers, on first use (fills it) and on reuse
    from sfcomp.eval.evaluate import evaluate

    for k in (1, 2):
        evaluate(ckpt, run["model"], evald, tmp_path / f"cached{k}", cache_dir=tmp_path / "cache", log=lambda m: None)
        assert read_results(tmp_path / f"cached{k}" / "eval_results.jsonl") == rows
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2

    # compare: this real run plus two hand-written seeds of another method
    for seed, (a, b) in enumerate([(0.5, 0.1), (0.7, 0.3)]):
        d = tmp_path / "other" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "eval_results.jsonl").write_text("".join(json.dumps(
            {"key": k, "dataset": k, "metrics": {"main_metric": v}, "eval_code": "x"}) + "\n"
            for k, v in (("fmnist", a), ("fmnist_ret", b))))
        (d / "run.json").write_text(json.dumps({"method": "other", "seed": seed, "subset_size": 100,
                                                "clean_precision": 0.5, "samples_seen": 512}))
    md = compare([tmp_path / "run", tmp_path / "other"], tmp_path / "t.md", tmp_path / "t.png")
    lines = md.splitlines()
    assert lines[0] == "| method | seeds | subset size | clean precision | fmnist | fmnist_ret | average |"
    other = next(l for l in lines if l.startswith("| other "))
    assert "| 2 | 100 | 0.500 ± 0.000 | 0.600 ± 0.141 | 0.200 ± 0.141 | 0.400 ± 0.141 |" in other
    assert "samples seen: 512" in md
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "t.md").read_text() == md


@pytest.mark.parametrize("args, bad, problem", [
    (["--samples-seen", "0"], None, "--samples-seen 0 is less than one batch in each checkpoint epoch of scale tiny"),
    (["--samples-seen", "-5"], None, "--samples-seen -5 is less than one batch"),
    (["--shard-size", "0"], None, "--shard-size must be >= 1, got 0"),
    (["--nproc", "0"], None, "--nproc must be >= 1, got 0"),
    (["--precision", "bogus"], None, "--precision must be one of amp, amp_bf16"),
    (["--seed", "-1"], None, "--seed must be between 0 and 4294967295, got -1"),
    (["--task", "nope"], "EVAL", "no eval task 'nope' here"),
    (["--eval", "NOPE"], "NOPE", "eval folder does not exist"),
    (["--out", "POOL"], "POOL", "--out is the pool folder"),
    (["--out", "."], ".", "--out contains the pool folder"),
])
def test_train_eval_refuses_bad_arguments_before_any_work(pool, tmp_path, monkeypatch, args, bad, problem):
    """Before 2026-12-04: tracebacks (ZeroDivisionError, numpy's seed ValueError), open_clip's argparse usage
    after the reshard, or a whole training before the eval folder was found missing; the pool folder as --out."""
    import _e_harness as H

    root, info = pool
    (tmp_path / "eval").mkdir()
    U.write_subset(tmp_path / "s.npy", U.hex_to_uids(sorted(info["present"])[:50]))
    names = {"EVAL": tmp_path / "eval", "NOPE": tmp_path / "nope", "POOL": root, ".": root.parent}
    args = [str(names.get(a, a)) for a in args]
    base = {"--subset": tmp_path / "s.npy", "--pool": root, "--eval": tmp_path / "eval", "--out": tmp_path / "run"}
    for opt, v in base.items():
        if opt not in args:
            args += [opt, str(v)]
    before = sorted(p.name for p in tmp_path.iterdir())
    H.assert_one_line_error(H.cli("train-eval", *args), None if bad is None else names[bad], problem)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no reshard begun
    assert sorted(p.name for p in root.iterdir()) == ["metadata", "shards", "truth.parquet"]


@pytest.mark.parametrize("args, problem", [
    (["--device", "bogus"], "error: --device 'bogus' is not a torch device"),
    (["--batch-size", "0"], "error: Invalid value for '--batch-size': 0 is not in the range x>=1"),
])
def test_evaluate_refuses_a_bad_device_or_batch_size_in_one_line(tmp_path, args, problem):
    import _e_harness as H

    (tmp_path / "eval").mkdir()
    _saved_checkpoint(tmp_path / "c.pt")
    code, _, err = H.cli("evaluate", "--checkpoint", tmp_path / "c.pt", "--model", "ViT-B-32", "--eval",
                         tmp_path / "eval", "--out", tmp_path / "out", *args)
    assert (code, len(err.strip().splitlines())) == (2, 1) and err.startswith(problem), err
    assert not (tmp_path / "out").exists()


def test_precisions_are_open_clip_trains_own():
    from open_clip_train.params import parse_args

    from sfcomp.eval.scales import PRECISIONS

    for p in PRECISIONS:
        assert parse_args(["--precision", p]).precision == p
    with pytest.raises(SystemExit):
        parse_args(["--precision", "bogus"])


def test_train_refuses_a_folder_holding_another_run(pool, tmp_path):
    from sfcomp.eval.train import train

    root, info = pool
    U.write_subset(tmp_path / "s.npy", U.hex_to_uids(sorted(info["present"])[:50]))
    R.reshard(root, tmp_path / "s.npy", tmp_path / "data", shard_size=50, log=lambda m: None)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "settings.json").write_text(json.dumps({"scale": "tiny", "seed": 99}))
    with pytest.raises(BadInputError, match="other settings"):
        train(tmp_path / "data", tmp_path / "run", scale="tiny", seed=0, samples_seen=256)
    with pytest.raises(BadInputError, match="unknown scale 'huge'"):
        train(tmp_path / "data", tmp_path / "run2", scale="huge")


def test_fasttar_reads_what_tarfile_writes_and_back(tmp_path):
    from sfcomp.eval import fasttar

    members = [("a/k1.jpg", b"\xff\xd8" * 700), ("k1.txt", b""), ("x" * 120 + ".json", b"{}"),
               ("\u00e9t\u00e9.txt", b"caf\xc3\xa9")]
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        path = tmp_path / f"t{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tf:
            d = tarfile.TarInfo("a")
            d.type = tarfile.DIRTYPE
            tf.addfile(d)
            for name, data in members:
                if fmt == tarfile.USTAR_FORMAT and len(name) > 100:
                    continue
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        with open(path, "rb") as f:
            got = list(fasttar.iter_members(f, str(path)))
        assert got == [m for m in members if fmt != tarfile.USTAR_FORMAT or len(m[0]) <= 100]
    path = tmp_path / "mine.tar"
    with open(path, "wb") as f:
        for name, data in members[:2] + members[3:]:
            fasttar.write_member(f, name, data)
        fasttar.finish(f)
    with tarfile.open(path) as tf:
        assert [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()] == members[:2] + members[3:]
    broken = path.read_bytes()[:600]
    with pytest.raises(fasttar.TarFormatError, match="truncated"):
        list(fasttar.iter_members(io.BytesIO(broken), "b"))
    bad = bytearray(path.read_bytes())
    bad[0] ^= 1
    with pytest.raises(fasttar.TarFormatError, match="checksum"):
        list(fasttar.iter_members(io.BytesIO(bytes(bad)), "b"))


def test_unsupported_dataset_type_is_skipped_with_a_note(tmp_path):
    write_wds_classification(tmp_path / "ok", 6)
    write_wds_classification(tmp_path / "multi", 6)
    (tmp_path / "multi" / "dataset_type.txt").write_text("multilabel\n")
    tasks, notes = find_tasks(tmp_path)
    assert [t.key for t in tasks] == ["ok"]
    assert len(notes) == 1 and notes[0].startswith("multi: skipped") and "multilabel" in notes[0]


def test_bench_plan_skips_methods_whose_input_the_pool_lacks(tmp_path):
    import pyarrow.parquet as pq

    root = tmp_path / "pool"
    write_tiny_pool(root, n=60, seed=1, samples_per_shard=30, with_npz=False)
    for f in (root / "metadata").glob("*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns(["clip_l14_similarity_score"]), f)
    (root / "truth.parquet").unlink()
    write_wds_classification(tmp_path / "eval" / "fm", 6)
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "experiments" / "run_all.py"), "--pool", str(root), "--eval",
                        str(tmp_path / "eval"), "--out", str(tmp_path / "out"), "--dry-run", "--rounds", "2"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "skip clip_l14_30: pool metadata has no clip_l14_similarity_score column" in out
    assert "skip oracle_clean: pool has no truth.parquet" in out
    assert "--method clip_b32_30 --seed 2" in out and "--method sf_t30r10_r2 --seed 0" in out
    # round 0 is shared: one sf_r1 arm, and the second mix's loop adopts the first's round 0
    assert "--method sf_r1 --seed 0" in out and "--method sf_t30r0_r1" not in out
    assert "--method sf_t30r0_r2 --seed 1" in out and "--samples-seen 25600" in out
    assert f"--round0-from {tmp_path / 'out' / 'loop' / 'sf_t30r10'}" in out
    assert "--method no_filter_eqc_r2 --seed 2" in out  # equal total compute: no filter + the loop's FLOPs
    assert "library's defaults, overriding --rounds 2" in out and "--steps" not in out  # what differs is named
    assert not (tmp_path / "out").exists()  # a dry run writes nothing

    # --only: a reduced bench runs no loop that none of its arms needs, and the equal-compute arm still needs it
    def plan(*only: str) -> str:
        r = subprocess.run([sys.executable, str(ROOT / "bench" / "experiments" / "run_all.py"), "--pool", str(root),
                            "--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "out"), "--dry-run",
                            "--rounds", "2", *only], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        return r.stdout

    reduced = plan("--only", "no_filter,random", "--no-equal-compute")
    assert "would run: sfcomp run " not in reduced and "no selected arm needs the self-filtering loop" in reduced
    assert "--method no_filter --seed 2" in reduced and "--method random_30 --seed 0" in reduced
    assert "--method clip_b32_30" not in reduced and "--method sf_" not in reduced
    assert "would run: sfcomp run " in plan("--only", "no_filter")  # no_filter_eqc_r2 needs the loop's FLOPs
    assert "would run: sfcomp run " in plan("--only", "sf_t30r0")
    # a prefix that names no arm (a typo) is refused before anything, not a bench that trains nothing
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "experiments" / "run_all.py"), "--pool", str(root),
                        "--eval", str(tmp_path / "eval"), "--out", str(tmp_path / "out"), "--rounds", "2",
                        "--only", "no_filter,orcale"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.startswith("error: --only: 'orcale' is the start of no arm's name (arms: ")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_standing_against_references_gap_closed_and_spread():
    from sfcomp.eval.compare import MethodRow, Run, separation, standing

    def row(method, vals):
        return MethodRow(method, [Run(method, s, 10, None, 100, {"fm": v}, v, "x", "") for s, v in enumerate(vals)])

    rows = [row("no_filter", [0.30, 0.30]), row("random_30", [0.20, 0.44]), row("clip_l14_30", [0.58, 0.60]),
            row("sf", [0.62, 0.64]), row("no_filter_eqc_r3", [0.50, 0.54]), row("oracle_clean", [0.70, 0.70])]
    md = standing(rows, "fm")
    assert md.splitlines()[0] == ("| method | fm | vs no_filter | vs random_30 | vs no_filter_eqc_r3 | "
                                  "vs clip_l14_30 | vs oracle_clean | gap no_filter -> oracle_clean closed |")
    sf = next(l for l in md.splitlines() if l.startswith("| sf "))
    # +0.33 over no_filter (spread 0.014: clear), +0.31 over random (spread 0.184: clear), +0.11 over the
    # equal-compute arm (spread 0.042: clear), +0.04 over clip (spread 0.028: clear), -0.07 below the oracle
    # (spread 0.014: clear), (0.63 - 0.30) / (0.70 - 0.30) = 82% of the gap
    assert sf == ("| sf | 0.630 ± 0.014 | +0.330 (clear) | +0.310 (clear) | +0.110 (clear) | +0.040 (clear) | "
                  "-0.070 (clear) | 82% |")
    rnd = next(l for l in md.splitlines() if l.startswith("| random_30 "))
    assert "+0.020 (within spread)" in rnd
    # floor and ceiling have no spread here: no separation figure
    assert separation(rows, "fm") is None and "pooled seed std" not in md
    rows[0] = row("no_filter", [0.28, 0.32])  # std 0.0283; oracle 0.69 / 0.71, std 0.0141
    rows[-1] = row("oracle_clean", [0.69, 0.71])
    # gap 0.40 over sqrt((0.0283^2 + 0.0141^2) / 2) = 0.0224: 17.9
    assert abs(separation(rows, "fm") - 0.40 / ((0.02 ** 2 * 2 + 0.01 ** 2 * 2) / 2) ** 0.5) < 1e-9
    assert standing(rows, "fm").splitlines()[-1] == "- no_filter -> oracle_clean gap / pooled seed std: 17.9"
    assert separation(rows[:-1], "fm") is None  # no ceiling
    assert standing(rows[1:], "fm") == ""  # no floor, no table
    # a single seed has no spread: its differences are never called clear
    one = standing(rows + [row("sf_one_seed", [0.9])], "fm").splitlines()
    assert next(l for l in one if l.startswith("| sf_one_seed ")).split(" | ")[2] == "+0.600 (one seed: no spread)"


def test_table_notes_unequal_samples_seen_but_exempts_the_equal_compute_arm():
    from sfcomp.eval.compare import MethodRow, Run, is_equal_compute, table

    def row(method, seen):
        return MethodRow(method, [Run(method, s, 10, None, n, {"fm": 0.5}, 0.5, "x", "") for s, n in enumerate(seen)])

    assert is_equal_compute("no_filter_eqc") and is_equal_compute("no_filter_eqc_r3")
    assert not is_equal_compute("no_filter") and not is_equal_compute("sf_eqcx")
    base = [row("no_filter", [25600, 25600]), row("sf_r1", [25600])]
    md = table(base + [row("no_filter_eqc_r1", [227210])])
    assert "- samples seen: 25,600\n" in md and "NOT equal" not in md
    assert "- equal-compute arms, trained longer on purpose (the loop's compute in samples): no_filter_eqc_r1 227,210" in md
    # any other arm that saw other samples is still flagged
    assert "samples seen: 12,800, 25,600 (NOT equal across runs: not comparable)" in table(base + [row("x", [12800])])


@pytest.mark.parametrize("results, run_json, problem", [
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": NaN}}', None,
     "line 1: metric 'main_metric' of x is nan, not a finite number"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": "0.5"}}', None, "not a finite number"),
    ('[0.5]', None, "line 1: not a JSON object (list)"),
    ('{"key": "x", "metrics": {"main_metric": 0.5}}', None, "line 1: no 'dataset' string"),
    ('{"key": "x", "dataset": "x", "metrics": 0.5}', None, "line 1: no 'metrics' object"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": 0.5}}', "[1]", "not a JSON object (list)"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": 0.5}}', '{"method": 5}',
     "method is 5, expected a non-empty string (or null)"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": 0.5}}', '{"seed": "a"}', "seed is 'a', expected an integer"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": 0.5}}', '{"clean_precision": 1.5}',
     "clean_precision is 1.5, expected a number in [0, 1]"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": 0.5}}', '{"subset_size": -1}', "subset_size is -1"),
    ('{"key": "x", "dataset": "x", "metrics": {"main_metric": 0.5}}', '{"samples_seen": true}', "samples_seen is True"),
])
def test_compare_refuses_malformed_results_in_one_line(tmp_path, results, run_json, problem):
    import _e_harness as H

    run = tmp_path / "m" / "seed0"
    run.mkdir(parents=True)
    (run / "eval_results.jsonl").write_text(results + "\n")
    bad = run / "eval_results.jsonl"
    if run_json is not None:
        (run / "run.json").write_text(run_json)
        bad = run / "run.json"
    H.assert_one_line_error(H.cli("compare", tmp_path / "m", "--md", tmp_path / "t.md"), bad, problem)
    assert not (tmp_path / "t.md").exists()


def _two_runs(tmp_path: Path) -> list[Path]:
    runs = []
    for name, v in (("a", 0.5), ("b", 0.6)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval_results.jsonl").write_text(json.dumps(
            {"key": "x", "dataset": "x", "metrics": {"main_metric": v}}) + "\n")
        runs.append(tmp_path / name)
    return runs


@pytest.mark.parametrize("args, bad, problem", [
    (["--md", "notes.md"], "notes.md", "--md names an existing file that is not a markdown table written by compare"),
    (["--png", "notes.md"], "notes.md", "--png names an existing file that is not a PNG"),
    (["--md", "t.out", "--png", "t.out"], "t.out", "--md and --png name the same file"),
    (["--order", "a,nope"], None, "--order names 'nope', which no run has (methods: a, b)"),
    (["a"], "a", "the same run as a, given twice (it would count as two seeds)"),
    (["."], "a", "the same run as a, given twice"),  # the folder holds a again
])
def test_compare_refuses_outputs_it_did_not_write_and_runs_given_twice(tmp_path, monkeypatch, args, bad, problem):
    import _e_harness as H

    _two_runs(tmp_path)
    (tmp_path / "notes.md").write_text("my notes\n")
    monkeypatch.chdir(tmp_path)
    H.assert_one_line_error(H.cli("compare", "a", "b", *args), bad, problem)
    assert (tmp_path / "notes.md").read_text() == "my notes\n" and not (tmp_path / "t.out").exists()


def test_compare_replaces_its_own_table_and_plot(tmp_path):
    runs = _two_runs(tmp_path)
    md = compare(runs, tmp_path / "t.md", tmp_path / "t.png")
    assert compare(runs, tmp_path / "t.md", tmp_path / "t.png") == md == (tmp_path / "t.md").read_text()


def _saved_checkpoint(path: Path) -> Path:
    import torch

    torch.save({"state_dict": {"w": torch.zeros(4096)}}, path)
    return path


@pytest.mark.parametrize("make,problem", [
    (lambda p: p.write_bytes(_saved_checkpoint(p).read_bytes()[:3000]), "truncated or damaged checkpoint"),
    (lambda p: np.save(p, np.zeros(3, np.float32)), "not a torch checkpoint"),  # open_clip reads .npy as big_vision
    (lambda p: p.write_bytes(b""), "not a torch checkpoint"),
    (_saved_checkpoint, "cannot load as ViT-B-32"),  # a torch file, but not this model's weights
])
def test_evaluate_refuses_a_bad_checkpoint_with_one_line(tmp_path, make, problem):
    import _e_harness as H

    ckpt = tmp_path / "c.pt"
    make(ckpt)
    ckpt = ckpt if ckpt.exists() else ckpt.with_suffix(".pt.npy")
    (tmp_path / "eval" / "task" / "test").mkdir(parents=True)
    (tmp_path / "eval" / "task" / "test" / "nshards.txt").write_text("1\n")
    r = H.cli("evaluate", "--checkpoint", ckpt, "--model", "ViT-B-32", "--eval", tmp_path / "eval",
              "--out", tmp_path / "out")
    H.assert_one_line_error(r, ckpt, problem)
    assert not (tmp_path / "out").exists()


def test_evaluate_without_model_and_no_info_json_is_one_line(tmp_path, monkeypatch):
    import _e_harness as H

    monkeypatch.chdir(tmp_path)  # a bare relative name: its parents used to run out (IndexError)
    _saved_checkpoint(tmp_path / "c.pt")
    (tmp_path / "eval").mkdir()
    H.assert_one_line_error(H.cli("evaluate", "--checkpoint", "c.pt", "--eval", "eval", "--out", "out"), "c.pt",
                            "no info.json beside this checkpoint: pass --model")


def test_reshard_input_that_is_a_file_says_so(tmp_path):
    import _e_harness as H

    sub = tmp_path / "s.npy"
    U.write_subset(sub, U.hex_to_uids(["0" * 31 + "1"]))
    H.assert_one_line_error(H.cli("reshard", "-i", sub, "-s", sub, "-o", tmp_path / "out"), sub,
                            "is a file, expected a pool folder or a folder of shards")
    assert not (tmp_path / "out").exists()


def test_reshard_shard_size_below_one_names_the_option(tmp_path):
    with pytest.raises(BadInputError, match=r"^--shard-size must be >= 1, got 0$"):
        R.reshard(tmp_path, tmp_path / "s.npy", tmp_path / "out", shard_size=0, log=lambda m: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["run {a,b}", "back\\slash}", "plain"])
def test_a_training_folder_is_read_as_itself_whatever_its_name(tmp_path, name):
    """The shard pattern train-eval hands open_clip expands (webdataset's expand_urls, as open_clip's trainer
    calls it) to exactly the folder's shards: braces and backslashes in the folder's own name are escaped, not
    expanded into other folders."""
    from webdataset.shardlists import expand_urls

    from sfcomp.eval.train import train_data_pattern

    folder = tmp_path / name / "data"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"{i:08d}.tar").write_bytes(b"")
    assert expand_urls(train_data_pattern(folder)) == [str(folder / f"{i:08d}.tar") for i in range(3)]
    (folder / "meta.json").write_text(json.dumps({"output_shard_count": 2, "output_shard_format": "{:08d}.tar"}))
    assert expand_urls(train_data_pattern(folder)) == [str(folder / f"{i:08d}.tar") for i in range(2)]


def test_a_training_folder_whose_name_holds_a_double_colon_is_refused(tmp_path):
    from sfcomp.eval.train import train_data_pattern

    folder = tmp_path / "a::b"
    folder.mkdir()
    (folder / "00000000.tar").write_bytes(b"")
    with pytest.raises(BadInputError, match="open_clip reads '::' in training data as a list separator"):
        train_data_pattern(folder)
    # train-eval refuses it before resharding anything
    from click.testing import CliRunner

    from sfcomp.cli import main as cli

    pool = tmp_path / "pool"
    write_tiny_pool(pool, n=20, seed=1, samples_per_shard=20, with_npz=False)
    from sfcomp.pool import read_uids

    U.write_subset(tmp_path / "s.npy", read_uids(str(next((pool / "metadata").glob("*.parquet"))))[:5])
    write_wds_classification(tmp_path / "eval" / "fm", 4)
    r = CliRunner().invoke(cli, ["train-eval", "--subset", str(tmp_path / "s.npy"), "--pool", str(pool), "--eval",
                                 str(tmp_path / "eval"), "--out", str(tmp_path / "x::y")])
    assert r.exit_code == 2 and r.output.strip().startswith(f"error: {tmp_path / 'x::y' / 'data'}: open_clip reads")
    assert not (tmp_path / "x::y").exists()

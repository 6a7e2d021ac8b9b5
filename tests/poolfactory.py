"""Write tiny pools in the real DataComp / img2dataset on-disk layout, for tests.

Images are real Fashion-MNIST photos (Debian package dataset-fashion-mnist), JPEG-encoded at 32x32 RGB. Half the
samples get a caption of their own class, half a caption of another class (misaligned), so a model has something
real to learn and a filter something real to remove. truth.parquet records which is which.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np

FMNIST_DIR = Path(os.environ.get("SFCOMP_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
TEMPLATES = ["a photo of a {}", "{} for sale", "buy this {} online", "new {} in stock", "my favourite {}",
             "product shot of a {}", "cheap {} free shipping", "the {} i bought"]


def load_fashion_mnist(split: str = "train", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FMNIST_DIR / f"{prefix}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels


def _jpeg(gray28: np.ndarray, size: int) -> bytes:
    from PIL import Image

    im = Image.fromarray(gray28, "L").convert("RGB").resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_tiny_pool(root: str | os.PathLike, n: int = 200, seed: int = 0, samples_per_shard: int = 100,
                    n_metadata_files: int = 2, fail_frac: float = 0.1, image_size: int = 32,
                    with_npz: bool = True) -> dict:
    """Write a pool of `n` rows at `root`; about `fail_frac` of rows are 'failed downloads' (metadata only).

    Returns {"uids": list of hex uids (metadata order), "present": set of downloaded uids, "clean": bool array}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "shards").mkdir(parents=True, exist_ok=True)
    images, labels = load_fashion_mnist("train", limit=None)
    idx = rng.choice(len(images), size=n, replace=False)
    images, labels = images[idx], labels[idx].astype(int)
    uids = [rng.bytes(16).hex() for _ in range(n)]
    clean = rng.random(n) < 0.5
    caption_cls = np.where(clean, labels, (labels + rng.integers(1, 10, n)) % 10)
    texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(CLASSES[c]) for c in caption_cls]
    jpegs = [_jpeg(im, image_size) for im in images]
    ok = rng.random(n) >= fail_frac
    urls = [f"http://127.0.0.1:1/img/{i}.jpg" for i in range(n)]

    # metadata: DataComp's columns, split into n_metadata_files parquet files (+ row-aligned npz)
    bounds = np.linspace(0, n, n_metadata_files + 1).astype(int)
    for j in range(n_metadata_files):
        a, b = bounds[j], bounds[j + 1]
        stem = rng.bytes(16).hex()
        table = pa.table({
            "uid": pa.array(uids[a:b], pa.string()),
            "url": pa.array(urls[a:b], pa.string()),
            "text": pa.array(texts[a:b], pa.string()),
            "original_width": pa.array([image_size] * (b - a), pa.int64()),
            "original_height": pa.array([image_size] * (b - a), pa.int64()),
            "clip_b32_similarity_score": pa.array(rng.random(b - a).astype(np.float32)),
            "clip_l14_similarity_score": pa.array(rng.random(b - a).astype(np.float32)),
            "face_bboxes": pa.array([[] for _ in range(b - a)], pa.list_(pa.list_(pa.float64()))),
            "sha256": pa.array([hashlib.sha256(jpegs[i]).hexdigest() for i in range(a, b)], pa.string()),
        })
        pq.write_table(table, root / "metadata" / f"{stem}.parquet")
        if with_npz:
            def unit(d):
                x = rng.standard_normal((b - a, d)).astype(np.float32)
                return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
            np.savez(root / "metadata" / f"{stem}.npz", b32_img=unit(512), b32_txt=unit(512),
                     l14_img=unit(768), l14_txt=unit(768))

    # shards: img2dataset's webdataset writer layout
    for shard_id, start in enumerate(range(0, n, samples_per_shard)):
        rows = range(start, min(start + samples_per_shard, n))
        t0 = time.time()
        statuses, keys = [], []
        with tarfile.open(root / "shards" / f"{shard_id:08d}.tar", "w") as tf:
            for i, row in enumerate(rows):
                key = f"{shard_id:08d}{i:04d}"  # img2dataset: 8-digit shard id + 4-digit index
                keys.append(key)
                if not ok[row]:
                    statuses.append("failed_to_download")
                    continue
                statuses.append("success")
                meta = {"uid": uids[row], "url": urls[row], "caption": texts[row], "key": key,
                        "status": "success", "error_message": None, "width": image_size, "height": image_size,
                        "original_width": image_size, "original_height": image_size, "exif": "{}",
                        "sha256": hashlib.sha256(jpegs[row]).hexdigest(), "face_bboxes": []}
                for ext, data in (("jpg", jpegs[row]), ("txt", texts[row].encode()),
                                  ("json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    info.mtime = 0
                    tf.addfile(info, io.BytesIO(data))
        pq.write_table(pa.table({
            "uid": [uids[r] for r in rows], "url": [urls[r] for r in rows], "caption": [texts[r] for r in rows],
            "key": keys, "status": statuses,
            "error_message": [None if s == "success" else "HTTP Error 404" for s in statuses],
            "width": [image_size if s == "success" else None for s in statuses],
            "height": [image_size if s == "success" else None for s in statuses],
        }), root / "shards" / f"{shard_id:08d}.parquet")
        succ = statuses.count("success")
        stats = {"count": len(statuses), "successes": succ, "failed_to_download": len(statuses) - succ,
                 "failed_to_resize": 0, "duration": time.time() - t0, "start_time": t0, "end_time": time.time(),
                 "status_dict": {"success": succ, "HTTP Error 404": len(statuses) - succ}}
        (root / "shards" / f"{shard_id:08d}_stats.json").write_text(json.dumps(stats))

    pq.write_table(pa.table({"uid": uids, "clean": clean, "noise_type": np.where(clean, "clean", "misaligned"),
                             "class": labels}), root / "truth.parquet")
    return {"uids": uids, "present": {u for u, o in zip(uids, ok) if o}, "clean": clean, "labels": labels}

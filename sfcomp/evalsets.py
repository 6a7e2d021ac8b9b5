"""Evaluation sets in clip_benchmark's `wds` layout (what DataComp's evaluate.py reads).

    TASK/test/0.tar, 1.tar, ...   KEY.png + KEY.cls (class index)  |  retrieval: KEY.png + KEY.txt (captions, one a line)
    TASK/test/nshards.txt         number of shards
    TASK/classnames.txt           one class name a line (classification)
    TASK/zeroshot_classification_templates.txt   one template a line, {c} = class name
    TASK/dataset_type.txt         "retrieval" for retrieval sets
"""
from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_open


def _png(rgb_or_gray: np.ndarray) -> bytes:  # RGB, as the JPEG/PNG readers of clip_benchmark expect
    from PIL import Image

    im = Image.fromarray(rgb_or_gray)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def _write_shards(split_dir: Path, members: Sequence[dict[str, bytes]], per_shard: int) -> int:
    split_dir.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(members) // per_shard))
    for s in range(n_shards):
        with atomic_open(split_dir / f"{s}.tar", "wb") as f, tarfile.open(fileobj=f, mode="w") as tf:
            for i in range(s * per_shard, min(len(members), (s + 1) * per_shard)):
                key = f"s{i:07d}"
                for ext, data in members[i].items():
                    _add(tf, f"{key}.{ext}", data)
    with atomic_open(split_dir / "nshards.txt", "w") as f:
        f.write(f"{n_shards}\n")
    return n_shards


def write_classification_set(task_dir: str | os.PathLike, images: np.ndarray, labels: np.ndarray,
                             classnames: Sequence[str], templates: Sequence[str], per_shard: int = 5000) -> None:
    """A zero-shot classification set of `images` ((N,H,W) gray or (N,H,W,3) RGB uint8, or a sequence of them)."""
    task_dir = Path(task_dir)
    members = [{"png": _png(images[i]), "cls": str(int(labels[i])).encode()} for i in range(len(images))]
    _write_shards(task_dir / "test", members, per_shard)
    with atomic_open(task_dir / "classnames.txt", "w") as f:
        f.write("".join(f"{c}\n" for c in classnames))
    with atomic_open(task_dir / "zeroshot_classification_templates.txt", "w") as f:
        f.write("".join(f"{t}\n" for t in templates))


def write_retrieval_set(task_dir: str | os.PathLike, images: np.ndarray, captions: Sequence[Sequence[str]],
                        per_shard: int = 5000) -> None:
    """A retrieval set: each image with its captions (one or more)."""
    task_dir = Path(task_dir)
    members = [{"png": _png(images[i]), "txt": "\n".join(captions[i]).encode()} for i in range(len(images))]
    _write_shards(task_dir / "test", members, per_shard)
    with atomic_open(task_dir / "dataset_type.txt", "w") as f:
        f.write("retrieval\n")

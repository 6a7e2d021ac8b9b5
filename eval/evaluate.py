"""Zero-shot classification and retrieval of a CLIP checkpoint on clip_benchmark `wds`-format eval sets.

Task folders (clip_benchmark's build_wds_dataset layout):
    TASK/test/nshards.txt, TASK/test/0.tar ... (image as webp/png/jpg/jpeg + `cls`; retrieval: image + `txt`)
    TASK/classnames.txt, TASK/zeroshot_classification_templates.txt ({c} = class name)
    TASK/dataset_type.txt ("retrieval"; absent = classification)
An eval dir is either DataComp's download (DATA_DIR/wds_<key, / -> ->_test, tasks and main metrics from
DataComp's tasklist) or any folder of task folders (main metric: acc1, or mean_recall@1 for retrieval).

The metrics are clip_benchmark 1.4.0's own functions (the release DataComp pins; installed with --no-deps, since
its metadata pins torch<2): class embedding = mean of the L2-normalised template embeddings, re-normalised;
logits = 100 * image @ classes; acc1, acc5 (None under 5 classes), mean_per_class_recall (sklearn's balanced
accuracy); retrieval recall@1/5/10 each way by its recall_at_k, and mean_recall@1 = their mean at k=1, as DataComp.
tests/test_clip_benchmark_equality.py checks the whole task evaluation against clip_benchmark's evaluate().
Output: eval_results.jsonl, one line per task in DataComp's format {"key", "dataset", "metrics": {...,
"main_metric"}} plus "eval_code" (this evaluator's version), written task by task (a rerun skips finished tasks),
and eval_summary.json with the mean of main metrics.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np

from sfcomp import __version__ as SFCOMP_VERSION
from sfcomp.atomic import atomic_open, write_json
from sfcomp.errors import BadInputError

from .reshard import split_member

TASKS_FILE = Path(__file__).parent / "configs" / "datacomp_tasks.json"
EVAL_CODE = f"sfcomp-eval {SFCOMP_VERSION} (clip_benchmark 1.4.0 metric functions)"
IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")
# DataComp evaluates these task families with its own loaders (HF datasets, WILDS / fairness group metrics).
UNSUPPORTED_PREFIXES = ("retrieval/", "misc/", "wilds/", "fairness/")


@dataclass
class Task:
    key: str
    name: str
    path: Path
    main_metric: str
    kind: str  # "classification" | "retrieval"


def datacomp_tasks() -> list[dict]:
    return json.loads(TASKS_FILE.read_text())["tasks"]


def _read_text(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _is_task_dir(p: Path) -> bool:
    return (p / "test" / "nshards.txt").exists()


def _kind(task_dir: Path) -> str:
    t = (_read_text(task_dir / "dataset_type.txt") or "classification").strip().lower()
    if t not in ("classification", "retrieval"):
        raise BadInputError(task_dir / "dataset_type.txt", f"dataset type {t!r} is not supported "
                                                           "(classification or retrieval)")
    return t


def find_tasks(eval_dir: str | os.PathLike, only: Sequence[str] | None = None) -> tuple[list[Task], list[str]]:
    """(tasks to evaluate, notes on what was skipped) for an eval dir (see module doc)."""
    root = Path(eval_dir)
    if not root.is_dir():
        raise BadInputError(root, "eval folder does not exist")
    notes: list[str] = []
    tasks: list[Task] = []
    if _is_task_dir(root):
        kind = _kind(root)
        tasks.append(Task(root.name, root.name, root, "mean_recall@1" if kind == "retrieval" else "acc1", kind))
    elif any(p.name.startswith("wds_") and p.name.endswith("_test") for p in root.iterdir()):
        for t in datacomp_tasks():
            folder = root / f"wds_{t['key'].replace('/', '-')}_test"
            if t["key"].startswith(UNSUPPORTED_PREFIXES):
                notes.append(f"{t['name']} ({t['key']}): not evaluated here (DataComp uses a special loader / "
                             "group metrics: run DataComp's evaluate.py for the full 38-task average)")
                continue
            if not _is_task_dir(folder):
                notes.append(f"{t['name']} ({t['key']}): not downloaded ({folder} missing)")
                continue
            try:
                tasks.append(Task(t["key"], t["name"], folder, t["main_metric"], _kind(folder)))
            except BadInputError as e:
                notes.append(f"{t['name']} ({t['key']}): skipped: {e}")
    else:
        for p in sorted(root.iterdir()):
            if p.is_dir() and _is_task_dir(p):
                try:
                    kind = _kind(p)
                except BadInputError as e:
                    notes.append(f"{p.name}: skipped: {e}")
                    continue
                tasks.append(Task(p.name, p.name, p, "mean_recall@1" if kind == "retrieval" else "acc1", kind))
    if only:
        missing = [o for o in only if o not in {t.key for t in tasks} | {t.name for t in tasks}]
        if missing:
            raise BadInputError(root, f"no eval task {missing[0]!r} here (found: "
                                      f"{', '.join(t.key for t in tasks) or 'none'})")
        tasks = [t for t in tasks if t.key in only or t.name in only]
    if not tasks:
        raise BadInputError(root, "no clip_benchmark wds eval sets found (TASK/test/nshards.txt)")
    return tasks, notes


def iter_wds_samples(task_dir: Path, split: str = "test") -> Iterator[tuple[bytes, bytes]]:
    """(image bytes, label-or-captions bytes) per sample, in shard order; members grouped by key."""
    nshards_file = task_dir / split / "nshards.txt"
    try:
        n = int(nshards_file.read_text().strip())
    except (OSError, ValueError) as e:
        raise BadInputError(nshards_file, f"unreadable shard count ({e})") from None
    label_ext = "txt" if _kind(task_dir) == "retrieval" else "cls"
    for i in range(n):
        tar = task_dir / split / f"{i}.tar"
        if not tar.exists():
            raise BadInputError(tar, f"shard missing (nshards.txt says {n})")
        sample: dict[str, bytes] = {}
        key = None
        try:
            with tarfile.open(tar, "r|*") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    k, ext = split_member(m.name)
                    if k is None:
                        continue
                    if k != key:
                        if key is not None:
                            yield _pick(sample, label_ext, tar, key)
                        key, sample = k, {}
                    sample[ext] = tf.extractfile(m).read()
        except tarfile.TarError as e:
            raise BadInputError(tar, f"corrupt eval shard ({e})") from None
        if key is not None:
            yield _pick(sample, label_ext, tar, key)


def _pick(sample: dict[str, bytes], label_ext: str, tar: Path, key: str) -> tuple[bytes, bytes]:
    img = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
    if img is None or label_ext not in sample:
        raise BadInputError(tar, f"sample {key} lacks an image ({'/'.join(IMAGE_EXTS)}) or its {label_ext!r}")
    return img, sample[label_ext]


def _batches(task: Task, transform, batch_size: int, cache_dir: str | os.PathLike | None = None):
    """(image tensor batch, label strings) over a task. With `cache_dir`, the preprocessed images of a task
    are stored once per (task files, transform) and reused by later evaluations (the bench's many runs)."""
    import torch

    if cache_dir is None:
        yield from _decode_batches(task, transform, batch_size)
        return
    tars = sorted((task.path / "test").glob("*.tar"))
    key = hashlib.sha1(repr([str(task.path.resolve()), repr(transform)] +
                            [(t.name, t.stat().st_size, t.stat().st_mtime_ns) for t in tars]).encode()).hexdigest()
    arr_path, lab_path = Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.labels.json"
    if not (arr_path.exists() and lab_path.exists()):
        chunks, labels = [], []
        for x, lab in _decode_batches(task, transform, batch_size):
            chunks.append(x.numpy())
            labels += lab
        with atomic_open(arr_path, "wb") as f:
            np.save(f, np.concatenate(chunks))
        with atomic_open(lab_path, "w") as f:
            json.dump(labels, f)
    images = np.load(arr_path, mmap_mode="r")
    labels = json.loads(lab_path.read_text())
    for i in range(0, len(labels), batch_size):
        yield torch.from_numpy(np.array(images[i:i + batch_size])), labels[i:i + batch_size]


def _decode_batches(task: Task, transform, batch_size: int):
    import torch
    from PIL import Image

    imgs, labels = [], []
    for img, lab in iter_wds_samples(task.path):
        imgs.append(transform(Image.open(io.BytesIO(img)).convert("RGB")))
        labels.append(lab.decode("utf-8"))
        if len(imgs) == batch_size:
            yield torch.stack(imgs), labels
            imgs, labels = [], []
    if imgs:
        yield torch.stack(imgs), labels


def zero_shot_classifier(model, tokenizer, classnames: Sequence[str], templates: Sequence[str], device):
    """(D, C) class embeddings: per class, mean of the normalised template embeddings, re-normalised."""
    import torch
    import torch.nn.functional as F

    cols = []
    with torch.no_grad():
        for c in classnames:
            emb = F.normalize(model.encode_text(tokenizer([t.format(c=c) for t in templates]).to(device)), dim=-1)
            mean = emb.mean(dim=0)
            cols.append(mean / mean.norm())
    return torch.stack(cols, dim=1)


def _clip_benchmark(module: str):
    """clip_benchmark's metrics module, or one line saying how to install it (its metadata pins torch<2)."""
    import importlib

    from sfcomp.errors import SfcompError

    try:
        return importlib.import_module(f"clip_benchmark.metrics.{module}")
    except ImportError as e:
        raise SfcompError(f"clip_benchmark 1.4.0 is needed for the eval metrics ({e}): "
                          "pip install --no-deps clip_benchmark==1.4.0 scikit-learn") from None


def classification_metrics(logits: np.ndarray, target: np.ndarray) -> dict:
    """acc1, acc5 (None under 5 classes) and mean_per_class_recall, by clip_benchmark 1.4.0's own functions."""
    import torch

    zsc = _clip_benchmark("zeroshot_classification")
    accuracy, balanced_accuracy_score = zsc.accuracy, zsc.balanced_accuracy_score

    logits_t, target_t = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(target, dtype=torch.long)
    if logits_t.shape[1] >= 5:
        acc1, acc5 = accuracy(logits_t, target_t, topk=(1, 5))
    else:
        (acc1,), acc5 = accuracy(logits_t, target_t, topk=(1,)), None
    pred = logits_t.argmax(axis=1)
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": float(balanced_accuracy_score(target_t, pred))}


def retrieval_metrics(text_emb: np.ndarray, image_emb: np.ndarray, text_image: np.ndarray,
                      ks: Sequence[int] = (1, 5, 10)) -> dict:
    """image_retrieval_recall@k (per text: its image in the top k images) and text_retrieval_recall@k (per
    image: one of its texts in the top k texts), by clip_benchmark 1.4.0's recall_at_k (its tie-breaking
    included), plus DataComp's mean_recall@1. k is capped at the number of candidates."""
    import torch

    recall_at_k = _clip_benchmark("zeroshot_retrieval").recall_at_k

    scores = torch.as_tensor(text_emb, dtype=torch.float32) @ torch.as_tensor(image_emb, dtype=torch.float32).T
    n_text, n_img = scores.shape
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(n_text), torch.as_tensor(text_image, dtype=torch.long)] = True
    out = {}
    for k in ks:
        hit_img = recall_at_k(scores, positive, min(k, n_img)) > 0
        hit_txt = recall_at_k(scores.T, positive.T, min(k, n_text)) > 0
        out[f"image_retrieval_recall@{k}"] = hit_img.float().mean().item()
        out[f"text_retrieval_recall@{k}"] = hit_txt.float().mean().item()
    out["mean_recall@1"] = 0.5 * (out["image_retrieval_recall@1"] + out["text_retrieval_recall@1"])
    return out


def evaluate_task(model, transform, tokenizer, task: Task, device, batch_size: int = 256,
                  cache_dir: str | os.PathLike | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    if task.kind == "retrieval":
        img_embs, txt_embs, owner = [], [], []
        seen = 0
        with torch.no_grad():
            for images, caps in _batches(task, transform, batch_size, cache_dir):
                img_embs.append(F.normalize(model.encode_image(images.to(device)), dim=-1).cpu().numpy())
                texts = [[t for t in c.splitlines() if t.strip()] for c in caps]
                flat = [t for ts in texts for t in ts]
                owner += [seen + i for i, ts in enumerate(texts) for _ in ts]
                if flat:
                    txt_embs.append(F.normalize(model.encode_text(tokenizer(flat).to(device)), dim=-1).cpu().numpy())
                seen += len(caps)
        if not txt_embs:
            raise BadInputError(task.path, "retrieval set has no captions")
        return retrieval_metrics(np.concatenate(txt_embs), np.concatenate(img_embs), np.array(owner))
    classnames = [l.strip() for l in (_read_text(task.path / "classnames.txt") or "").splitlines() if l.strip()]
    templates = [l.strip() for l in (_read_text(task.path / "zeroshot_classification_templates.txt") or "")
                 .splitlines() if l.strip()]
    if not classnames or not templates:
        raise BadInputError(task.path, "classification set needs classnames.txt and "
                                       "zeroshot_classification_templates.txt")
    classifier = zero_shot_classifier(model, tokenizer, classnames, templates, device)
    logits, target = [], []
    with torch.no_grad():
        for images, labels in _batches(task, transform, batch_size, cache_dir):
            feats = F.normalize(model.encode_image(images.to(device)), dim=-1)
            logits.append((100.0 * feats @ classifier).float().cpu().numpy())
            target += [int(x.strip()) for x in labels]
    target = np.array(target)
    if target.min() < 0 or target.max() >= len(classnames):
        raise BadInputError(task.path, f"class index {int(target.max())} out of range for "
                                       f"{len(classnames)} class names")
    return classification_metrics(np.concatenate(logits), target)


def check_checkpoint_file(checkpoint: str | os.PathLike) -> None:
    """Refuse what torch.save did not write, before open_clip reads it (it takes a .npy/.npz for big_vision
    weights, and a truncated zip fails deep in torch's reader)."""
    import zipfile

    path = Path(checkpoint)
    if not path.exists():
        raise BadInputError(checkpoint, "checkpoint does not exist")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":  # torch.save's zip format
        if not zipfile.is_zipfile(path):
            raise BadInputError(checkpoint, "truncated or damaged checkpoint (no zip central directory)")
    elif head[:1] != b"\x80":  # torch.save's legacy pickle format starts with the pickle protocol byte
        raise BadInputError(checkpoint, "not a torch checkpoint (a file written by torch.save, e.g. "
                                        "checkpoints/epoch_N.pt)")


def load_model(checkpoint: str | os.PathLike, model_name: str, device: str | None = None):
    """(model, eval transform, tokenizer, device) from a local open_clip checkpoint; never touches a hub."""
    import open_clip
    import torch

    from .scales import register_models

    register_models()
    check_checkpoint_file(checkpoint)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    try:
        model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint))
    except RuntimeError as e:  # torch's reader on a damaged file, or a state dict of another architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(checkpoint, f"cannot load as {model_name}: {first}") from None
    model.eval().to(device)
    return model, transform, open_clip.get_tokenizer(model_name), device


def read_results(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BadInputError(path, f"line {i + 1} is not JSON ({e})") from None
            problem = result_row_problem(row)
            if problem:
                raise BadInputError(path, f"line {i + 1}: {problem}")
            rows.append(row)
    return rows


def result_row_problem(row) -> str | None:
    """What makes one eval_results.jsonl row unusable (None if nothing): the fields `evaluate` writes, and a
    main metric that is a finite number (or null, for a task without one)."""
    if not isinstance(row, dict):
        return f"not a JSON object ({type(row).__name__})"
    for key in ("key", "dataset"):
        if not isinstance(row.get(key), str):
            return f"no {key!r} string"
    if not isinstance(row.get("metrics"), dict):
        return "no 'metrics' object"
    for name, v in row["metrics"].items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            return f"metric {name!r} of {row['dataset']} is {v!r}, not a finite number"
    return None


def average_main_metric(rows: Sequence[dict]) -> float | None:
    vals = [r["metrics"]["main_metric"] for r in rows if r["metrics"].get("main_metric") is not None]
    return float(np.mean(vals)) if vals else None


def evaluate(checkpoint: str | os.PathLike, model_name: str, eval_dir: str | os.PathLike,
             out_dir: str | os.PathLike, tasks: Sequence[str] | None = None, batch_size: int = 256,
             device: str | None = None, cache_dir: str | os.PathLike | None = None, log=print) -> dict:
    """Evaluate on every task of `eval_dir`; append to OUT/eval_results.jsonl; write OUT/eval_summary.json.
    `cache_dir`: keep preprocessed eval images there for later evaluations (see _batches)."""
    from sfcomp.distributed import check_device

    check_device(device)
    if batch_size < 1:
        raise BadInputError(None, f"--batch-size must be >= 1, got {batch_size}")
    found, notes = find_tasks(eval_dir, tasks)
    out = Path(out_dir)
    results_path = out / "eval_results.jsonl"
    ckpt = Path(checkpoint)
    ident = {"checkpoint": str(ckpt.resolve()), "model": model_name,
             "size": ckpt.stat().st_size if ckpt.exists() else None,
             "mtime_ns": ckpt.stat().st_mtime_ns if ckpt.exists() else None}
    prev = json.loads((out / "eval_summary.json").read_text()) if (out / "eval_summary.json").exists() else {}
    # finished tasks are reused only for the same checkpoint file and evaluator version (as DataComp's info.pkl check)
    done = {r["key"]: r for r in read_results(results_path) if r.get("eval_code") == EVAL_CODE} \
        if prev.get("checkpoint_id") == ident else {}
    todo = [t for t in found if t.key not in done]
    if todo:
        model, transform, tokenizer, device = load_model(checkpoint, model_name, device)
    for t in todo:
        t0 = time.time()
        metrics = evaluate_task(model, transform, tokenizer, t, device, batch_size, cache_dir)
        metrics["main_metric"] = metrics.get(t.main_metric)
        row = {"key": t.key, "dataset": t.name, "metrics": metrics, "eval_code": EVAL_CODE}
        done[t.key] = row
        _rewrite(results_path, [done[x.key] for x in found if x.key in done])
        write_json(out / "eval_summary.json", {"checkpoint_id": ident, "partial": True})
        log(f"{t.name}: {t.main_metric} = {metrics['main_metric']:.4f} ({time.time() - t0:.1f}s)")
    rows = [done[t.key] for t in found]
    summary = {"checkpoint": str(checkpoint), "model": model_name, "eval_dir": str(eval_dir),
               "n_tasks": len(rows), "average": average_main_metric(rows),
               "main_metrics": {r["dataset"]: r["metrics"]["main_metric"] for r in rows},
               "eval_code": EVAL_CODE, "skipped": notes, "checkpoint_id": ident}
    write_json(out / "eval_summary.json", summary)
    return summary


def _rewrite(path: Path, rows: Sequence[dict]) -> None:
    with atomic_open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")

"""sfcomp's zero-shot metrics (eval/evaluate.py) give the same numbers as clip_benchmark 1.4.0's own functions
(the release DataComp pins; installed with --no-deps, since its metadata pins torch<2) on the same checkpoint and
the same wds eval sets."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from test_eval import write_wds_classification, write_wds_retrieval

import clip_benchmark.metrics.zeroshot_classification as zsc
import clip_benchmark.metrics.zeroshot_retrieval as zsr

import _e_harness as H

pytestmark = H.requires_fashion_mnist


def _samples(task: Path) -> list[dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted((task / "test").glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = m.name.rsplit(".", 1)
                out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return [out[k] for k in sorted(out)]


class _Set(torch.utils.data.Dataset):
    def __init__(self, task: Path, transform, label_ext: str):
        from PIL import Image

        self.items = [(transform(Image.open(io.BytesIO(s.get("png") or s["jpg"])).convert("RGB")), s[label_ext])
                      for s in _samples(task)]
        self.classes = (task / "classnames.txt").read_text().split("\n")[:-1] if label_ext == "cls" else None
        self.label_ext = label_ext

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, lab = self.items[i]
        if self.label_ext == "cls":
            return img, int(lab)
        return img, [t for t in lab.decode().splitlines() if t.strip()]


def _collate_retrieval(batch):
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


@pytest.fixture(scope="module")
def model_and_sets(tmp_path_factory):
    import open_clip

    from sfcomp.eval.evaluate import load_model
    from sfcomp.eval.scales import register_models

    root = tmp_path_factory.mktemp("cb")
    register_models()
    torch.manual_seed(3)
    ckpt = root / "epoch_1.pt"
    torch.save({"state_dict": open_clip.create_model("sfcomp-ViT-tiny").state_dict()}, ckpt)
    write_wds_classification(root / "fmnist", 60)
    write_wds_retrieval(root / "fmnist_ret", 40)
    return load_model(ckpt, "sfcomp-ViT-tiny", "cpu"), root


def test_zero_shot_classification_equals_clip_benchmark(model_and_sets):
    from sfcomp.eval.evaluate import Task, evaluate_task

    (model, transform, tokenizer, device), root = model_and_sets
    task = Task("fmnist", "fmnist", root / "fmnist", "acc1", "classification")
    ours = evaluate_task(model, transform, tokenizer, task, device, batch_size=16)
    ds = _Set(task.path, transform, "cls")
    templates = (task.path / "zeroshot_classification_templates.txt").read_text().split("\n")[:-1]
    theirs = zsc.evaluate(model, torch.utils.data.DataLoader(ds, batch_size=16), tokenizer, ds.classes,
                          templates, device, amp=False)
    assert 0 < ours["acc1"] < 1  # a real, non-degenerate comparison
    for k in ("acc1", "acc5", "mean_per_class_recall"):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-9), k


def test_zero_shot_retrieval_equals_clip_benchmark(model_and_sets):
    from sfcomp.eval.evaluate import Task, evaluate_task

    (model, transform, tokenizer, device), root = model_and_sets
    task = Task("fmnist_ret", "fmnist_ret", root / "fmnist_ret", "mean_recall@1", "retrieval")
    ours = evaluate_task(model, transform, tokenizer, task, device, batch_size=16)
    loader = torch.utils.data.DataLoader(_Set(task.path, transform, "txt"), batch_size=16,
                                         collate_fn=_collate_retrieval)
    theirs = zsr.evaluate(model, loader, tokenizer, device, amp=False, recall_k_list=[1, 5, 10])
    assert 0 < ours["image_retrieval_recall@10"] < 1
    for k in (1, 5, 10):
        for kind in ("image", "text"):
            key = f"{kind}_retrieval_recall@{k}"
            assert ours[key] == pytest.approx(theirs[key], abs=1e-9), key

"""How well a demo pool's reference-CLIP scores separate clean from noisy samples, and its measured noise mix.

    .venv/bin/python bench/experiments/pool_quality.py data/demo

Prints JSON: per score column the AUROC (clean vs noisy), the clean share of the top 30% (DataComp's
CLIP-score fraction), the mean score per noise type; the reference models' zero-shot top-1 on the eval set; and
the noise mix over the metadata and over the downloaded samples. Reads truth.parquet: evaluation only.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def zero_shot(pool: Path) -> dict:
    import torch

    from sfcomp.model import tokenize
    from sfcomp.sources import fashion_mnist as F
    from sfcomp.sources.reference_clip import REFERENCE_PRESETS, embed, load_reference

    torch.set_num_threads(2)
    images, labels = F.load("test")
    templates = (pool / "eval/fashion_mnist/zeroshot_classification_templates.txt").read_text().splitlines()
    out = {}
    for arch in REFERENCE_PRESETS:
        model, tok, preset = load_reference(pool / "reference", arch)
        img, _ = embed(model, tok, preset, images, ["x"] * len(images))
        with torch.no_grad():
            cls = []
            for c in F.PROMPT_CLASSNAMES:
                t = torch.as_tensor(tokenize(tok, [tp.format(c=c) for tp in templates])).long()
                e = model.encode_text(t, normalize=True).mean(0)
                cls.append((e / e.norm()).numpy())
        pred = (img @ np.stack(cls).T).argmax(1)
        out[arch] = round(float((pred == labels).mean()), 4)
    return out


def main() -> None:
    pool = Path(sys.argv[1])
    from sfcomp.pool import Pool

    p = Pool(pool)
    meta = p.read_metadata(["uid", "clip_b32_similarity_score", "clip_l14_similarity_score"]).to_pandas()
    truth = pd.read_parquet(pool / "truth.parquet")
    df = meta.merge(truth, on="uid", how="left", validate="one_to_one")
    clean = df["clean"].to_numpy(bool)
    res = {"samples": len(df), "noisy_fraction": round(float(1 - clean.mean()), 4)}
    for arch in ("b32", "l14"):
        s = df[f"clip_{arch}_similarity_score"].to_numpy(np.float64)
        n = int(len(s) * 0.3)
        thr = -np.sort(-s)[n]
        res[arch] = {
            "auroc_clean_vs_noisy": round(auroc(s, clean), 4),
            "clean_share_top30": round(float(clean[s >= thr].mean()), 4),
            "mean_score_by_type": {k: round(float(v), 4) for k, v in
                                   df.groupby("noise_type")[f"clip_{arch}_similarity_score"].mean().items()},
        }
    res["noise_mix_metadata"] = {k: round(float(v), 4) for k, v in
                                 df["noise_type"].value_counts(normalize=True).sort_index().items()}
    from sfcomp.uids import uids_to_hex

    present_hex = set(uids_to_hex(p.present_uids()).tolist())
    down = df[df["uid"].isin(present_hex)]
    res["downloaded"] = len(down)
    res["noise_mix_downloaded"] = {k: round(float(v), 4) for k, v in
                                   down["noise_type"].value_counts(normalize=True).sort_index().items()}
    res["reference_zero_shot_top1"] = zero_shot(pool)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

"""Per-round report (report.json + report.png): what the round selected and whether the mix is drifting.

- mix size, next mix size, overlap between this round's mix and the next;
- score histogram (split clean / noisy where the pool has truth.parquet);
- with truth: precision and recall of clean samples in the top `top_frac` of the pool for every score field
  (the rule export-subset uses: `sfcomp.select.top_fraction_mask`), and in the next mix; the noise types the
  next mix still holds;
- compute: the round's steps per model, samples trained and scored, train / score / total FLOPs, the run's totals
  so far and their ratio to the final training (`cost_ratio`, with the scale and samples seen it is weighed
  against); with --stop heldout, per model the steps taken, the cap, why training stopped and the held-out loss
  curve (`stopping`), and the evaluations' FLOPs (`eval_flops`) in the compute;
- composition drift: k-means clusters of the round model's own image embeddings (fitted on a sample of the
  pool); each cluster's share of the next mix vs of the pool, and (with truth) each class's share. The
  coverage figure is sum_c min(share_mix_c, share_pool_c) = 1 - total variation distance: 1.0 means the mix
  has the pool's composition, lower means it has narrowed to some clusters/classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import uids as U
from .atomic import atomic_open, write_json


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 25) -> np.ndarray:
    """Centroids (k, d) of k-means (k-means++ init, Lloyd iterations) on rows of x."""
    rng = np.random.default_rng(seed)
    n = len(x)
    k = min(k, n)
    centers = [x[rng.integers(n)]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centers.append(x[rng.choice(n, p=p)])
        d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    c = np.stack(centers).astype(np.float64)
    for _ in range(iters):
        lab = assign(x, c)
        for j in range(k):
            m = lab == j
            if m.any():
                c[j] = x[m].mean(0)
    return c.astype(np.float32)


def assign(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d = (x ** 2).sum(1, keepdims=True) - 2 * x @ centers.T + (centers ** 2).sum(1)
    return d.argmin(1)


def shares(labels: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return counts / max(1.0, counts.sum())


def coverage(mix_share: np.ndarray, pool_share: np.ndarray) -> float:
    """sum min(share in mix, share in pool) = 1 - total variation distance."""
    return float(np.minimum(mix_share, pool_share).sum())


def precision_recall(selected: np.ndarray, clean: np.ndarray) -> dict:
    tp = int((selected & clean).sum())
    return {"precision": tp / max(1, int(selected.sum())), "recall": tp / max(1, int(clean.sum())),
            "selected": int(selected.sum())}


def top_mask(scores: np.ndarray, frac: float) -> np.ndarray:
    """The top `frac` by the one top-fraction rule (`sfcomp.select.top_fraction_mask`, the rule export-subset
    and every round's next mix use), so the precision figures describe the subsets sfcomp writes."""
    from .select import top_fraction_mask

    return top_fraction_mask(scores, frac)


def write_round_report(rdir: Path, k: int, uids: np.ndarray, fields: dict[str, np.ndarray], default: str,
                       mix_uids: np.ndarray, next_mix: np.ndarray,
                       img_emb_sample: tuple[np.ndarray, np.ndarray] | None, truth: dict | None,
                       top_frac: float, kmeans_k: int, seed: int, errors: dict, timings: dict,
                       compute: dict | None = None, stopping: list[dict] | None = None) -> dict:
    """Compute the round's figures, write report.json and report.png in `rdir`; return the report dict.

    `uids` are the score file's (sorted) uids; `truth`, when given, is row-aligned with them. `compute`: the
    round's FLOPs, the run's so far and the cost ratio to the final training (`sfcomp.loop.Loop._accounting`).
    `stopping` (--stop heldout): per model, the steps taken, the cap, why training stopped and the held-out loss
    curve (`sfcomp.stopping.HeldOutStopping`).
    """
    n = len(uids)
    in_next = U.isin_sorted(uids, next_mix)
    in_mix = U.isin_sorted(uids, U.sort_uids(mix_uids))
    rep: dict[str, Any] = {
        "round": k, "pool": n, "mix": int(in_mix.sum()), "next_mix": int(in_next.sum()),
        "overlap_next_with_mix": int((in_mix & in_next).sum()),
        "jaccard_next_mix": float((in_mix & in_next).sum() / max(1, (in_mix | in_next).sum())),
        "default_score": default, "shard_errors": errors, "timings": timings,
        "score_hist": {}, "top_frac": top_frac,
    }
    if compute is not None:
        rep["compute"] = compute
    if stopping is not None:
        rep["stopping"] = stopping
    for name, s in fields.items():
        h, edges = np.histogram(s, bins=50)
        rep["score_hist"][name] = {"counts": h.tolist(), "edges": edges.tolist()}
    summary: dict[str, Any] = {}
    if truth is not None and "clean" in truth:
        clean = np.asarray(truth["clean"]).astype(bool)
        rep["truth"] = {"clean_share_pool": float(clean.mean())}
        rep["top_k"] = {name: precision_recall(top_mask(s, top_frac), clean) for name, s in fields.items()}
        rep["next_mix_clean"] = precision_recall(in_next, clean)
        rep["mix_clean"] = precision_recall(in_mix, clean)
        summary = {f"precision_top_{name}": v["precision"] for name, v in rep["top_k"].items()}
        summary["precision_next_mix"] = rep["next_mix_clean"]["precision"]
        if "noise_type" in truth:
            nt = np.asarray(truth["noise_type"]).astype(str)
            rep["noise_types"] = {t: {"pool": int((nt == t).sum()), "next_mix": int(((nt == t) & in_next).sum()),
                                      **{f"top_{name}": int(((nt == t) & top_mask(s, top_frac)).sum())
                                         for name, s in fields.items()}}
                                  for t in sorted(set(nt.tolist()))}
    label_column = _label_column(truth) if truth is not None else None
    if label_column is not None:
        values = np.asarray(truth[label_column])
        if label_column == "class":
            cls = values.astype(np.int64)
        else:  # any other label column (strings or ints): its distinct values, in sorted order
            names, cls = np.unique(values.astype(str), return_inverse=True)
        kc = int(cls.max()) + 1
        ps, ms = shares(cls, kc), shares(cls[in_next], kc)
        rep["class_drift"] = {"pool_share": ps.tolist(), "next_mix_share": ms.tolist(),
                              "coverage": coverage(ms, ps)}
        if label_column != "class":
            rep["class_drift"].update(column=label_column, values=names.tolist())
        summary["class_coverage"] = rep["class_drift"]["coverage"]
    if img_emb_sample is not None and len(img_emb_sample[0]) >= kmeans_k:
        su, emb = img_emb_sample
        centers = kmeans(emb, kmeans_k, seed)
        lab = assign(emb, centers)
        s_next = U.isin_sorted(su, next_mix)
        ps, ms = shares(lab, len(centers)), shares(lab[s_next], len(centers))
        rep["cluster_drift"] = {"k": len(centers), "sample": int(len(su)), "pool_share": ps.tolist(),
                                "next_mix_share": ms.tolist(), "coverage": coverage(ms, ps)}
        summary["cluster_coverage"] = rep["cluster_drift"]["coverage"]
    rep["summary"] = summary
    write_json(rdir / "report.json", rep)
    _plot(rdir / "report.png", rep, fields, truth)
    return rep


# truth columns that describe how a sample was made, not what it shows
_NOT_LABELS = {"uid", "clean", "noise_type", "variant", "source_index", "served"}


def _label_column(truth: dict) -> str | None:
    """The truth column the class-drift figures are computed over: `class` when the pool has it, else the first
    other column with between 2 and 1,000 distinct values (a pool's own labels), else None."""
    if "class" in truth:
        return "class"
    for name, values in truth.items():
        if name not in _NOT_LABELS and 2 <= len(np.unique(np.asarray(values).astype(str))) <= 1000:
            return name
    return None


def _plot(path: Path, rep: dict, fields: dict[str, np.ndarray], truth: dict | None) -> None:
    """One panel per figure the report has: the score histogram (split clean / noisy when the truth says which
    samples are clean), then the cluster and class drift where the pool's data gave them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drift = [(key, title) for key, title in (("cluster_drift", "image-embedding clusters"),
                                             ("class_drift", rep.get("class_drift", {}).get("column", "class")
                                              + " (truth)"))
             if rep.get(key) is not None]
    fig, axes = plt.subplots(1, 1 + len(drift), figsize=(5 * (1 + len(drift)), 4), squeeze=False)
    axes = axes[0]
    ax = axes[0]
    s = fields[rep["default_score"]]
    if truth is not None and "clean" in truth:
        clean = np.asarray(truth["clean"]).astype(bool)
        bins = np.histogram_bin_edges(s, 50)
        ax.hist(s[clean], bins, alpha=0.6, label="clean")
        ax.hist(s[~clean], bins, alpha=0.6, label="noisy")
        ax.legend()
    else:
        ax.hist(s, 50)
    ax.set_title(f"round {rep['round']}: {rep['default_score']} scores")
    for ax, (key, title) in zip(axes[1:], drift):
        d = rep[key]
        x = np.arange(len(d["pool_share"]))
        ax.bar(x - 0.2, d["pool_share"], 0.4, label="pool")
        ax.bar(x + 0.2, d["next_mix_share"], 0.4, label="next mix")
        ax.set_title(f"{title}: coverage {d['coverage']:.3f}")
        ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)

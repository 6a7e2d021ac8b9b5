"""image_based and image_based_intersect_clip_score (DataComp's image-based baselines).

Pass 1 (parallel): the caption filter (fastText English, more than one fastText token, more than 5 characters),
and for the intersect variant the CLIP-score threshold over the whole pool (computed first, as DataComp).
Then k-means over the caption-filtered `l14_img` (unless --centroids), the target embeddings' nearest centroids,
and pass 2, file by file: keep each candidate whose nearest centroid (inner product) is a target centroid.
"""
from __future__ import annotations

import numpy as np

from sfcomp import uids as U
from sfcomp.errors import BadInputError, SfcompError
from sfcomp.pool import npz_path

from . import centroids as C
from . import langid as L
from . import reader as R
from . import rules
from .clip_score import score_column, score_threshold
from .options import (ARCH, CENTROIDS, FASTTEXT_MODEL, FRACTION, IMAGE_BASED_TARGETS, KMEANS_SAMPLE,
                      NUM_CLUSTERS, SEED, THRESHOLD)
from .spec import Baseline, BaselineArgs, Run, sum_counts

KEY = "l14_img"


def _caption_filter(path: str, spec: L.LangIdSpec, column: str | None, threshold: float | None) -> tuple:
    """The caption-filter mask, and the candidate mask (caption AND score, if any)."""
    cols = ["text"] + ([column] if column else [])
    t = R.read_columns(path, cols)
    texts = R.column_texts(t)
    cheap = rules.image_caption_mask(texts, np.ones(len(texts), dtype=bool))
    caption = L.english_where(spec, texts, cheap)
    score = rules.at_least(R.column_numpy(t, column), threshold) if column else np.ones(len(texts), bool)
    return caption, caption & score, {"rows": t.num_rows, "score_rule": int(score.sum())}


def _pool_centroids(run: Run, caption_masks: list[np.ndarray]) -> np.ndarray:
    a = run.args
    if a.centroids:
        centroids = C.load_embedding_file(a.centroids).astype(np.float32)
        run.sidecar["centroids"] = {"source": str(a.centroids), "k": len(centroids)}
        return centroids
    seed = 0 if a.seed is None else a.seed
    rng = np.random.default_rng(seed)
    train = []
    for path, n, mask in zip(run.files, run.file_rows, caption_masks):
        rows = np.flatnonzero(mask)
        if a.kmeans_sample is not None:
            rows = np.sort(rng.choice(rows, size=int(len(rows) * a.kmeans_sample), replace=False))
        if len(rows):
            train.append(R.npz_rows(path, KEY, n)[rows].astype(np.float32))
    if not train:
        raise SfcompError(f"{a.name}: no caption passes the caption filter: nothing to cluster")
    x = np.concatenate(train)
    del train
    k = a.num_clusters or C.auto_num_clusters(len(x))
    if k > len(x):
        raise SfcompError(f"{a.name}: --num-clusters {k} exceeds the {len(x)} caption-filtered samples")
    run.log(f"k-means: {k} centroids over {len(x)} caption-filtered {KEY} embeddings (faiss, "
            f"{C.KMEANS_NITER} iterations, seed {seed})")
    centroids = C.train_kmeans(x, k, seed=seed)
    run.sidecar["centroids"] = {"source": f"faiss k-means over caption-filtered {KEY}", "k": k,
                                "train_points": len(x), "niter": C.KMEANS_NITER, "seed": seed,
                                "sample": a.kmeans_sample, "datacomp_k": C.DATACOMP_NUM_CLUSTERS}
    return centroids


def select_image_based(run: Run) -> list:
    return _select(run, None, None)


def select_intersect_clip_score(run: Run) -> list:
    threshold, column = score_threshold(run)
    return _select(run, column, threshold)


def _select(run: Run, column: str | None, threshold: float | None) -> list:
    a = run.args
    passes = run.map(_caption_filter, run.lang, column, threshold)
    caption_masks = [p[0] for p in passes]
    candidate_masks = [p[1] for p in passes]
    counts = sum_counts([p[2] for p in passes])
    centroids = _pool_centroids(run, caption_masks)
    dim = centroids.shape[1]
    targets = C.load_targets(a.image_based_targets, dim)
    wanted = C.target_centroid_ids(targets, centroids)
    run.sidecar["targets"] = {"files": list(a.image_based_targets), "embeddings": len(targets),
                              "target_centroids": len(wanted)}
    run.log(f"targets: {len(targets)} embeddings -> {len(wanted)} of {len(centroids)} centroids")
    results = []
    for path, n, mask in zip(run.files, run.file_rows, candidate_masks):
        rows = np.flatnonzero(mask)
        keep = np.zeros(n, dtype=bool)
        if len(rows):
            emb = R.npz_rows(path, KEY, n)
            if emb.shape[1] != dim:
                raise BadInputError(npz_path(path), f"{KEY} is {emb.shape[1]}-d but the centroids are {dim}-d")
            near = C.nearest_centroid(emb[rows], centroids)
            keep[rows[np.isin(near, wanted)]] = True
        t = R.read_columns(path, ["uid"])
        results.append((R.uids_of(t, path, keep), {}))
    counts["caption_rule"] = int(sum(m.sum() for m in caption_masks))
    counts["candidates"] = int(sum(m.sum() for m in candidate_masks))
    counts.pop("rows", None)
    results.append((np.empty(0, U.UID_DTYPE), counts))
    return results


def _centroids_xor_k(a: BaselineArgs) -> str | None:
    if a.centroids and a.num_clusters:
        return "--num-clusters is for computing centroids; it cannot be combined with --centroids"
    return None


def _columns(a: BaselineArgs) -> tuple[str, ...]:
    return ("text", *score_column(a))


IMAGE_OPTIONS = (FASTTEXT_MODEL, SEED, IMAGE_BASED_TARGETS, CENTROIDS, NUM_CLUSTERS, KMEANS_SAMPLE)
_IMAGE = dict(columns=_columns, npz_keys=(KEY,), language_id="fasttext", check=_centroids_xor_k)

BASELINES = (
    Baseline("image_based", "English captions whose image's nearest centroid is a target's (ImageNet-1k)",
             select_image_based, options=IMAGE_OPTIONS, required=(IMAGE_BASED_TARGETS,), **_IMAGE),
    Baseline("image_based_intersect_clip_score", "image_based, among the rows passing the CLIP score threshold",
             select_intersect_clip_score, options=(ARCH, THRESHOLD, FRACTION, *IMAGE_OPTIONS),
             required=(ARCH, IMAGE_BASED_TARGETS), one_of=((FRACTION, THRESHOLD),), **_IMAGE),
)

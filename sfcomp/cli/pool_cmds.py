"""`sfcomp download` and `sfcomp make-pool`: parse, call sfcomp.download / sfcomp.makepool, print."""
from __future__ import annotations

import json

import click

from ..sources import DEFAULT_SOURCE, SOURCES
from .paths import IO_THREADS, PathParam, per_core


@click.command("download")
@click.argument("url_list", type=PathParam(exists=True))
@click.option("--out", "output_dir", required=True, type=PathParam(), help="Shard folder (POOL/shards).")
@click.option("--image-size", default=512, show_default=True, type=click.IntRange(1, None),
              help="Longest side after resize (DataComp: 512).")
@click.option("--processes", default=2, show_default=True, type=per_core())
@click.option("--threads", default=32, show_default=True, type=IO_THREADS,
              help="Download threads per process.")
@click.option("--samples-per-shard", default=10000, show_default=True, type=click.IntRange(1, None),
              help="Input rows per shard (DataComp: 10000).")
@click.option("--timeout", default=10, show_default=True, type=click.IntRange(1, None), help="Seconds per request.")
@click.option("--retries", default=0, show_default=True, type=click.IntRange(0, None))
def download(url_list, output_dir, image_size, processes, threads, samples_per_shard, timeout, retries):
    """Download URL_LIST (a parquet, or a folder of them, with url/text/uid columns) into webdataset shards.

    img2dataset with DataComp's settings. Rerun after an interruption: finished shards are kept, the rest done.
    """
    from ..download import download as run

    r = run(url_list, output_dir, image_size=image_size, processes=processes, threads=threads,
            samples_per_shard=samples_per_shard, timeout=timeout, retries=retries)
    click.echo(r.summary())


@click.command("make-pool")
@click.option("--source", default=DEFAULT_SOURCE, show_default=True,
              help=f"Pool source: {', '.join(sorted(SOURCES))}, or MODULE:ATTR naming a sfcomp.sources.Source.")
@click.option("--out", required=True, type=PathParam(), help="Pool folder to create (resumes a partial one).")
@click.option("--images", type=PathParam(), default=None,
              help="--source folder: the folder of images the captions table names.")
@click.option("--captions", type=PathParam(), default=None,
              help="--source folder: CSV or parquet with columns file, caption, optional label, clean.")
@click.option("--size", default=None, type=int,
              help="Samples in the pool (rows of metadata). Default: 60000; --source folder: every usable row "
                   "not held out.")
@click.option("--noise", default=None, type=float,
              help="Share of samples with an injected noisy caption. Default: 0.5; --source folder: 0.")
@click.option("--noise-mix", default="default", show_default=True,
              help="Noise profile: default, misaligned, junk, memorizable, neardup (sfcomp/sources/noise_profiles.json).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, None), help="Same seed, same pool.")
@click.option("--direct", is_flag=True, help="Skip HTTP: feed the files to img2dataset's code directly (same layout).")
@click.option("--image-size", default=64, show_default=True, type=click.IntRange(1, None),
              help="Shard image size (DataComp uses 512).")
@click.option("--samples-per-shard", default=10000, show_default=True, type=click.IntRange(1, None))
@click.option("--processes", default=2, show_default=True, type=per_core(), help="img2dataset processes.")
@click.option("--threads", default=32, show_default=True, type=IO_THREADS,
              help="img2dataset threads per process.")
@click.option("--ref-steps", default=None, type=click.IntRange(1, None),
              help="Training steps of the reference CLIPs (preset default).")
@click.option("--quiet", is_flag=True)
def make_pool(source, out, images, captions, size, noise, noise_mix, seed, direct, image_size, samples_per_shard,
              processes, threads, ref_steps, quiet):
    """Build a DataComp-format pool (metadata, shards, truth.parquet, eval sets) from a dataset or your own images.

    The demo pool: a real dataset with injected noise. `--source folder --images DIR --captions FILE`: your own
    images and captions, no noise injected unless --noise is given.
    """
    from ..errors import BadInputError
    from ..guard import check_outputs
    from ..makepool import make_pool as run
    from ..sources import get_source

    # an unknown source or a bad table is refused before anything is created; the source's files are inputs
    src = get_source(source)
    if src.needs_files:
        if images is None or captions is None:
            raise BadInputError(None, f"--source {source} needs --images DIR and --captions FILE")
        src = src.with_files(images, captions)
        src.check()
    elif images is not None or captions is not None:
        raise BadInputError(None, "--images and --captions are options of --source folder, not of "
                                  f"--source {source}")
    check_outputs([out], src.input_paths(), what="--out", kind="dir")
    info = run(out, source=src if src.needs_files else source, size=size, noise=noise, noise_mix=noise_mix,
               seed=seed, direct=direct, image_size=image_size, samples_per_shard=samples_per_shard,
               processes=processes, threads=threads, ref_steps=ref_steps, progress=not quiet,
               log=(lambda m: None) if quiet else click.echo)
    click.echo(f"pool {out}: requested {info['requested']}, downloaded {info['downloaded']}, "
               f"{info['shards']} shards, noisy {info['noisy_fraction']:.1%}")
    click.echo("noise mix: " + json.dumps(info["noise_mix"]))
    if "bad_rows" in info:
        click.echo("bad rows skipped: " + json.dumps(info["bad_rows"]))

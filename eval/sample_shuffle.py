"""A seeded sample shuffle for open_clip_train's webdataset pipeline, so that one seed fixes one training run.

open_clip_train (and so DataComp's train.py) shuffles samples with `webdataset.shuffle(bufsize, initial)` and no
rng; webdataset then seeds the buffer from the process id and the clock. Everything else in the pipeline is
seeded (the resampled shard choice by the DataLoader worker seed, the model by `--seed`), so that one call is
why two runs with the same seed differ from their first step on (measured here: the Tux Paint A/A pair differed
by 0.032 average score). `seeded_sample_shuffle(seed)` swaps `webdataset.shuffle` for `SeededShuffle` while
open_clip_train builds its pipeline: the same buffer and the same picks, drawn from an rng seeded by (seed,
rank, DataLoader worker, pass), so a rerun repeats the data order and another seed changes it.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator


class SeededShuffle:
    """webdataset's buffered sample shuffle (`webdataset.filters._shuffle`) with a seeded rng.

    A pipeline stage: called with its source iterator, once per pass over the data, in the DataLoader worker
    that runs it (a top-level class, so it pickles into spawned workers). The rng of each pass is seeded by
    (seed, rank, worker id, that worker's pass count).
    """

    def __init__(self, seed: int, rank: int, bufsize: int = 1000, initial: int = 100, handler=None):
        self.seed, self.rank = int(seed), int(rank)
        self.bufsize, self.initial, self.handler = bufsize, initial, handler
        self.passes = 0

    def rng(self) -> random.Random:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker = info.id if info is not None else 0
        key = f"sfcomp-sample-shuffle:{self.seed}:{self.rank}:{worker}:{self.passes}"
        self.passes += 1
        return random.Random(key)  # a str seed is hashed (sha512): the same on every platform and Python run

    def __call__(self, src: Iterator) -> Iterator:
        from webdataset.filters import _shuffle

        return _shuffle(src, self.bufsize, self.initial, self.rng(), self.handler)


@contextlib.contextmanager
def seeded_sample_shuffle(seed: int, rank: int = 0):
    """While open, `webdataset.shuffle(...)` returns a `SeededShuffle`; yields a list that records each one made
    (empty afterwards means the trainer did not build its shuffle through `webdataset.shuffle`)."""
    import webdataset

    made: list[SeededShuffle] = []
    original = webdataset.shuffle

    def shuffle(bufsize: int = 1000, initial: int = 100, rng=None, handler=None):
        if rng is not None:  # the caller seeds it already: leave it as webdataset would
            return original(bufsize, initial, rng=rng, handler=handler)
        stage = SeededShuffle(seed, rank, bufsize, initial, handler)
        made.append(stage)
        return stage

    webdataset.shuffle = shuffle
    try:
        yield made
    finally:
        webdataset.shuffle = original

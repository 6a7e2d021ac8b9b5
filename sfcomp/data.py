"""The pool as the loop sees it: sorted uids, the shard of each row, and 'train on these rows' / 'embed these rows'.

Two implementations, one interface:
- `CachedPoolData` (presets with "cache": true): rows are read from the memory-mapped decode-once cache.
- `StreamedPoolData` (presets with "cache": false, full resolution): rows are streamed from the pool's own
  shards, the membership filter applied to the json member before any JPEG is decoded, decoding in parallel
  DataLoader workers (see sfcomp.stream).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .cache import PoolCache
from .score import embed_arrays
from .train import train_on_arrays


class RowView:
    """Lazy rows `rows` of an array (memory-mapped or not): len, slicing and integer-array indexing."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array = array
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx):
        return self.array[self.rows[idx]]


class CachedPoolData:
    def __init__(self, cache: PoolCache):
        self.cache = cache
        self.uids = np.asarray(cache.uids)
        self.shard = np.asarray(cache.shard)
        self.shards = cache.shards
        self.errors = {k: cache.manifest.get(k, 0) for k in ("corrupt_members", "missing_shards", "captions_not_utf8")}

    def rows_of_shards(self, names) -> np.ndarray:
        return self.cache.rows_of_shards(names)

    def train(self, model, rows: np.ndarray, preset: dict, steps: int, seed: int, device="cpu",
              progress: bool = True, on_step: Callable | None = None, desc: str = "train"):
        return train_on_arrays(model, RowView(self.cache.pixels, rows), RowView(self.cache.tokens, rows), preset,
                               steps, seed, device=device, progress=progress, on_step=on_step, desc=desc)

    def embed(self, model, rows: np.ndarray, preset: dict, device="cpu", progress: bool = True):
        return embed_arrays(model, RowView(self.cache.pixels, rows), RowView(self.cache.tokens, rows),
                            batch_size=preset["score_batch_size"], device=device, preset=preset, progress=progress)

"""Stream a pool's own shards for full-resolution presets ("cache": false): no resharding, no cache on disk.

Each DataLoader worker reads whole shards; a sample's json member is checked against the membership set (the
current mix, or the rows to score) BEFORE its JPEG is decoded; decoding + resize/centre-crop runs in the
workers, in parallel. Under torchrun each rank reads its own shards (shard i -> rank i % world).
Training cycles over its shards (seeded shard order + a shuffle buffer) until the step budget is spent.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import uids as U
from .pool import Pool, ShardErrors, _success_uids, iter_shard_samples
from .train import dist_info, train_loop


def _sample_stream(shards: Sequence[str], members: np.ndarray, image_size: int, context_length: int,
                   errors: ShardErrors) -> Iterator[tuple[np.ndarray, np.ndarray, str, bool]]:
    """(pixels, tokens, uid, caption was not UTF-8) of each member sample of `shards`."""
    from .cache import resize_center_crop
    from .text import tokenize_captions

    keep = set(U.uids_to_hex(members).tolist())
    for s in iter_shard_samples(shards, keep_uid=keep.__contains__, decode="pil", errors=errors):
        try:
            px = resize_center_crop(s["image"], image_size)
        except Exception as e:
            errors.add("corrupt_members", f"{s['shard']}: {s['key']}: {e}")
            continue
        yield px, tokenize_captions([s["text"]], context_length)[0], s["uid"], s["text_not_utf8"]


class _ShardDataset:
    """torch IterableDataset over shards (built lazily so importing this module does not import torch)."""

    def __new__(cls, shards, members, preset, seed, cycle, shuffle_buffer):
        import torch

        class DS(torch.utils.data.IterableDataset):
            def __iter__(self):
                info = torch.utils.data.get_worker_info()
                wid, nw = (info.id, info.num_workers) if info else (0, 1)
                rng = np.random.default_rng([seed, wid])
                while True:
                    order = list(shards)
                    if cycle:
                        rng.shuffle(order)
                    mine = order[wid::nw]
                    errors = ShardErrors()
                    stream = _sample_stream(mine, members, preset["image_size"], preset["context_length"], errors)
                    if shuffle_buffer > 1:
                        stream = _shuffled(stream, shuffle_buffer, rng)
                    n = 0
                    for x in stream:
                        n += 1
                        yield x
                    if not cycle or n == 0:  # n == 0: every shard of this worker is gone; cycling would spin
                        return

        return DS()


def _shuffled(stream, size: int, rng) -> Iterator:
    buf = []
    for x in stream:
        buf.append(x)
        if len(buf) >= size:
            yield buf.pop(int(rng.integers(len(buf))))
    rng.shuffle(buf)
    yield from buf


def _collate(items):
    px = np.stack([i[0] for i in items])
    tok = np.stack([i[1] for i in items])
    return px, tok, [i[2] for i in items], [i[3] for i in items]


class StreamedPoolData:
    """The loop's data interface (see sfcomp.data) over streamed shards."""

    def __init__(self, pool: Pool, preset: dict):
        self.pool = pool
        self.preset = preset
        members = U.sort_uids(pool.metadata_uids())
        parts, shard_ids = [], []
        self.shards = pool.shard_files()
        self._unlisted = set()  # shards that are not readable files (a link loop, a folder) and have no table
        for i, shard in enumerate(self.shards):
            table = shard[: -len(".tar")] + ".parquet"
            if _readable(table) or _readable(shard):
                u = _success_uids(table)
            else:
                self._unlisted.add(i)
                u = np.empty(0, U.UID_DTYPE)
            u = u[U.isin_sorted(u, members)]
            parts.append(u)
            shard_ids.append(np.full(len(u), i, np.int32))
        all_uids = U.concat(parts)
        shard = np.concatenate(shard_ids) if shard_ids else np.zeros(0, np.int32)
        order = np.lexsort((all_uids["f1"], all_uids["f0"]))
        self.uids = all_uids[order]
        self.shard = shard[order]
        # rows some embed() call could not read (shard gone, member corrupt): left out of the score file, and
        # counted once each in `errors` however many models scored them
        self.unread = np.zeros(len(self.uids), bool)
        self.caption_not_utf8 = np.zeros(len(self.uids), bool)  # counted once each, like `unread`

    @property
    def errors(self) -> dict:
        """Shard errors seen while scoring: shards that were gone, and unreadable samples of the others."""
        rows = np.flatnonzero(self.unread)
        gone = {i for i in np.unique(self.shard[rows]).tolist() if not _readable(self.shards[i])}
        in_gone = np.isin(self.shard[rows], sorted(gone))
        return {"corrupt_members": int((~in_gone).sum()), "missing_shards": len(gone | self._unlisted),
                "captions_not_utf8": int(self.caption_not_utf8.sum())}

    def rows_of_shards(self, names) -> np.ndarray:
        from pathlib import Path

        stems = {str(n).removesuffix(".tar") for n in names}
        ids = [i for i, s in enumerate(self.shards) if Path(s).stem in stems]
        return np.flatnonzero(np.isin(self.shard, ids))

    def _loader(self, rows, seed, cycle, batch, shuffle_buffer):
        import torch

        shards = [self.shards[i] for i in np.unique(self.shard[rows])]
        ds = _ShardDataset(shards, self.uids[rows], self.preset, seed, cycle, shuffle_buffer)
        workers = min(int(self.preset.get("num_workers", 0)), max(1, len(shards)))
        return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_collate,
                                           persistent_workers=False, pin_memory=torch.cuda.is_available())

    def train(self, model, rows: np.ndarray, preset: dict, steps: int, seed: int, device="cpu",
              progress: bool = True, on_step: Callable | None = None, desc: str = "train"):
        rank, world = dist_info()
        mine = rows[self.shard[rows] % world == rank] if world > 1 else rows
        batch = max(1, min(preset["batch_size"], len(rows)) // world)
        loader = self._loader(mine, seed + rank, cycle=True, batch=batch, shuffle_buffer=4 * batch)
        batches = ((px, tok) for px, tok, _, _ in loader if len(px) == batch)
        try:
            return train_loop(model, batches, preset, steps, device, progress, on_step, desc)
        except RuntimeError as e:
            if "ran out" not in str(e):
                raise
            from .errors import BadInputError

            used = [self.shards[i] for i in np.unique(self.shard[mine])]
            gone = [sh for sh in used if not _readable(sh)]
            if gone:
                raise BadInputError(gone[0], f"training shard disappeared during the run ({e}); restore it, or "
                                             "leave it out of --train-shards") from None
            raise

    def embed(self, model, rows: np.ndarray, preset: dict, device="cpu", progress: bool = True):
        """Embeddings of `rows` (sorted), row-aligned; a sample that cannot be read gets a zero embedding and is
        marked in `unread` (the loop leaves it out of the score file) and counted in `errors`."""
        from tqdm.auto import tqdm

        from .score import embed_batches

        loader = self._loader(rows, 0, cycle=False, batch=preset["score_batch_size"], shuffle_buffer=0)
        got_uids, not_utf8, imgs, txts = [], [], [], []

        def pairs():
            for px, tok, u, bad in loader:
                got_uids.append(u)
                not_utf8.append(bad)
                yield px, tok

        for img, txt in tqdm(embed_batches(model, pairs(), preset, device), desc="embed", disable=not progress,
                             leave=False, dynamic_ncols=True):
            imgs.append(img)
            txts.append(txt)
        d = model.text_projection.shape[1]
        out_i = np.zeros((len(rows), d), np.float32)
        out_t = np.zeros((len(rows), d), np.float32)
        if imgs:
            u = U.hex_to_uids([x for b in got_uids for x in b])
            want = self.uids[rows]
            pos = np.searchsorted(want["f0"], u["f0"])
            pos = np.minimum(pos, len(want) - 1)
            ok = (want["f0"][pos] == u["f0"]) & (want["f1"][pos] == u["f1"])
            out_i[pos[ok]] = np.concatenate(imgs)[ok]
            out_t[pos[ok]] = np.concatenate(txts)[ok]
            read = np.zeros(len(rows), bool)
            read[pos[ok]] = True
            self.unread[rows[~read]] = True
            bad = np.array([x for b in not_utf8 for x in b], bool)
            self.caption_not_utf8[rows[pos[ok & bad]]] = True
        else:
            self.unread[rows] = True
        return out_i, out_t


def _readable(path: str) -> bool:
    """`path` is a regular file (not gone, a folder, a dangling link or a link loop)."""
    from .pool import is_readable_file

    return is_readable_file(path)

"""Synthetic DataComp-small-sized metadata for bench/perf/bench_baselines.py (12.8M rows in 26 parquet files).

Columns as DataComp's: uid (random 128-bit hex), url, text (alt-text-like captions: English words from timm's
ImageNet lemma list, ~12% non-English rows, some single words, some newlines), original_width/height (int64,
log-normal around 500 px), clip_b32/l14_similarity_score (float32, correlated, ~N(0.3, 0.05)), sha256.
No npz (the benchmarked rules do not read it). Everything is vectorised; one file takes a few seconds.

    python bench/perf/gen_baselines_metadata.py --out bench/out/baselines_small [--rows 12800000] [--files 26]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FOREIGN = ("der die und mit einem schöne blumen haus katze hund auf dem tisch la el los las una con para "
           "perro gato casa flores mesa le les des une avec pour chien chat maison fleurs rouge bleu il di "
           "della con per cane gatto casa fiori tavolo").split()
FILLER = "a the of in on with and photo image picture close up view for sale new best free stock".split()


def _vocab() -> tuple[list[str], list[str]]:
    import timm

    lemmas = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synset_to_lemma.txt"
    words = set()
    for line in lemmas.read_text().splitlines():
        for lemma in line.split("\t", 1)[1].split(","):
            for w in lemma.strip().lower().split():
                if w.isalpha():
                    words.add(w)
    return sorted(words) + FILLER * 40, FOREIGN


def _hex(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", np.uint8)
    chars = np.empty((n, 2 * nbytes), np.uint8)
    chars[:, 0::2] = digits[raw >> 4]
    chars[:, 1::2] = digits[raw & 15]
    return pa.array(chars.view(f"S{2 * nbytes}").reshape(-1)).cast(pa.string())


def _strings(pieces: list[bytes], ids: np.ndarray, row_counts: np.ndarray, seps: np.ndarray) -> pa.Array:
    """Rows made of `row_counts[i]` pieces each (ids flat), joined by one separator byte per gap."""
    plen = np.array([len(p) for p in pieces], np.int64)
    pstart = np.concatenate([[0], np.cumsum(plen)[:-1]])
    blob = np.frombuffer(b"".join(pieces), np.uint8)
    wl = plen[ids] + 1  # every word followed by a separator; the row's last one is dropped below
    total = int(wl.sum())
    word_start_out = np.concatenate([[0], np.cumsum(wl)[:-1]])
    pos = np.arange(total, dtype=np.int64) - np.repeat(word_start_out, wl)
    src = np.repeat(pstart[ids], wl) + pos
    is_sep = pos == np.repeat(wl - 1, wl)
    out = blob[np.minimum(src, len(blob) - 1)]
    out[is_sep] = seps  # one separator per word, in word order
    row_end_word = np.cumsum(row_counts) - 1
    drop = np.zeros(total, bool)
    drop[word_start_out[row_end_word] + wl[row_end_word] - 1] = True
    data = out[~drop]
    row_chars = np.add.reduceat(wl, np.concatenate([[0], np.cumsum(row_counts)[:-1]])) - 1
    offsets = np.concatenate([[0], np.cumsum(row_chars)]).astype(np.int32)
    return pa.StringArray.from_buffers(len(row_counts), pa.py_buffer(offsets), pa.py_buffer(data.tobytes()))


def make_file(path: Path, n: int, seed: int, english: list[bytes], foreign: list[bytes]) -> None:
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.poisson(7, n) + 1 - (rng.random(n) < 0.1) * 6, 1, 40)
    n_words = int(counts.sum())
    foreign_row = rng.random(n) < 0.12
    foreign_word = np.repeat(foreign_row, counts)
    ids = np.where(foreign_word, len(english) + rng.integers(0, len(foreign), n_words),
                   rng.integers(0, len(english), n_words))
    seps = np.where(rng.random(n_words) < 0.003, ord("\n"), ord(" ")).astype(np.uint8)
    text = _strings(english + foreign, ids, counts, seps)
    w = np.clip(np.exp(rng.normal(6.2, 0.6, n)), 16, 8000).astype(np.int64)
    h = np.clip(w * np.exp(rng.normal(-0.1, 0.5, n)), 16, 8000).astype(np.int64)
    b32 = rng.normal(0.3, 0.05, n).astype(np.float32)
    l14 = (0.7 * b32 + 0.3 * rng.normal(0.3, 0.05, n)).astype(np.float32) - np.float32(0.05)
    table = pa.table({
        "uid": _hex(rng, n, 16),
        "url": pa.compute.binary_join_element_wise("https://img.example.com/", _hex(rng, n, 8), ".jpg", ""),
        "text": text,
        "original_width": w,
        "original_height": h,
        "clip_b32_similarity_score": b32,
        "clip_l14_similarity_score": l14,
        "sha256": _hex(rng, n, 32),
    })
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=100_000)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    import pyarrow.compute  # noqa: F401  (binary_join_element_wise)

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/baselines_small")
    ap.add_argument("--rows", type=int, default=12_800_000)
    ap.add_argument("--files", type=int, default=26)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    meta = Path(args.out) / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    english, foreign = _vocab()
    english_b = [w.encode() for w in english]
    foreign_b = [w.encode() for w in foreign]
    per = np.full(args.files, args.rows // args.files)
    per[: args.rows % args.files] += 1
    names = np.random.default_rng(args.seed).integers(0, 2**63, size=(args.files, 2))
    t0 = time.time()
    for i, n in enumerate(per):
        path = meta / f"{names[i, 0]:016x}{names[i, 1]:016x}.parquet"
        if path.exists():
            continue
        make_file(path, int(n), args.seed * 1000 + i, english_b, foreign_b)
        print(f"{path.name}: {n} rows ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    (Path(args.out) / ".complete").write_text(f"{args.rows} rows in {args.files} files\n")


if __name__ == "__main__":
    main()

"""Benchmark: `sfcomp validate-subset` of a 3.8M-uid subset against 12.8M-uid metadata (26 parquet files) and
1,280 img2dataset shard tables (90% download success). Wall time and peak memory, in a fresh process each repeat.

Usage: python bench/perf/bench_validate.py [--n 12800000] [--subset 3800000] [--repeats 3] [--dir bench/out/validate]
"""
from __future__ import annotations

import argparse
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common import PEAK_MB_SNIPPET, machine, median, run_child

from sfcomp import uids as U


def make_pool(root: str, n: int, n_files: int = 26, per_shard: int = 10_000, seed: int = 0) -> np.ndarray:
    marker = os.path.join(root, f".complete-{n}")
    rng = np.random.default_rng(seed)
    raw = np.frombuffer(rng.bytes(16 * n), dtype=">u8").reshape(-1, 2)
    arr = np.empty(n, U.UID_DTYPE)
    arr["f0"], arr["f1"] = raw[:, 0], raw[:, 1]
    if os.path.exists(marker):
        return arr
    os.makedirs(os.path.join(root, "metadata"), exist_ok=True)
    os.makedirs(os.path.join(root, "shards"), exist_ok=True)
    hexes = U.uids_to_hex(arr)
    for j, idx in enumerate(np.array_split(np.arange(n), n_files)):
        pq.write_table(pa.table({"uid": pa.array(hexes[idx]), "url": pa.array(np.char.add("http://x/", hexes[idx])),
                                 "clip_l14_similarity_score": rng.random(len(idx), dtype=np.float32)}),
                       os.path.join(root, "metadata", f"{j:032x}.parquet"))
    ok = rng.random(n) < 0.9
    for s, start in enumerate(range(0, n, per_shard)):
        sl = slice(start, min(start + per_shard, n))
        status = np.where(ok[sl], "success", "failed_to_download")
        pq.write_table(pa.table({"uid": pa.array(hexes[sl]), "status": pa.array(status)}),
                       os.path.join(root, "shards", f"{s:08d}.parquet"))
        with tarfile.open(os.path.join(root, "shards", f"{s:08d}.tar"), "w"):
            pass
    open(marker, "w").close()
    return arr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12_800_000)
    ap.add_argument("--subset", type=int, default=3_800_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "..", "out", "validate"))
    args = ap.parse_args()
    arr = make_pool(args.dir, args.n)
    rng = np.random.default_rng(1)
    subset_path = os.path.join(args.dir, "subset.npy")
    U.write_subset(subset_path, arr[rng.choice(args.n, args.subset, replace=False)])
    del arr
    code = (f"import json, time; {PEAK_MB_SNIPPET}; t=time.perf_counter(); "
            "from sfcomp.validate import validate_subset; "
            f"r = validate_subset({subset_path!r}, {args.dir!r}); "
            "print(json.dumps({'wall_s': time.perf_counter()-t, 'peak_mb': _peak(), **r.as_dict()}))")
    runs = [run_child(code) for _ in range(args.repeats)]
    print(json.dumps({"machine": machine(), "metadata_rows": args.n, "subset": args.subset,
                      "median_wall_s": median([r["wall_s"] for r in runs]),
                      "median_peak_mb": median([r["peak_mb"] for r in runs]),
                      "walls": [round(r["wall_s"], 2) for r in runs], "report": runs[-1]}, indent=2))


if __name__ == "__main__":
    main()

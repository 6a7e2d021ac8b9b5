"""Benchmark: hex -> u8,u8, sort and save for 12.8M random uids (DataComp small), vs the naive per-uid loop.

Usage: python bench/perf/bench_uids.py [--n 12800000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa

from common import machine, median

from sfcomp import uids as U


def naive(hexes: list[str], path: str) -> None:
    rows = [divmod(int(h, 16), 2**64) for h in hexes]
    arr = np.array(rows, dtype=np.dtype("u8,u8"))
    arr.sort()
    np.save(path, arr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12_800_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    raw = np.frombuffer(rng.bytes(16 * args.n), dtype=">u8").reshape(-1, 2)
    arr = np.empty(args.n, U.UID_DTYPE)
    arr["f0"], arr["f1"] = raw[:, 0], raw[:, 1]
    hex_np = U.uids_to_hex(arr)
    hex_arrow = pa.array(hex_np)  # the form a metadata parquet's uid column arrives in
    hex_list = hex_np.tolist()
    out = tempfile.mkdtemp()
    results = {}
    for name, src in (("arrow column", hex_arrow), ("numpy <U32", hex_np)):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            U.write_subset(os.path.join(out, "s.npy"), U.hex_to_uids(src))
            times.append(time.perf_counter() - t0)
        results[name] = median(times)
    t0 = time.perf_counter()
    naive(hex_list, os.path.join(out, "naive.npy"))
    results["naive int(uid,16) loop"] = time.perf_counter() - t0
    assert np.array_equal(np.load(os.path.join(out, "s.npy")), np.load(os.path.join(out, "naive.npy")))
    print(json.dumps({"n": args.n, "machine": machine(), "seconds": results,
                      "speedup_vs_naive": {k: results["naive int(uid,16) loop"] / v for k, v in results.items()}},
                     indent=2))


if __name__ == "__main__":
    main()

"""Reshard throughput: input samples read per second for a 30% subset (with 5% of it upsampled x2).

    python bench/perf/bench_reshard.py [--n 20000] [--repeats 3]

Prints the median of the repeats (this machine's speed varies 3-10x with load: read medians, not single runs).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sfcomp import uids as U
from sfcomp.eval.reshard import reshard

ROOT = Path(__file__).resolve().parents[2]


def _tests_module(name: str):
    """A helper module of the test suite (tests/NAME.py), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


write_tiny_pool = _tests_module("poolfactory").write_tiny_pool


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-size", type=int, default=64)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_reshard_"))
    try:
        info = write_tiny_pool(tmp / "pool", n=a.n, seed=0, samples_per_shard=5000, image_size=a.image_size,
                               with_npz=False)
        rng = np.random.default_rng(0)
        chosen = rng.choice(np.array(info["uids"]), int(0.3 * a.n), replace=False)
        listed = np.concatenate([chosen, chosen[: len(chosen) // 20]])
        U.write_subset(tmp / "sub.npy", U.hex_to_uids(listed), allow_duplicates=True)
        times, rep = [], None
        for i in range(a.repeats):
            t0 = time.perf_counter()
            rep = reshard(tmp / "pool", tmp / "sub.npy", tmp / f"out{i}", shard_size=10000, log=lambda m: None)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        print(f"reshard: {rep.processed_count} input samples ({a.image_size}px jpg) -> {rep.output_count} written, "
              f"median {med:.2f}s of {a.repeats} ({rep.processed_count / med:,.0f} input samples/s; "
              f"runs {', '.join(f'{t:.2f}' for t in times)}s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

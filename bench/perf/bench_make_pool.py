"""How long `sfcomp make-pool` takes, per stage, over HTTP + img2dataset and with --direct; and the noise mix.

    .venv/bin/python bench/perf/bench_make_pool.py --size 60000 --repeats 1 --reuse-reference data/demo/reference

Each repeat builds a fresh pool in bench/out/pool_<mode>_<i> (removed afterwards unless --keep). The reference
CLIP training is the same for both modes (same seed, same held-out split); with --reuse-reference its checkpoints
are copied in first, so the run times plan + scoring + download + eval sets, and the training time is reported
from the pool that made them (its make_pool.json). Results: JSON on stdout and bench/out/make_pool.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from sfcomp.makepool import PoolBuilder


def build_once(out: Path, size: int, direct: bool, reuse: Path | None, args) -> dict:
    if out.exists():
        shutil.rmtree(out)
    b = PoolBuilder(out, size=size, direct=direct, seed=args.seed, noise_mix=args.noise_mix,
                    processes=args.processes, threads=args.threads, progress=False, log=lambda m: None)
    if reuse is not None:
        (b.work / "reference").mkdir(parents=True)
        for p in reuse.glob("*.pt"):
            shutil.copyfile(p, b.work / "reference" / p.name)
    t0 = time.perf_counter()
    info = b.build()
    info["wall_s"] = round(time.perf_counter() - t0, 2)
    if not args.keep:
        shutil.rmtree(out)
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=60000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--modes", default="http,direct")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise-mix", default="default")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--reuse-reference", type=Path, default=None, help="folder with ref-b32.pt / ref-l14.pt")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[2] / "bench" / "out"
    root.mkdir(exist_ok=True)
    results = {}
    for mode in args.modes.split(","):
        runs = [build_once(root / f"pool_{mode}_{i}", args.size, mode == "direct", args.reuse_reference, args)
                for i in range(args.repeats)]
        stages = runs[0]["timings_s"].keys()
        results[mode] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "stage_s_median": {k: statistics.median(r["timings_s"][k] for r in runs) for k in stages},
            "downloaded": runs[0]["downloaded"], "requested": runs[0]["requested"],
            "noisy_fraction": runs[0]["noisy_fraction"], "noise_mix": runs[0]["noise_mix"],
            "repeats": len(runs),
        }
        print(mode, json.dumps(results[mode]), flush=True)
    if {"http", "direct"} <= set(results):
        results["shards_stage_ratio_http_over_direct"] = round(
            results["http"]["stage_s_median"]["shards"] / results["direct"]["stage_s_median"]["shards"], 2)
    results["args"] = vars(args) | {"reuse_reference": str(args.reuse_reference)}
    (root / "make_pool.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

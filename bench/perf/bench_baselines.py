"""Benchmark `sfcomp baseline` on DataComp-small-sized metadata against a naive pandas version.

    python bench/perf/gen_baselines_metadata.py --out bench/out/baselines_small      # once: 12.8M rows, 26 files
    python bench/perf/bench_baselines.py --pool bench/out/baselines_small [--repeats 3] [--basic-repeats 1]

Each run is a fresh process (`sfcomp baseline ...` / this file's `--naive ...`), timed by wall clock; peak memory
is the largest sum of RSS over the process and all its children, sampled every 20 ms from /proc. The naive
version is DataComp's own approach: pandas concat of the whole pool, a full sort for the threshold,
row-wise `.apply` rules in one process, uids converted by `int(uid, 16)` per row. Both outputs are compared.
Prints a markdown table of medians.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


# ---- the naive reference (run in its own process via --naive) -------------------------------------------------
def naive(name: str, metadata_dir: str, save_path: str, fraction: float | None, arch: str | None) -> None:
    import numpy as np
    import pandas as pd

    files = sorted(str(p) for p in Path(metadata_dir).glob("*.parquet"))
    if name == "clip_score":
        key = f"clip_{arch}_similarity_score"
        df = pd.concat([pd.read_parquet(f, columns=["uid", key]) for f in files])
        threshold = -np.sort(-df[key].values)[int(len(df) * fraction)]
        kept = df.uid[df[key] >= threshold].values
    elif name == "basic_filter":
        from sfcomp.baselines.langid import _load, fasttext_spec

        model = _load(fasttext_spec())
        df = pd.concat([pd.read_parquet(f, columns=["uid", "text", "original_width", "original_height"])
                        for f in files])
        lang = df.text.apply(lambda x: model.predict(x.replace("\n", " "))[0][0].split("__label__")[1])
        words = df.text.apply(lambda x: len(x.split()))
        chars = df.text.apply(len)
        lo = np.minimum(df.original_width, df.original_height)
        hi = np.maximum(df.original_width, df.original_height)
        mask = (lang == "en") & (words > 2) & (chars > 5) & (lo >= 200) & (hi / lo <= 3.0)
        kept = df.uid[mask].values
    else:
        raise SystemExit(f"naive {name}: not implemented")
    arr = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in kept], np.dtype("u8,u8"))
    arr.sort()
    np.save(save_path, arr)


# ---- measurement --------------------------------------------------------------------------------------------
def _tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
    return total


def measure(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=str(ROOT / "bench/out/baselines_small"))
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side for clip_score")
    ap.add_argument("--basic-repeats", type=int, default=1, help="runs of each side for basic_filter (slow)")
    ap.add_argument("--num-workers", type=int, default=os.cpu_count())
    ap.add_argument("--only", choices=["clip_score", "basic_filter"], default=None)
    ap.add_argument("--naive", nargs=5, metavar=("NAME", "META", "OUT", "FRACTION", "ARCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive:
        name, meta, out, frac, arch = args.naive
        naive(name, meta, out, float(frac) if frac != "-" else None, arch if arch != "-" else None)
        return

    import numpy as np

    load_start = os.getloadavg()[0]
    meta = str(Path(args.pool) / "metadata")
    out = Path(args.pool) / "subsets"
    out.mkdir(exist_ok=True)
    sfcomp = str(Path(PY).parent / "sfcomp")
    cases = {
        "clip_score": (["--arch", "l14", "--fraction", "0.3"], "0.3", "l14"),
        "basic_filter": ([], "-", "-"),
    }
    rows = []
    for name, (flags, frac, arch) in cases.items():
        if args.only and name != args.only:
            continue
        reps = args.repeats if name == "clip_score" else args.basic_repeats
        ours_path, naive_path = out / f"{name}.npy", out / f"{name}_naive.npy"
        ours = [measure([sfcomp, "baseline", name, "--metadata-dir", meta, "--save-path", str(ours_path),
                         "--num-workers", str(args.num_workers), *flags]) for _ in range(reps)]
        ref = [measure([PY, __file__, "--naive", name, meta, str(naive_path), frac, arch]) for _ in range(reps)]
        a, b = np.load(ours_path), np.load(naive_path)
        same = a.dtype == b.dtype and len(a) == len(b) and bool((a == b).all())
        t_ours, m_ours = statistics.median(w for w, _ in ours), statistics.median(m for _, m in ours)
        t_ref, m_ref = statistics.median(w for w, _ in ref), statistics.median(m for _, m in ref)
        rows.append(dict(name=name, flags=" ".join(flags), kept=len(a), identical=same, ours_s=t_ours,
                         ours_peak_mb=m_ours / 2**20, naive_s=t_ref, naive_peak_mb=m_ref / 2**20,
                         speedup=t_ref / t_ours, memory_ratio=m_ref / m_ours,
                         ours_all_s=[round(w, 2) for w, _ in ours], naive_all_s=[round(w, 2) for w, _ in ref]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}; pool {meta}; runs per side: clip_score {args.repeats}, "
          f"basic_filter {args.basic_repeats}; load average at start {load_start:.1f}, at end {os.getloadavg()[0]:.1f}\n")
    print("| baseline | kept | sfcomp wall s (median) | sfcomp peak MB | naive wall s | naive peak MB | speedup | "
          "memory ratio | identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} {r['flags']} | {r['kept']} | {r['ours_s']:.1f} {r['ours_all_s']} | {r['ours_peak_mb']:.0f} "
              f"| {r['naive_s']:.1f} {r['naive_all_s']} | {r['naive_peak_mb']:.0f} | {r['speedup']:.1f}x "
              f"| {r['memory_ratio']:.1f}x | {r['identical']} |")


if __name__ == "__main__":
    main()

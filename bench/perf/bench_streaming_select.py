"""Benchmark: streaming top-fraction export over synthetic per-shard score files (issue 7, item 2).

    .venv/bin/python bench/perf/bench_streaming_select.py --n 128000000 --parts 64 --repeats 2   # DataComp medium
    .venv/bin/python bench/perf/bench_streaming_select.py --n 12800000 --parts 16 --compare        # + in-memory ratio
    options: --random-frac 0.1 (adds the hashed random part), --nocheck, --export (adds input sha256s)

Synthetic scores (float32 ~ N(0.3, 0.05), like CLIP cosine) for random 128-bit uids, split into `--parts`
sorted score files under bench/out/select/ (gitignored; 20 bytes a row: 2.6 GB at 128M; generated in chunks
once, reused). Each measured run is a fresh subprocess that reports its wall time and its peak resident memory
(resource.getrusage ru_maxrss, which counts the numpy buffers and any memory-mapped pages it touched) and its
CPU time (user + system; less sensitive than wall time to other jobs on a shared machine).
`--compare` also writes one score file of the whole pool and times the in-memory path (make_mix) against the
streaming path on that same file and on the parts, in the same run. Prints one JSON line per measurement and a
summary (median of repeats).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sfcomp.scorefile import score_info, write_scores
from sfcomp.uids import UID_DTYPE

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
mode, out, paths, kw = {mode!r}, {out!r}, {paths!r}, {kw!r}
timings = {{}}
if mode in ("stream", "stream-nocheck"):
    from sfcomp.streaming_select import stream_select
    info = stream_select(paths, out, timings=timings, check_parts_disjoint=mode == "stream", **kw)
elif mode == "export":
    from sfcomp.export import export_subset
    info = export_subset(paths, out, streaming=True, **kw)["counts"]
else:
    import numpy as np
    from sfcomp.scorefile import read_scores, default_field
    from sfcomp.select import make_mix
    from sfcomp.uids import write_subset
    arr = read_scores(paths[0])
    mix, info = make_mix(arr[["f0", "f1"]], np.asarray(arr[default_field(paths[0])]), **kw)
    write_subset(out, mix)
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mb": ru.ru_maxrss / 1024,
                  "info": info, "timings": {{k: round(v, 2) for k, v in timings.items()}}}}))
"""


def generate(out_dir: Path, n: int, parts: int, seed: int = 0) -> list[Path]:
    """`parts` score files of ~n/parts random uids each (sorted), made one part at a time; reused when present."""
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / f"complete-{n}-{parts}-{seed}.json"
    paths = [out_dir / f"part-{i:05d}.npy" for i in range(parts)]
    if marker.exists():
        return paths
    rng = np.random.default_rng(seed)
    for i, (p, m) in enumerate(zip(paths, np.diff(np.linspace(0, n, parts + 1).astype(np.int64)))):
        u = np.empty(m, UID_DTYPE)
        u["f0"] = rng.integers(0, 2**64, m, dtype=np.uint64)
        u["f1"] = rng.integers(0, 2**64, m, dtype=np.uint64)
        s = rng.normal(0.3, 0.05, m).astype(np.float32)
        write_scores(p, u, {"cosine": s}, meta={"part": i, "synthetic": True})
    marker.write_text(json.dumps({"n": n, "parts": parts, "seed": seed}))
    return paths


def merged_single(out_dir: Path, paths: list[Path]) -> Path:
    """The same pool as one score file (for the in-memory path)."""
    from sfcomp.scorefile import merge_score_files

    single = out_dir / "all.npy"
    if not single.exists():
        merge_score_files(paths, single)
    return single


def run_child(mode: str, out: Path, paths: list[Path], kw: dict) -> dict:
    code = CHILD.format(root=str(ROOT), mode=mode, out=str(out), paths=[str(p) for p in paths], kw=kw)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"child failed ({mode}):\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128_000_000)
    ap.add_argument("--parts", type=int, default=64)
    ap.add_argument("--top-frac", type=float, default=0.3)
    ap.add_argument("--random-frac", type=float, default=0.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compare", action="store_true", help="also time the in-memory path on one merged file")
    ap.add_argument("--export", action="store_true", help="also time export_subset (adds sha256 of inputs)")
    ap.add_argument("--nocheck", action="store_true", help="also time streaming without the disjoint-parts check")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "select")
    args = ap.parse_args()

    data = args.out / f"n{args.n}-p{args.parts}"
    t0 = time.perf_counter()
    paths = generate(data, args.n, args.parts)
    gen_s = time.perf_counter() - t0
    n = sum(score_info(p)["n"] for p in paths)
    print(json.dumps({"event": "data", "n": n, "parts": len(paths), "bytes": sum(p.stat().st_size for p in paths),
                      "prepare_s": round(gen_s, 1)}), flush=True)
    kw = {"top_frac": args.top_frac, "random_frac": args.random_frac}
    cases = [("stream", "parts", paths)]
    if args.compare:
        single = merged_single(data, paths)
        cases += [("memory", "single", [single]), ("stream", "single", [single])]
    if args.nocheck:
        cases.append(("stream-nocheck", "parts", paths))
    if args.export:
        cases.append(("export", "parts", paths))
    results: dict[str, list[dict]] = {}
    outputs: dict[str, bytes] = {}
    for rep in range(args.repeats):
        for mode, layout, ps in cases:
            name = f"{mode}-{layout}"
            out = args.out / f"subset-{name}.npy"
            r = run_child(mode, out, ps, kw)
            r.update(name=name, rep=rep)
            print(json.dumps(r), flush=True)
            results.setdefault(name, []).append(r)
            outputs[name] = out.read_bytes() if n <= 20_000_000 else b""
    if args.compare and n <= 20_000_000:
        same = len({v for v in outputs.values()}) == 1
        print(json.dumps({"event": "identical_outputs", "value": same}))
    summary = {name: {"wall_s": round(statistics.median(x["wall_s"] for x in rs), 2),
                      "cpu_s": round(statistics.median(x.get("cpu_s", 0) for x in rs), 2),
                      "peak_rss_mb": round(max(x["peak_rss_mb"] for x in rs), 1),
                      "passes": rs[0]["info"].get("passes"), "selected": rs[0]["info"]["union"],
                      "timings_median": {k: round(statistics.median(x["timings"].get(k, 0) for x in rs), 2)
                                         for k in rs[0]["timings"]}}
               for name, rs in results.items()}
    if "memory-single" in summary:
        summary["ratio_stream_single_over_memory"] = round(
            summary["stream-single"]["wall_s"] / summary["memory-single"]["wall_s"], 2)
        summary["ratio_stream_parts_over_memory"] = round(
            summary["stream-parts"]["wall_s"] / summary["memory-single"]["wall_s"], 2)
    print(json.dumps({"event": "summary", "n": n, "parts": len(paths), **summary}, indent=1))


if __name__ == "__main__":
    main()

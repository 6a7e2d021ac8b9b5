"""Methods side by side: one markdown table and one PNG plot from train-eval run folders.

A run folder holds eval_results.jsonl (DataComp's lines) and, when made by `sfcomp train-eval`, run.json
(method, seed, subset size, clean precision, samples seen...). Runs with the same method are seeds: every number
is shown as mean +- std (sample std over seeds; a single seed shows no spread).
"""
from __future__ import annotations

import json
import re
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from sfcomp.atomic import atomic_open
from sfcomp.errors import BadInputError
from sfcomp.guard import check_outputs, check_replaceable

from .evaluate import read_results


@dataclass
class Run:
    method: str
    seed: int | None
    subset_size: int | None
    clean_precision: float | None
    samples_seen: int | None
    metrics: dict[str, float]  # dataset -> main metric
    average: float | None
    eval_code: str | None
    path: str


@dataclass
class MethodRow:
    method: str
    runs: list[Run] = field(default_factory=list)

    def values(self, getter) -> list[float]:
        return [v for v in (getter(r) for r in self.runs) if v is not None]


def load_run(path: str | os.PathLike) -> Run:
    """A run from a run folder (eval_results.jsonl [+ run.json]) or an eval_results.jsonl file."""
    p = Path(path)
    results = p if p.is_file() else p / "eval_results.jsonl"
    folder = results.parent
    if not results.exists():
        raise BadInputError(p, "no eval_results.jsonl here (run `sfcomp train-eval` or `sfcomp evaluate` first)")
    rows = read_results(results)
    if not rows:
        raise BadInputError(results, "no results in file")
    info = {}
    if (folder / "run.json").exists():
        try:
            info = json.loads((folder / "run.json").read_text())
        except json.JSONDecodeError as e:
            raise BadInputError(folder / "run.json", f"not JSON ({e})") from None
        if not isinstance(info, dict):
            raise BadInputError(folder / "run.json", f"not a JSON object ({type(info).__name__})")
        check_run_info(folder / "run.json", info)
    metrics = {r["dataset"]: r["metrics"].get("main_metric") for r in rows}
    vals = [v for v in metrics.values() if v is not None]
    codes = {r.get("eval_code") for r in rows}
    return Run(method=info.get("method") or folder.name, seed=info.get("seed"), subset_size=info.get("subset_size"),
               clean_precision=info.get("clean_precision"), samples_seen=info.get("samples_seen"),
               metrics=metrics, average=float(np.mean(vals)) if vals else None,
               eval_code=codes.pop() if len(codes) == 1 else "mixed", path=str(folder))


# run.json keys compare reads: what each may hold (null or absent: unknown)
_RUN_KEYS = {
    "method": ("a non-empty string", lambda v: isinstance(v, str) and v != ""),
    "seed": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "subset_size": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "samples_seen": ("an integer > 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "clean_precision": ("a number in [0, 1]", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                        and 0 <= v <= 1),
}


def check_run_info(path: Path, info: dict) -> None:
    for key, (want, ok) in _RUN_KEYS.items():
        v = info.get(key)
        if v is not None and not ok(v):
            raise BadInputError(path, f"{key} is {v!r}, expected {want} (or null)")


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run folders from the arguments: a run folder itself, or any folder holding run folders (searched)."""
    out = []
    for p in map(Path, paths):
        if p.is_file() or (p / "eval_results.jsonl").exists():
            out.append(p)
        elif p.is_dir():
            found = sorted(x.parent for x in p.rglob("eval_results.jsonl"))
            if not found:
                raise BadInputError(p, "no eval_results.jsonl under this folder")
            out.extend(found)
        else:
            raise BadInputError(p, "does not exist")
    seen: dict[str, Path] = {}
    for p in out:  # one run given twice would count as two seeds
        key = os.path.realpath(p)
        if key in seen:
            raise BadInputError(p, f"the same run as {seen[key]}, given twice (it would count as two seeds)")
        seen[key] = p
    return out


def group(runs: Sequence[Run]) -> list[MethodRow]:
    rows: OrderedDict[str, MethodRow] = OrderedDict()
    for r in runs:
        rows.setdefault(r.method, MethodRow(r.method)).runs.append(r)
    return list(rows.values())


def mean_std(vals: Sequence[float]) -> tuple[float, float] | None:
    if not vals:
        return None
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(vals: Sequence[float], digits: int = 3, pct: bool = False) -> str:
    ms = mean_std(vals)
    if ms is None:
        return "-"
    m, s = ms
    scale = 100.0 if pct else 1.0
    d = 1 if pct else digits
    if len(vals) == 1:
        return f"{m * scale:.{d}f}"
    return f"{m * scale:.{d}f} ± {s * scale:.{d}f}"


def table(rows: Sequence[MethodRow]) -> str:
    """Markdown: method, seeds, subset size, clean precision, each task's main metric, average."""
    datasets = list(OrderedDict.fromkeys(d for row in rows for r in row.runs for d in r.metrics))
    has_precision = any(row.values(lambda r: r.clean_precision) for row in rows)
    head = ["method", "seeds", "subset size"] + (["clean precision"] if has_precision else []) + datasets + \
        ["average"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        sizes = row.values(lambda r: r.subset_size)
        cells = [row.method, str(len(row.runs)), f"{int(np.mean(sizes)):,}" if sizes else "-"]
        if has_precision:
            cells.append(fmt(row.values(lambda r: r.clean_precision)))
        cells += [fmt(row.values(lambda r, d=d: r.metrics.get(d))) for d in datasets]
        cells.append(fmt(row.values(lambda r: r.average)))
        lines.append("| " + " | ".join(cells) + " |")
    codes = sorted({r.eval_code for row in rows for r in row.runs if r.eval_code})
    seen = sorted({r.samples_seen for row in rows if not is_equal_compute(row.method)
                   for r in row.runs if r.samples_seen})
    longer = [f"{row.method} {', '.join(f'{s:,}' for s in sorted({r.samples_seen for r in row.runs}))}"
              for row in rows if is_equal_compute(row.method) and all(r.samples_seen for r in row.runs)]
    notes = []
    if seen:
        notes.append(f"samples seen: {', '.join(f'{s:,}' for s in seen)}" +
                     ("" if len(seen) == 1 else " (NOT equal across runs: not comparable)"))
    if longer:
        notes.append("equal-compute arms, trained longer on purpose (the loop's compute in samples): " +
                     "; ".join(longer))
    if codes:
        notes.append(f"evaluation code: {'; '.join(codes)}")
    notes.append("mean ± std over seeds (sample std)")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def is_equal_compute(method: str) -> bool:
    """An equal-total-compute arm (`no_filter_eqc`, `no_filter_eqc_r3`): its samples seen differ by design."""
    return re.search(r"_eqc(_|$)", method) is not None


def metric_getter(metric: str):
    """A run's value on one metric: a dataset's main metric, or "average"."""
    return (lambda r: r.average) if metric == "average" else (lambda r: r.metrics.get(metric))


REFERENCES = ("random_30", "no_filter_eqc", "clip_b32_30", "clip_l14_30")  # besides the floor and ceiling


def separation(rows: Sequence[MethodRow], metric: str, floor: str = "no_filter",
               ceiling: str = "oracle_clean") -> float | None:
    """(ceiling - floor) / pooled seed std, the pooled std being sqrt((s_floor^2 + s_ceiling^2) / 2); None
    without both methods at 2+ seeds each, or with no spread at all."""
    by = {r.method: r for r in rows}
    get = metric_getter(metric)
    vals = [by[m].values(get) if m in by else [] for m in (floor, ceiling)]
    if min(len(v) for v in vals) < 2:
        return None
    (m0, s0), (m1, s1) = (mean_std(v) for v in vals)
    pooled = float(np.sqrt((s0 ** 2 + s1 ** 2) / 2))
    return (m1 - m0) / pooled if pooled > 0 else None


def standing(rows: Sequence[MethodRow], metric: str, floor: str = "no_filter", ceiling: str = "oracle_clean",
             others: Sequence[str] = REFERENCES) -> str:
    """Markdown: each method against the references on one metric (a dataset's main metric or "average").

    References: the floor, `others` (a name ending in `_eqc` matches every method starting with it, as
    `no_filter_eqc_r3`) and the ceiling. `gap closed` = (method - floor) / (ceiling - floor), from the means. A
    difference is marked `clear` when it is larger than the two methods' seed spreads added (sample stds), else
    `within spread`, or `one seed: no spread` when either has a single seed. References missing from `rows`
    get no column; an empty string when the floor is missing."""
    by = {r.method: r for r in rows}
    get = metric_getter(metric)
    stats = {m: mean_std(by[m].values(get)) for m in by}
    if stats.get(floor) is None:
        return ""
    named = [m for o in others for m in by if m == o or (o.endswith("_eqc") and m.startswith(o))]
    refs = [m for m in (floor, *named, ceiling) if stats.get(m) is not None]
    has_ceiling = stats.get(ceiling) is not None and stats[ceiling][0] != stats[floor][0]
    head = ["method", metric] + [f"vs {m}" for m in refs] + ([f"gap {floor} -> {ceiling} closed"]
                                                             if has_ceiling else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        st = stats.get(row.method)
        if st is None:
            continue
        cells = [row.method, fmt(row.values(get))]
        for ref in refs:
            if ref == row.method:
                cells.append("")
                continue
            d = st[0] - stats[ref][0]
            spread = st[1] + stats[ref][1]
            if min(len(by[m].values(get)) for m in (row.method, ref)) < 2:
                verdict = "one seed: no spread"
            else:
                verdict = "clear" if abs(d) > spread else "within spread"
            cells.append(f"{d:+.3f} ({verdict})")
        if has_ceiling:
            cells.append(f"{(st[0] - stats[floor][0]) / (stats[ceiling][0] - stats[floor][0]):.0%}")
        lines.append("| " + " | ".join(cells) + " |")
    sep = separation(rows, metric, floor, ceiling)
    if sep is not None:
        lines += ["", f"- {floor} -> {ceiling} gap / pooled seed std: {sep:.1f}"]
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[MethodRow], path: str | os.PathLike) -> None:
    """One PNG: a panel per metric (each task's main metric, the average, clean precision if known),
    one horizontal bar per method with its seed spread as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(OrderedDict.fromkeys(d for row in rows for r in row.runs for d in r.metrics))
    panels = [(d, lambda r, d=d: r.metrics.get(d)) for d in datasets] + [("average", lambda r: r.average)]
    if any(row.values(lambda r: r.clean_precision) for row in rows):
        panels.append(("clean precision", lambda r: r.clean_precision))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.5, 0.45 * len(rows) + 1.6),
                             sharey=True, squeeze=False)
    y = np.arange(len(rows))
    for ax, (title, get) in zip(axes[0], panels):
        stats = [mean_std(row.values(get)) or (np.nan, 0.0) for row in rows]
        ax.barh(y, [m for m, _ in stats], xerr=[s for _, s in stats], color="tab:blue", alpha=0.75, capsize=3)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        finite = [m for m, _ in stats if np.isfinite(m)]
        if finite:
            lo, hi = min(finite), max(m + s for m, s in stats if np.isfinite(m))
            ax.set_xlim(max(0.0, lo - 0.1 * (hi - lo + 1e-3) - 0.02), hi + 0.05 * (hi - lo + 1e-3) + 0.01)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels([f"{r.method} (n={len(r.runs)})" for r in rows], fontsize=8)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _looks_like_table(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(9) == b"| method "


def _looks_like_png(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def compare(paths: Sequence[str | os.PathLike], out_md: str | os.PathLike | None = None,
            out_png: str | os.PathLike | None = None, order: Sequence[str] | None = None,
            strict_order: bool = False) -> str:
    """Load runs, group by method (optionally in `order`), write the markdown table / PNG; return the table.

    An output may replace an earlier table / plot, never another file. `strict_order`: a method named in `order`
    that no run has is an error (the CLI's `--order`; a bench lists every arm it may have skipped)."""
    found = expand_paths(paths)
    read = [f for p in found for f in ((p, p.parent / "run.json") if p.is_file()
                                        else (p / "eval_results.jsonl", p / "run.json"))]
    check_outputs([out_md], read, what="--md")
    check_outputs([out_png], read, what="--png")
    if out_md and out_png and os.path.realpath(out_md) == os.path.realpath(out_png):
        raise BadInputError(out_png, "--md and --png name the same file")
    if out_md:
        check_replaceable(out_md, what="--md", kind="markdown table written by compare", looks_like=_looks_like_table,
                          has_sidecar=False)
    if out_png:
        check_replaceable(out_png, what="--png", kind="PNG", looks_like=_looks_like_png, has_sidecar=False)
    runs = [load_run(p) for p in found]
    rows = group(runs)
    if order and strict_order:
        unknown = [m for m in order if m not in {r.method for r in rows}]
        if unknown:
            raise BadInputError(None, f"--order names {unknown[0]!r}, which no run has (methods: "
                                      f"{', '.join(r.method for r in rows)})")
    if order:
        rank = {m: i for i, m in enumerate(order)}
        rows.sort(key=lambda r: rank.get(r.method, len(rank)))
    md = table(rows)
    for metric in [d for d in OrderedDict.fromkeys(d for row in rows for r in row.runs for d in r.metrics)
                   if not d.endswith("retrieval")][:1] + ["average"]:
        part = standing(rows, metric)
        if part:
            md += f"\nAgainst the references, {metric} (difference of means; clear = larger than the two seed " \
                  f"spreads added):\n\n" + part
    if out_md:
        with atomic_open(out_md, "w") as f:
            f.write(md)
    if out_png:
        plot(rows, out_png)
    return md

"""`make sweep`: the mix (top x random x rounds) and score-type sweep that sets `sfcomp run`'s defaults.

    python bench/experiments/sweep_mix.py --pool P1 --pool P2 [--out bench/out/sweep] [--mixes 0.3:0.1,0.5:0.0,...]

For every pool (each needs truth.parquet) and every (score type, mix): `sfcomp run` for R rounds, all runs of a
pool sharing one round 0 (`--round0-from`: round 0 trains on the whole pool, so its models and scores do not
depend on the mix or on the score that selects; score types needing other round-0 work, such as ckpt_avg's
snapshots, share one of their own). The score types and the `sfcomp run` options each needs come from the
registry (sfcomp/scoretypes.py). After round k-1 the run's own score ranks the pool and its top `--fraction`
(the exported subset: the rule of `sfcomp export-subset --top-frac`, `sfcomp.select.top_fraction_mask`) is
measured against truth.parquet:
    precision      clean share of the subset
    class_balance  entropy of the subset's image classes / log(number of classes) (1 = even)
    memorised      noisy samples of the `random_string` type in the subset (what in-sample scores let through)
    auroc          of the score for clean vs noisy over the whole pool
The choice: the (score, mix) with the best precision after the last round, averaged over pools, where cells
within `--tie` of the best count as tied and the larger random fraction (then top fraction) wins; results
(markdown + JSON) in OUT/sweep.md, OUT/sweep.json. Resumable: finished rounds are kept.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from arguments import OneLineParser, fraction_problem, minimum_problem, mixes_problem, out_problem, refuse
from run_all import append_log, sfcomp, write_results
from sfcomp.scoretypes import SCORE_TYPES

ROOT = Path(__file__).resolve().parents[2]


def tag_of(score: str, mix: str) -> str:
    top, rnd = (float(x) for x in mix.split(":"))
    return f"{score}_t{int(round(top * 100))}r{int(round(rnd * 100))}"


def load_truth(pool: Path) -> dict[str, np.ndarray]:
    from sfcomp.truth import read_truth, truth_path

    t = read_truth(truth_path(pool), ["clean", "noise_type", "class"])
    return {"truth": t, "clean": t.columns["clean"].astype(bool), "noise_type": t.columns["noise_type"].astype(str),
            "class": t.columns["class"]}


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score), np.float64)
    ranks[order] = np.arange(1, len(score) + 1)
    # ties: average ranks
    s = score[order]
    bounds = np.flatnonzero(np.r_[True, s[1:] != s[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a > 1:
            ranks[order[a:b]] = (a + 1 + b) / 2
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def measure(scores_path: Path, field: str, truth: dict, fraction: float) -> dict:
    """Metrics of the top `fraction` (of the scored samples, as export-subset counts) by `field`."""
    from sfcomp.scorefile import read_scores
    from sfcomp.select import top_fraction_mask

    arr = read_scores(scores_path, mmap=False)
    pos = truth["truth"].locate(arr[["f0", "f1"]])
    if (pos < 0).any():
        raise SystemExit(f"error: {scores_path}: {int((pos < 0).sum())} scored uids are missing from truth.parquet")
    clean, noise, cls = truth["clean"][pos], truth["noise_type"][pos], truth["class"][pos]
    s = np.asarray(arr[field], np.float64)
    top = np.flatnonzero(top_fraction_mask(arr[field], fraction, scores_path))
    k = len(top)
    _, counts = np.unique(cls[top], return_counts=True)
    p = counts / counts.sum()
    n_classes = len(np.unique(cls))
    return {"precision": float(clean[top].mean()),
            "class_balance": float(-(p * np.log(p)).sum() / np.log(n_classes)) if n_classes > 1 else 1.0,
            "memorised": int((noise[top] == "random_string").sum()),
            "auroc": auroc(s, clean), "k": k}


class Sweep:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.out = Path(a.out).resolve()
        self.scores = [s.strip() for s in a.scores.split(",") if s.strip()]
        self.mixes = [m.strip() for m in a.mixes.split(",") if m.strip()]
        self.cosine_mixes = [m.strip() for m in (a.other_score_mixes or a.mixes).split(",") if m.strip()]
        self.log_lines: list[str] = []
        self.timings: dict[str, float] = {}

    def log(self, msg: str) -> None:
        append_log(self.out / "sweep.log", msg)

    def cells(self) -> list[tuple[str, str]]:
        """The first of --scores over every --mixes, the others over --other-score-mixes."""
        out = [(self.scores[0], m) for m in self.mixes] if self.scores else []
        for s in self.scores[1:]:
            out += [(s, m) for m in self.cosine_mixes]
        return out

    def run_loop(self, pool: Path, work: Path, score: str, mix: str, round0_from: Path | None,
                 rounds: int | None = None) -> None:
        top, rnd = mix.split(":")
        args = ["run", "--pool", str(pool), "--workdir", str(work), "--rounds", str(rounds or self.a.rounds),
                "--top-frac", top, "--random-frac", rnd, "--score", score, "--seed", str(self.a.loop_seed),
                "--quiet"] + (["--steps", str(self.a.loop_steps)] if self.a.loop_steps else [])
        args += list(SCORE_TYPES[score].run_args)  # what makes the loop compute this score type
        if round0_from is not None:
            args += ["--round0-from", str(round0_from)]
        if self.a.threads:
            args += ["--threads", str(self.a.threads)]
        t0 = time.time()
        r = sfcomp(*args, log=self.log)
        self.timings[f"{pool.name}/{work.name}"] = round(time.time() - t0, 1)
        if r.returncode != 0:
            raise SystemExit(f"error: sfcomp run failed for {work}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        self.log(f"done {pool.name}/{work.name} in {time.time() - t0:.0f}s")

    def run_pool(self, pool: Path) -> list[dict]:
        pool_out = self.out / pool.name
        cells = self.cells()
        # one round 0 per round-0 setting: a score type's own run options (ckpt_avg's snapshots) make its own
        bases: dict[tuple[str, ...], tuple[str, str]] = {}
        for score, mix in cells:
            bases.setdefault(SCORE_TYPES[score].run_args, (score, mix))
        with ThreadPoolExecutor(max_workers=self.a.jobs) as ex:  # round 0 of each base, then all runs at once
            for f in [ex.submit(self.run_loop, pool, pool_out / tag_of(s, m), s, m, None, 1)
                      for s, m in bases.values()]:
                f.result()
            futures = [ex.submit(self.run_loop, pool, pool_out / tag_of(s, m), s, m,
                                 None if (s, m) in bases.values() else
                                 pool_out / tag_of(*bases[SCORE_TYPES[s].run_args]))
                       for s, m in cells]
            for f in futures:
                f.result()
        truth = load_truth(pool)
        rows = []
        for score, mix in cells:
            work = pool_out / tag_of(score, mix)
            for k in range(1, self.a.rounds + 1):
                m = measure(work / f"round_{k - 1:02d}" / "scores.npy", score, truth, self.a.fraction)
                rows.append({"pool": pool.name, "score": score, "mix": mix, "rounds": k, **m})
        return rows

    def choose(self, rows: list[dict]) -> dict:
        last = [r for r in rows if r["rounds"] == self.a.rounds]
        by_cell: dict[tuple[str, str], list[dict]] = {}
        for r in last:
            by_cell.setdefault((r["score"], r["mix"]), []).append(r)
        ranked = sorted(by_cell.items(), key=lambda kv: -np.mean([r["precision"] for r in kv[1]]))
        best = np.mean([r["precision"] for r in ranked[0][1]])
        # within --tie of the best is a tie (one loop seed per cell: differences that small are noise); among
        # ties the larger random fraction wins (the diversity guard against self-confirmation), then larger top
        ties = [kv for kv in ranked if np.mean([r["precision"] for r in kv[1]]) >= best - self.a.tie]
        (score, mix), rs = max(ties, key=lambda kv: tuple(float(x) for x in kv[0][1].split(":"))[::-1])
        return {"score": score, "mix": mix, "rounds": self.a.rounds, "tie": self.a.tie,
                "tied": [f"{s} {m}" for (s, m), _ in ties],
                "mean_precision": float(np.mean([r["precision"] for r in rs])),
                "per_pool": {r["pool"]: r["precision"] for r in rs},
                "ranking": [{"score": s, "mix": m, "mean_precision": float(np.mean([r["precision"] for r in v])),
                             "mean_class_balance": float(np.mean([r["class_balance"] for r in v]))}
                            for (s, m), v in ranked]}

    def markdown(self, rows: list[dict], choice: dict, pools: list[Path]) -> str:
        lines = [f"Top {self.a.fraction:.0%} of each run's own score after k rounds (k = 1 is round 0's scores, "
                 f"shared by every mix of a score type). precision = clean share; balance = class entropy / "
                 f"log(classes); memorised = random-string noise kept. Every run: `sfcomp run` with the library's "
                 f"defaults but the swept settings" + (f", overriding `--steps {self.a.loop_steps}` (fixed steps; the "
                 f"default lets the held-out rule set them)." if self.a.loop_steps else " (score types that need "
                 "--snapshots train the preset's fixed steps: a snapshot is a fraction of a fixed length)."), ""]
        header = "| score | mix (top:random) | " + " | ".join(
            f"{p.name} r{k} precision" for p in pools for k in range(1, self.a.rounds + 1)) + \
            " | mean precision, last round | mean balance, last round | mean memorised, last round |"
        lines += [header, "|" + "---|" * (header.count("|") - 1)]
        for score, mix in self.cells():
            cell = [r for r in rows if r["score"] == score and r["mix"] == mix]
            vals = []
            for p in pools:
                for k in range(1, self.a.rounds + 1):
                    hit = [r for r in cell if r["pool"] == p.name and r["rounds"] == k]
                    vals.append(f"{hit[0]['precision']:.3f}" if hit else "-")
            last = [r for r in cell if r["rounds"] == self.a.rounds]
            best = (score, mix) == (choice["score"], choice["mix"])
            mp = f"{np.mean([r['precision'] for r in last]):.4f}"
            lines.append(f"| {score} | {mix} | " + " | ".join(vals) + f" | {'**' + mp + '**' if best else mp} | "
                         f"{np.mean([r['class_balance'] for r in last]):.3f} | "
                         f"{np.mean([r['memorised'] for r in last]):.0f} |")
        lines += ["", f"Chosen: `--score {choice['score']}`, top:random `{choice['mix']}`, {choice['rounds']} rounds "
                      f"(mean precision {choice['mean_precision']:.4f}). Within {choice['tie']} of the best mean "
                      f"(a tie, larger random fraction preferred): {', '.join(choice['tied'])}."]
        return "\n".join(lines) + "\n"

    def run(self) -> int:
        t0 = time.time()
        if refuse(argument_problem(self.a)):
            return 2
        unknown = [s for s in self.scores if s not in SCORE_TYPES]
        if unknown:
            print(f"error: --scores: unknown score type {unknown[0]!r} (registered: {', '.join(SCORE_TYPES)})",
                  file=sys.stderr)
            return 2
        pools = [Path(p).resolve() for p in self.a.pool]
        for p in pools:
            if not (p / "truth.parquet").exists():
                print(f"error: {p}: no truth.parquet; the sweep measures precision against it", file=sys.stderr)
                return 2
        rows = []
        for p in pools:
            self.log(f"pool {p}: {len(self.cells())} runs x {self.a.rounds} rounds")
            rows += self.run_pool(p)
        choice = self.choose(rows)
        md = self.markdown(rows, choice, pools)
        write_results(self.out, "sweep", md, {"pools": [str(p) for p in pools], "args": vars(self.a), "rows": rows,
                                              "choice": choice, "timings_s": self.timings}, t0)
        print(md)
        return 0


def argument_problem(a: argparse.Namespace) -> str | None:
    """What is wrong with the sweep's arguments (one line), before anything runs; None when nothing is."""
    return (mixes_problem("--mixes", a.mixes) or mixes_problem("--other-score-mixes", a.other_score_mixes)
            or fraction_problem("--fraction", a.fraction)
            or minimum_problem(("--rounds", a.rounds, 1), ("--tie", a.tie, 0), ("--loop-steps", a.loop_steps, 0),
                               ("--loop-seed", a.loop_seed, 0), ("--threads", a.threads, 1), ("--jobs", a.jobs, 1))
            or out_problem(a.out, a.pool))


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", action="append", required=True, help="a pool with truth.parquet (repeat)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "sweep"))
    p.add_argument("--mixes", default="0.2:0.1,0.3:0.0,0.3:0.1,0.5:0.0,0.5:0.1",
                   help="top:random mixes for the first of --scores")
    p.add_argument("--scores", default=",".join(SCORE_TYPES), help="score types (default: every registered one)")
    p.add_argument("--other-score-mixes", default="0.3:0.1",
                   help="mixes run with the other score types")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fraction", type=float, default=0.3, help="exported subset size, as a fraction of the pool")
    p.add_argument("--tie", type=float, default=0.005,
                   help="mean precisions this close to the best are a tie (about one binomial standard error of "
                        "a precision over ~6k samples)")
    p.add_argument("--loop-steps", type=int, default=0, help="fixed steps a model (0: the library's default)")
    p.add_argument("--loop-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="loop runs at once")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(Sweep(parse_args()).run())

"""`make sweep-steps`: fixed training steps per in-loop model against a stopping rule (issue 12, item 6).

    python bench/experiments/sweep_steps.py --pool P1 [--pool P2 ...] [--steps 50,100,200,400]
        [--rule heldout] [--rounds 3] [--folds 2] [--loop-seeds 0,1,2] [--out bench/out/sweep_steps] [--jobs 2]
        [--run-args=--warm-start] [--measure-only]

For every pool (each needs truth.parquet): one `sfcomp run` per fixed step count (`--stop fixed --steps S`) and
one with the rule (`--stop RULE`, its cap the preset's steps unless `--rule-cap`), every other setting the
library's default. After each round k, the run's own round-k score ranks the pool and its top `--fraction`
(export-subset's rule, `sfcomp.select.top_fraction_mask`) is measured against truth.parquet (clean share,
`sweep_mix.measure`), next to the run's compute through round k (the round's done.json: train FLOPs, the
held-out evaluations' FLOPs, and the total with scoring).

Every arm runs once per loop seed (`--loop-seeds`; seed 0 in OUT/POOL/ARM, seed s in OUT/POOL/ARM_seed{s}), and
a cell is the mean over the seeds with their sample std. The test the issue sets, per pool and round, on those
means: the rule's clean share is within `--tolerance` (0.01) of the best fixed step count's, and its training compute (train + held-out evaluation FLOPs through that round) is at most
`--compute-factor` (1.25) times that count's. Scoring is the same for every arm (each model scores the whole pool),
so it is left out of the compute test (it would only make the test easier) and shown in the table.
Results: OUT/sweep_steps.md, OUT/sweep_steps.json. Resumable: finished rounds are kept. `--measure-only` runs
nothing and tables the runs finished under OUT (a partial sweep, or runs added seed by seed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from arguments import OneLineParser, fraction_problem, int_list, minimum_problem, out_problem, refuse
from run_all import append_log, sfcomp, write_results
from sweep_mix import load_truth, measure

ROOT = Path(__file__).resolve().parents[2]


def arm_tags(steps: list[int], rule: str) -> list[str]:
    return [f"fixed{s}" for s in steps] + [rule]


def round_compute(work: Path, k: int) -> dict:
    """Compute through round k (done.json's run totals) and the steps each model of round k took."""
    done = json.loads((work / f"round_{k:02d}" / "done.json").read_text())
    c = done["compute"]["run_so_far"]
    stopping = done.get("stopping") or []
    return {"train_flops": c["train_flops"], "eval_flops": c.get("eval_flops", 0.0),
            "total_flops": c["total_flops"], "cost_ratio": done["compute"]["cost_ratio"],
            "steps": [s["steps"] for s in stopping] if stopping else None,
            "stop_reasons": [s["stop_reason"] for s in stopping] if stopping else None}


def arm_dir(out: Path, pool: str, arm: str, seed: int) -> Path:
    return out / pool / (arm if seed == 0 else f"{arm}_seed{seed}")


def seed_means(rows: list[dict]) -> dict[tuple, dict]:
    """(pool, round, arm) -> the mean over loop seeds of clean share and training compute, the clean share's
    sample std (0 for one seed) and the seeds. A row without "seed" is seed 0."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["pool"], r["round"], r["arm"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        prec = [r["precision"] for r in rs]
        out[key] = {"arm": key[2], "precision": statistics.fmean(prec),
                    "std": statistics.stdev(prec) if len(prec) > 1 else 0.0,
                    "seeds": sorted(r.get("seed", 0) for r in rs),
                    "train": statistics.fmean(r["train_flops"] + r["eval_flops"] for r in rs),
                    "steps": [r.get("steps") for r in rs]}
    return out


def verdict(rows: list[dict], rule: str, tolerance: float, factor: float) -> list[dict]:
    """Per (pool, round), on the means over loop seeds: the best fixed arm, the rule's gap to it and its
    compute ratio, and pass/fail."""
    means = seed_means(rows)
    out = []
    for pool, k in sorted({(r["pool"], r["round"]) for r in rows}):
        cell = {arm: m for (p, kk, arm), m in means.items() if p == pool and kk == k}
        fixed = [m for a, m in cell.items() if a != rule]
        if rule not in cell or not fixed:
            continue
        # the best fixed count; among counts tied on clean share the cheaper one is the bar (stricter on compute)
        best = max(fixed, key=lambda m: (m["precision"], -m["train"]))
        r = cell[rule]
        gap, ratio = best["precision"] - r["precision"], r["train"] / best["train"]
        out.append({"pool": pool, "round": k, "best_fixed": best["arm"], "best_precision": best["precision"],
                    "best_std": best["std"], "best_seeds": best["seeds"], "rule_precision": r["precision"],
                    "rule_std": r["std"], "rule_seeds": r["seeds"], "gap": gap, "compute_ratio": ratio,
                    "passes": bool(gap <= tolerance and ratio <= factor)})
    return out


def markdown(rows: list[dict], verdicts: list[dict], a: argparse.Namespace) -> str:
    arms = arm_tags(a.steps, a.rule)
    lines = [f"Clean share of the top {a.fraction:.0%} of each run's own score after round k, and the run's "
             f"training compute through round k (train + held-out evaluation FLOPs; the total with scoring in "
             f"sweep_steps.json). {a.folds} folds, the library's other defaults. Test: the `{a.rule}` rule within "
             f"{a.tolerance} of the best fixed count, at <= {a.compute_factor} x its training compute, on the means "
             f"over loop seeds {','.join(map(str, a.loop_seeds))} (mean ± sample std and n where an arm has more than one).", ""]
    lines += ["| pool | round | " + " | ".join(arms) + " | rule's steps per model | best fixed | gap | compute ratio | passes |",
              "|" + "---|" * (len(arms) + 7)]
    means = seed_means(rows)

    def shown(m: dict) -> str:
        spread = f" ± {m['std']:.3f} (n={len(m['seeds'])})" if len(m["seeds"]) > 1 else ""
        return f"{m['precision']:.3f}{spread} ({m['train']:.3g})"

    for v in verdicts:
        cell = {arm: m for (p, k, arm), m in means.items() if p == v["pool"] and k == v["round"]}
        vals = [shown(cell[x]) if x in cell else "-" for x in arms]
        steps = "; ".join(str(x) for x in cell[a.rule]["steps"])
        lines.append(f"| {v['pool']} | {v['round']} | " + " | ".join(vals) + f" | {steps} | {v['best_fixed']} | "
                     f"{v['gap']:+.3f} | {v['compute_ratio']:.2f} | {'yes' if v['passes'] else '**no**'} |")
    n_pass = sum(v["passes"] for v in verdicts)
    lines += ["", f"{n_pass} of {len(verdicts)} (pool, round) cells pass."]
    return "\n".join(lines) + "\n"


class StepSweep:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.out = Path(a.out).resolve()
        self.timings: dict[str, float] = {}

    def log(self, msg: str) -> None:
        append_log(self.out / "sweep_steps.log", msg)

    def run_arm(self, pool: Path, arm: str, seed: int) -> None:
        work = arm_dir(self.out, pool.name, arm, seed)
        args = ["run", "--pool", str(pool), "--workdir", str(work), "--rounds", str(self.a.rounds),
                "--folds", str(self.a.folds), "--seed", str(seed), "--quiet"]
        preset = self.a.preset
        if arm == self.a.rule:
            args += ["--stop", self.a.rule] + (["--steps", str(self.a.rule_cap)] if self.a.rule_cap else [])
            preset = self.a.rule_preset or preset
        else:
            args += ["--stop", "fixed", "--steps", arm.removeprefix("fixed")]
        if preset:
            args += ["--preset", preset]
        if self.a.score:
            args += ["--score", self.a.score]
        if self.a.threads:
            args += ["--threads", str(self.a.threads)]
        args += self.a.run_args.split()
        t0 = time.time()
        r = sfcomp(*args, log=self.log)
        self.timings[f"{pool.name}/{work.name}"] = round(time.time() - t0, 1)
        if r.returncode != 0:
            raise SystemExit(f"error: sfcomp run failed for {work}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")

    def rows_of(self, pool: Path) -> tuple[list[dict], list[str]]:
        """Rows of every finished (arm, seed, round) under OUT, and the ones not there."""
        truth = load_truth(pool)
        rows, missing = [], []
        for arm in arm_tags(self.a.steps, self.a.rule):
            for seed in self.a.loop_seeds:
                work = arm_dir(self.out, pool.name, arm, seed)
                for k in range(self.a.rounds):
                    if not (work / f"round_{k:02d}" / "done.json").exists():
                        missing.append(f"{pool.name}/{work.name} round {k}")
                        continue
                    # the score the run selected its mixes by (config.json), as export-subset would take it
                    field = json.loads((work / "config.json").read_text())["loop"]["score"]
                    m = measure(work / f"round_{k:02d}" / "scores.npy", field, truth, self.a.fraction)
                    rows.append({"pool": pool.name, "arm": arm, "seed": seed, "round": k,
                                 "precision": m["precision"], "auroc": m["auroc"], **round_compute(work, k)})
        return rows, missing

    def run(self) -> int:
        t0 = time.time()
        if refuse(argument_problem(self.a)):
            return 2
        pools = [Path(p).resolve() for p in self.a.pool]
        for p in pools:
            if not (p / "truth.parquet").exists():
                print(f"error: {p}: no truth.parquet; the sweep measures clean share against it", file=sys.stderr)
                return 2
        # the longest runs first, so that two jobs finish together
        jobs = sorted(((p, arm, s) for s in self.a.loop_seeds for p in pools
                       for arm in arm_tags(self.a.steps, self.a.rule)),
                      key=lambda job: (job[2], -(int(job[1].removeprefix("fixed")) if job[1].startswith("fixed")
                                                 else 300)))
        if not self.a.measure_only:
            with ThreadPoolExecutor(max_workers=self.a.jobs) as ex:
                for f in [ex.submit(self.run_arm, *job) for job in jobs]:
                    f.result()
        measured = [self.rows_of(p) for p in pools]
        rows = [r for rs, _ in measured for r in rs]
        missing = [m for _, ms in measured for m in ms]
        verdicts = verdict(rows, self.a.rule, self.a.tolerance, self.a.compute_factor)
        md = markdown(rows, verdicts, self.a)
        if missing:
            md += f"\nNot finished, left out: {', '.join(missing)}.\n"
        write_results(self.out, "sweep_steps", md, {"pools": [str(p) for p in pools], "args": vars(self.a), "rows": rows,
                                              "verdicts": verdicts, "missing": missing, "timings_s": self.timings}, t0)
        print(md)
        return 0


def argument_problem(a: argparse.Namespace) -> str | None:
    """What is wrong with the sweep's arguments (one line), before anything runs; None when nothing is."""
    return (fraction_problem("--fraction", a.fraction)
            or minimum_problem(("--rule-cap", a.rule_cap, 1), ("--rounds", a.rounds, 1), ("--folds", a.folds, 2),
                               ("--tolerance", a.tolerance, 0), ("--compute-factor", a.compute_factor, 0),
                               ("--threads", a.threads, 1), ("--jobs", a.jobs, 1))
            or out_problem(a.out, a.pool))


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", action="append", required=True, help="a pool with truth.parquet (repeat)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "sweep_steps"))
    p.add_argument("--steps", type=int_list(1), default=[50, 100, 200, 400],
                   help="fixed step counts per model")
    p.add_argument("--rule", default="heldout", help="the `sfcomp run --stop` rule measured against them")
    p.add_argument("--rule-cap", type=int, default=None, help="the rule's cap (default: the preset's steps)")
    p.add_argument("--preset", default=None, help="in-loop preset (default: the library's)")
    p.add_argument("--rule-preset", default=None,
                   help="the rule arm's own preset (default: --preset), e.g. bench/experiments/presets/tiny-const-ema.json")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--run-args", default="", help="more `sfcomp run` options for every arm, e.g. --run-args=--warm-start")
    p.add_argument("--score", default=None, help="`sfcomp run --score` of every arm (default: the library's)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--fraction", type=float, default=0.3)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--compute-factor", type=float, default=1.25)
    p.add_argument("--loop-seeds", type=int_list(0), default=[0, 1, 2],
                   help="loop seeds: every arm runs once per seed, cells are means ± std")
    p.add_argument("--measure-only", action="store_true", help="run nothing: table the runs finished under --out")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="loop runs at once")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(StepSweep(parse_args()).run())

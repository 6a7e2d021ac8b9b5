"""`make sweep-steps`: fixed training steps per in-loop model against a stopping rule (issue 12, item 6).

    python bench/experiments/sweep_steps.py --pool P1 [--pool P2 ...] [--steps 50,100,200,400]
        [--rule heldout] [--rounds 3] [--folds 2] [--out bench/out/sweep_steps] [--jobs 2]

For every pool (each needs truth.parquet): one `sfcomp run` per fixed step count (`--stop fixed --steps S`) and
one with the rule (`--stop RULE`, its cap the preset's steps unless `--rule-cap`), every other setting the
library's default. After each round k, the run's own round-k score ranks the pool and its top `--fraction`
(export-subset's rule, `sfcomp.select.top_fraction_mask`) is measured against truth.parquet (clean share,
`sweep_mix.measure`), next to the run's compute through round k (the round's done.json: train FLOPs, the
held-out evaluations' FLOPs, and the total with scoring).

The test the issue sets, per pool and round: the rule's clean share is within `--tolerance` (0.01) of the best
fixed step count's, and its training compute (train + held-out evaluation FLOPs through that round) is at most
`--compute-factor` (1.25) times that count's. Scoring is the same for every arm (each model scores the whole pool),
so it is left out of the compute test (it would only make the test easier) and shown in the table.
Results: OUT/sweep_steps.md, OUT/sweep_steps.json. Resumable: finished rounds are kept.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def verdict(rows: list[dict], rule: str, tolerance: float, factor: float) -> list[dict]:
    """Per (pool, round): the best fixed arm, the rule's gap to it and its compute ratio, and pass/fail."""
    out = []
    for pool, k in sorted({(r["pool"], r["round"]) for r in rows}):
        cell = {r["arm"]: r for r in rows if r["pool"] == pool and r["round"] == k}
        fixed = [r for a, r in cell.items() if a != rule]
        if rule not in cell or not fixed:
            continue
        # the best fixed count; among counts tied on clean share the cheaper one is the bar (stricter on compute)
        best = max(fixed, key=lambda r: (r["precision"], -r["train_flops"]))
        r = cell[rule]
        train = lambda x: x["train_flops"] + x["eval_flops"]  # noqa: E731
        gap, ratio = best["precision"] - r["precision"], train(r) / train(best)
        out.append({"pool": pool, "round": k, "best_fixed": best["arm"], "best_precision": best["precision"],
                    "rule_precision": r["precision"], "gap": gap, "compute_ratio": ratio,
                    "passes": bool(gap <= tolerance and ratio <= factor)})
    return out


def markdown(rows: list[dict], verdicts: list[dict], a: argparse.Namespace) -> str:
    arms = arm_tags(a.steps, a.rule)
    lines = [f"Clean share of the top {a.fraction:.0%} of each run's own score after round k, and the run's "
             f"training compute through round k (train + held-out evaluation FLOPs; the total with scoring in "
             f"sweep_steps.json). {a.folds} folds, the library's other defaults. Test: the `{a.rule}` rule within "
             f"{a.tolerance} of the best fixed count, at <= {a.compute_factor} x its training compute.", ""]
    lines += ["| pool | round | " + " | ".join(arms) + " | rule's steps per model | best fixed | gap | compute ratio | passes |",
              "|" + "---|" * (len(arms) + 7)]
    for v in verdicts:
        cell = {r["arm"]: r for r in rows if r["pool"] == v["pool"] and r["round"] == v["round"]}
        vals = [f"{cell[x]['precision']:.3f} ({(cell[x]['train_flops'] + cell[x]['eval_flops']):.3g})"
                if x in cell else "-" for x in arms]
        steps = cell[a.rule]["steps"]
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

    def run_arm(self, pool: Path, arm: str) -> None:
        work = self.out / pool.name / arm
        args = ["run", "--pool", str(pool), "--workdir", str(work), "--rounds", str(self.a.rounds),
                "--folds", str(self.a.folds), "--seed", str(self.a.loop_seed), "--quiet"]
        if arm == self.a.rule:
            args += ["--stop", self.a.rule] + (["--steps", str(self.a.rule_cap)] if self.a.rule_cap else [])
        else:
            args += ["--stop", "fixed", "--steps", arm.removeprefix("fixed")]
        if self.a.preset:
            args += ["--preset", self.a.preset]
        if self.a.threads:
            args += ["--threads", str(self.a.threads)]
        t0 = time.time()
        r = sfcomp(*args, log=self.log)
        self.timings[f"{pool.name}/{arm}"] = round(time.time() - t0, 1)
        if r.returncode != 0:
            raise SystemExit(f"error: sfcomp run failed for {work}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")

    def rows_of(self, pool: Path) -> list[dict]:
        truth = load_truth(pool)
        rows = []
        for arm in arm_tags(self.a.steps, self.a.rule):
            work = self.out / pool.name / arm
            for k in range(self.a.rounds):
                m = measure(work / f"round_{k:02d}" / "scores.npy", "crossfit" if self.a.folds > 1 else "cosine",
                            truth, self.a.fraction)
                rows.append({"pool": pool.name, "arm": arm, "round": k, "precision": m["precision"],
                             "auroc": m["auroc"], **round_compute(work, k)})
        return rows

    def run(self) -> int:
        t0 = time.time()
        pools = [Path(p).resolve() for p in self.a.pool]
        for p in pools:
            if not (p / "truth.parquet").exists():
                print(f"error: {p}: no truth.parquet; the sweep measures clean share against it", file=sys.stderr)
                return 2
        # the longest runs first, so that two jobs finish together
        jobs = sorted(((p, arm) for p in pools for arm in arm_tags(self.a.steps, self.a.rule)),
                      key=lambda pa: -(int(pa[1].removeprefix("fixed")) if pa[1].startswith("fixed") else 300))
        with ThreadPoolExecutor(max_workers=self.a.jobs) as ex:
            for f in [ex.submit(self.run_arm, p, arm) for p, arm in jobs]:
                f.result()
        rows = [r for p in pools for r in self.rows_of(p)]
        verdicts = verdict(rows, self.a.rule, self.a.tolerance, self.a.compute_factor)
        md = markdown(rows, verdicts, self.a)
        write_results(self.out, "sweep_steps", md, {"pools": [str(p) for p in pools], "args": vars(self.a), "rows": rows,
                                              "verdicts": verdicts, "timings_s": self.timings}, t0)
        print(md)
        return 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", action="append", required=True, help="a pool with truth.parquet (repeat)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "sweep_steps"))
    p.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 200, 400],
                   help="fixed step counts per model")
    p.add_argument("--rule", default="heldout", help="the `sfcomp run --stop` rule measured against them")
    p.add_argument("--rule-cap", type=int, default=None, help="the rule's cap (default: the preset's steps)")
    p.add_argument("--preset", default=None, help="in-loop preset (default: the library's)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--fraction", type=float, default=0.3)
    p.add_argument("--tolerance", type=float, default=0.01)
    p.add_argument("--compute-factor", type=float, default=1.25)
    p.add_argument("--loop-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="loop runs at once")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(StepSweep(parse_args()).run())

"""`make sweep-steps` (bench/experiments/sweep_steps.py): fixed step counts against the stopping rule, per pool
and round. The verdict (the issue's test) is checked on rows built here; the driver runs for real on a tiny pool
with the micro preset (2 fixed counts and the held-out rule, 2 rounds)."""
from __future__ import annotations

import json
import os
import subprocess
import sys


import _e_harness as H

SCRIPT = H.ROOT / "bench" / "experiments" / "sweep_steps.py"


def _verdict(rows: list[dict]) -> list[dict]:
    """sweep_steps.verdict(rows, "heldout", 0.01, 1.25), in a child whose import path has bench/experiments."""
    code = ("import json, sys; from sweep_steps import verdict; "
            "print(json.dumps(verdict(json.loads(sys.stdin.read()), 'heldout', 0.01, 1.25)))")
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent)}
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps(rows), capture_output=True, text=True,
                       env=env, check=True)
    return json.loads(r.stdout)


def _row(arm: str, precision: float, train: float, evals: float = 0.0) -> dict:
    return {"pool": "p", "round": 0, "arm": arm, "precision": precision, "train_flops": train, "eval_flops": evals}


def test_rule_within_tolerance_at_most_the_compute_passes():
    v = _verdict([_row("fixed100", 0.80, 100.0), _row("fixed200", 0.85, 200.0), _row("heldout", 0.845, 200.0, 40.0)])
    assert [(x["best_fixed"], x["passes"]) for x in v] == [("fixed200", True)]


def test_rule_over_the_compute_factor_fails():
    v = _verdict([_row("fixed200", 0.85, 200.0), _row("heldout", 0.85, 240.0, 20.0)])
    assert [(round(x["compute_ratio"], 2), x["passes"]) for x in v] == [(1.3, False)]


def test_rule_below_the_tolerance_fails():
    v = _verdict([_row("fixed50", 0.70, 50.0), _row("fixed400", 0.90, 400.0), _row("heldout", 0.88, 100.0)])
    assert [(x["best_fixed"], round(x["gap"], 3), x["passes"]) for x in v] == [("fixed400", 0.02, False)]


def test_tied_fixed_counts_make_the_cheaper_one_the_bar():
    v = _verdict([_row("fixed400", 0.90, 400.0), _row("fixed100", 0.90, 100.0), _row("heldout", 0.90, 150.0)])
    assert [(x["best_fixed"], x["passes"]) for x in v] == [("fixed100", False)]


def test_cells_are_means_over_loop_seeds():
    rows = [{**_row("fixed200", p, 200.0), "seed": s} for s, p in enumerate((0.80, 0.84))] + \
           [{**_row("fixed100", p, 100.0), "seed": s} for s, p in enumerate((0.83, 0.79))] + \
           [{**_row("heldout", p, t), "seed": s} for s, (p, t) in enumerate(((0.81, 180.0), (0.825, 260.0)))]
    [v] = _verdict(rows)
    assert (v["best_fixed"], round(v["best_precision"], 4), round(v["best_std"], 4), v["best_seeds"]) == \
        ("fixed200", 0.82, 0.0283, [0, 1])
    assert (round(v["rule_precision"], 4), round(v["gap"], 4), round(v["compute_ratio"], 2), v["passes"]) == \
        (0.8175, 0.0025, 1.1, True)


@H.requires_fashion_mnist
def test_sweep_runs_every_arm_and_tables_every_round(tmp_path):
    pool = H.make_pool(tmp_path / "pool", n=160, seed=4, samples_per_shard=80)
    preset = {**H.MICRO_PRESET, "name": "micro-stop", "stop_eval_every": 2, "stop_eval_samples": 32}
    (tmp_path / "micro.json").write_text(json.dumps(preset))
    (tmp_path / "micro-ema.json").write_text(json.dumps({**preset, "name": "micro-ema", "lr_schedule": "const",
                                                          "stop_ema": 0.8}))
    out = tmp_path / "out"
    common = [sys.executable, str(SCRIPT), "--pool", str(pool), "--out", str(out), "--rule-cap", "6", "--rounds",
              "2", "--preset", str(tmp_path / "micro.json"), "--jobs", "1"]
    r = subprocess.run([*common, "--steps", "2", "--loop-seeds", "0,1", "--rule-preset", str(tmp_path / "micro-ema.json")],
                       capture_output=True, text=True, cwd=H.ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "sweep_steps.json").read_text())
    cells = sorted((x["arm"], x["seed"], x["round"], x["steps"] is not None) for x in res["rows"])
    assert cells == [(arm, seed, k, arm == "heldout") for arm in ("fixed2", "heldout") for seed in (0, 1)
                     for k in (0, 1)]
    assert [(v["pool"], v["round"], v["best_seeds"], v["rule_seeds"]) for v in res["verdicts"]] == \
        [("pool", k, [0, 1], [0, 1]) for k in (0, 1)]
    assert sorted(p.name for p in (out / "pool").iterdir()) == ["fixed2", "fixed2_seed1", "heldout", "heldout_seed1"]
    # --rule-preset: the rule arm alone takes it (here a constant rate and averaged weights, as the probe's)
    cfg = {d: json.loads((out / "pool" / d / "config.json").read_text()) for d in ("heldout", "fixed2")}
    assert (cfg["heldout"]["preset"]["name"], cfg["heldout"]["preset"]["lr_schedule"],
            cfg["heldout"]["loop"]["stop_rule"]["stop_ema"], cfg["fixed2"]["preset"]["name"]) == \
        ("micro-ema", "const", 0.8, "micro-stop")
    # --measure-only runs nothing: an arm not run yet is listed as left out, the finished ones are tabled
    r = subprocess.run([*common, "--steps", "2,4", "--loop-seeds", "0,1", "--measure-only", "--rule-preset",
                        str(tmp_path / "micro-ema.json")], capture_output=True, text=True, cwd=H.ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "sweep_steps.json").read_text())
    assert not (out / "pool" / "fixed4").exists() and len(res["rows"]) == 8
    assert res["missing"] == [f"pool/{d} round {k}" for d in ("fixed4", "fixed4_seed1") for k in (0, 1)]
    assert "Not finished, left out: pool/fixed4 round 0" in (out / "sweep_steps.md").read_text()

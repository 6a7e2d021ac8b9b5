"""A tiny end-to-end pass through the CLI, as a user runs it: make-pool -> 1 self-filtering round -> export ->
reshard -> train at the tiny scale (open_clip's trainer) -> evaluate on the pool's wds eval sets -> compare.
Skipped only where the Debian Fashion-MNIST package is missing (a precondition); a command that cannot be
imported fails it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import _e_harness as H

ROOT = Path(__file__).resolve().parent.parent
SFCOMP = [sys.executable, "-c", "import sys; from sfcomp.cli import main; sys.argv[0] = 'sfcomp'; main()"]
pytestmark = H.requires_fashion_mnist


def sfcomp(*args: str) -> str:
    r = subprocess.run([*SFCOMP, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"sfcomp {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    # other libraries' log lines do not reach the user's terminal (open_clip's trainer sets every logger to INFO)
    leaked = [line for line in (r.stdout + r.stderr).splitlines() if "dynamo" in line.lower()]
    assert leaked == [], f"sfcomp {args[0]} printed torch's log lines: {leaked[:3]}"
    return r.stdout


def test_tiny_end_to_end(tmp_path):
    pool, work = tmp_path / "pool", tmp_path / "work"
    sfcomp("make-pool", "--out", pool, "--size", 600, "--direct", "--image-size", 32, "--samples-per-shard", 200,
           "--processes", 1, "--threads", 4, "--ref-steps", 5, "--quiet")
    assert (pool / ".complete").exists() and (pool / "truth.parquet").exists()
    sfcomp("run", "--pool", pool, "--workdir", work, "--rounds", 1, "--steps", 5, "--threads", 2, "--quiet")
    subset = tmp_path / "sf_top30.npy"
    sfcomp("export-subset", "--scores", work / "final_scores.npy", "--top-frac", 0.3, "-o", subset)
    n = len(np.load(subset))
    assert 0 < n <= 600 * 0.3 + 1

    out = sfcomp("reshard", "-i", pool, "-s", subset, "-o", tmp_path / "data", "--shard-size", 100, "--json")
    rep = json.loads(out)
    assert rep["requested"] == n and 0 < rep["output_count"] <= n
    assert rep["output_count"] + rep["not_found"] == n

    run_dir = tmp_path / "run"
    sfcomp("train-eval", "--data", tmp_path / "data", "--pool", pool, "--eval", pool / "eval", "--out", run_dir,
           "--method", "sf_top30", "--samples-seen", 512, "--threads", 2)
    rows = [json.loads(l) for l in (run_dir / "eval_results.jsonl").read_text().splitlines()]
    assert rows and all(set(r) >= {"key", "dataset", "metrics"} for r in rows)
    assert all(0.0 <= r["metrics"]["main_metric"] <= 1.0 for r in rows)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["method"] == "sf_top30" and run["samples_seen"] == 512
    assert run["clean_precision"] is not None and 0.0 <= run["clean_precision"] <= 1.0
    table = sfcomp("compare", run_dir, "--png", tmp_path / "cmp.png")
    assert "| sf_top30 | 1 |" in table and (tmp_path / "cmp.png").exists()

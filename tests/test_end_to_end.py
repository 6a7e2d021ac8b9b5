"""A tiny end-to-end pass through the CLI, as a user runs it: make-pool -> 1 self-filtering round -> export ->
reshard -> train at the tiny scale (open_clip's trainer) -> evaluate on the pool's wds eval sets -> compare.
Skipped, with the reason, while a command it needs cannot be imported."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SFCOMP = [sys.executable, "-c", "import sys; from sfcomp.cli import main; sys.argv[0] = 'sfcomp'; main()"]
NEEDED = ("make-pool", "run", "export-subset", "reshard", "train-eval", "compare")


def _missing() -> str | None:
    from sfcomp.cli import COMMANDS

    for name in NEEDED:
        if name not in COMMANDS:
            return f"`sfcomp {name}` is not registered yet"
        mod, fn = COMMANDS[name][0].split(":")
        try:
            getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            return f"`sfcomp {name}` is not available yet ({e})"
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        return "Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def sfcomp(*args: str) -> str:
    r = subprocess.run([*SFCOMP, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"sfcomp {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
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

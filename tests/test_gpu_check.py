"""scripts/gpu_check.py (`make gpu-check`, issue 14 item 5): its CPU rehearsal runs the whole flow at tiny size
(a 300-sample 256 px pool, one narrowed round of datacomp-b32 and of datacomp-cheap, the score-match check), so
the script cannot rot between GPU loans; without CUDA the plain script says so in one line and exits 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _e_harness as H

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
FIGURES = ("train samples/s: ", "score samples/s: ", "peak GPU memory: ", "data wait: ")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu_check")
    return _run("--rehearse-on-cpu", "--size", "300", cwd=root)


@H.requires_fashion_mnist
def test_rehearsal_prints_every_figure_line_for_both_presets(rehearsal):
    lines = rehearsal.stdout.splitlines()
    want = [f"[{p}] {f}" for p in ("datacomp-b32", "datacomp-cheap") for f in FIGURES]
    assert [w for w in want if not any(line.startswith(w) for line in lines)] == [], \
        (rehearsal.stdout, rehearsal.stderr[-3000:])


@H.requires_fashion_mnist
def test_rehearsal_score_match_passes(rehearsal):
    lines = rehearsal.stdout.splitlines()
    matches = [line for line in lines if line.startswith("[score match]")]
    assert (rehearsal.returncode, len(matches), all(line.endswith("PASS") for line in matches), lines[-1]) == \
        (0, 2, True, "gpu-check: score match passed"), (rehearsal.stdout, rehearsal.stderr[-3000:])


def test_without_cuda_prints_one_line_and_exits_0(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the script measures instead")
    r = _run(cwd=tmp_path)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == \
        (0, ["gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False): nothing measured"], "")


def test_train_loop_logs_its_data_wait_when_asked(tmp_path, monkeypatch):
    """sfcomp/train.py's hook: with $SFCOMP_DATA_WAIT_LOG, one JSON line a training loop (its steps, the seconds
    blocked on the batch iterator within the loop's seconds)."""
    from sfcomp.model import create_model, load_preset
    from sfcomp.train import train_on_arrays

    log = tmp_path / "wait.jsonl"
    monkeypatch.setenv("SFCOMP_DATA_WAIT_LOG", str(log))
    preset = load_preset({**H.MICRO_PRESET, "batch_size": 16})
    model, _ = create_model(preset, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    tokens = rng.integers(1, 400, (64, 16)).astype(np.int64)
    train_on_arrays(model, images, tokens, preset, steps=3, seed=0, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["steps"], 0 <= r["wait_s"] <= r["loop_s"], r["peak_bytes"]) for r in rows] == [(3, True, None)]

"""A file and its sidecar are one output: one writer at a time writes the pair, and validate-subset refuses a
sidecar that describes other bytes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sfcomp.cli import main
from sfcomp.errors import BadInputError
from sfcomp.export import export_subset, sha256_file
from sfcomp.scorefile import write_scores
from sfcomp.uids import UID_DTYPE, write_subset
from sfcomp.validate import validate_subset

REPO = Path(__file__).resolve().parents[1]


def _scores(path: Path, n: int = 500, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    uids = np.empty(n, dtype=UID_DTYPE)
    uids["f0"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    uids["f1"] = np.arange(n, dtype=np.uint64)
    write_scores(path, uids, {"cosine": rng.standard_normal(n).astype(np.float32)})
    return path


def _hold_pair_in_another_process(out: Path):
    """A child process that holds `writing_pair(out)` until its stdin closes; returns once it holds it."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = textwrap.dedent(f"""
        import sys
        from sfcomp.atomic import writing_pair
        with writing_pair({str(out)!r}):
            print("held", flush=True)
            sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env)
    assert child.stdout.readline().strip() == "held"
    return child


def test_an_export_waits_while_another_process_writes_the_same_output(tmp_path):
    scores = _scores(tmp_path / "scores.npy")
    out = tmp_path / "subsets" / "top.npy"
    out.parent.mkdir()
    child = _hold_pair_in_another_process(out)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (export_subset(scores, out, top_frac=0.3), done.set()))
    try:
        worker.start()
        assert not done.wait(1.0)  # an unguarded export of 500 rows takes milliseconds
        assert not out.exists() and not Path(f"{out}.json").exists()
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    worker.join(timeout=60)
    assert done.is_set()
    assert validate_subset(out).sidecar == f"{out}.json"


def test_a_refused_export_leaves_no_folder_behind(tmp_path):
    scores = _scores(tmp_path / "scores.npy")
    out = tmp_path / "new" / "deeper" / "top.npy"
    with pytest.raises(BadInputError):
        export_subset(scores, out, threshold=1e9)  # selects nothing: refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.npy", "scores.npy.json"]


def test_validate_subset_checks_the_sidecar_describes_the_file(tmp_path):
    scores = _scores(tmp_path / "scores.npy")
    out = tmp_path / "top.npy"
    export_subset(scores, out, top_frac=0.3)
    assert validate_subset(out).sidecar == f"{out}.json"
    r = CliRunner().invoke(main, ["validate-subset", str(out)])
    assert r.exit_code == 0 and r.output.strip().endswith("its sidecar's output_sha256 matches"), r.output
    other = np.load(out)[:-1]  # still a valid subset, but not the one the sidecar describes
    write_subset(out, other)
    with pytest.raises(BadInputError) as e:
        validate_subset(out)
    assert str(e.value.path) == f"{out}.json" and "describes another subset" in str(e.value)
    r = CliRunner().invoke(main, ["validate-subset", str(out)])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}.json: describes another subset")


def test_a_subset_without_an_sfcomp_sidecar_needs_none(tmp_path):
    out = tmp_path / "from_elsewhere.npy"
    uids = np.zeros(3, dtype=UID_DTYPE)
    uids["f1"] = [1, 2, 3]
    write_subset(out, uids)
    assert validate_subset(out).sidecar is None
    Path(f"{out}.json").write_text(json.dumps({"note": "someone else's"}))
    assert validate_subset(out).sidecar is None
    Path(f"{out}.json").write_text("not json, someone else's notes")
    assert validate_subset(out).sidecar is None


def test_the_sidecar_hash_is_the_hash_of_the_file_beside_it(tmp_path):
    scores = _scores(tmp_path / "scores.npy")
    out = tmp_path / "top.npy"
    side = export_subset(scores, out, top_frac=0.5, random_frac=0.1, seed=3)
    assert side["output_sha256"] == sha256_file(out)

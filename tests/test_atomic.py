"""Atomic writes and their temp files: a killed writer's temp is cleaned up, a live writer's is left alone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sfcomp.atomic import atomic_open, remove_stale_temps, temp_dir_beside

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=120, **kw)


def _remove_from_another_process(out: Path) -> int:
    r = _python(f"from sfcomp.atomic import remove_stale_temps; print(remove_stale_temps({str(out)!r}))")
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


def test_a_second_run_leaves_the_temp_file_a_live_write_holds(tmp_path):
    out = tmp_path / "subset.npy"
    with atomic_open(out) as f:
        f.write(b"first half ")
        assert len(_temps(tmp_path)) == 1
        assert _remove_from_another_process(out) == 0
        assert len(_temps(tmp_path)) == 1
        f.write(b"second half")
    assert out.read_bytes() == b"first half second half"
    assert _temps(tmp_path) == []


def test_the_temp_file_of_a_killed_write_is_removed(tmp_path):
    out = tmp_path / "subset.npy"
    r = _python(f"""
        import os, signal
        from sfcomp.atomic import atomic_open
        with atomic_open({str(out)!r}) as f:
            f.write(b"half")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert r.returncode == -signal.SIGKILL
    assert len(_temps(tmp_path)) == 1 and not out.exists()
    assert _remove_from_another_process(out) == 1
    assert _temps(tmp_path) == []


def test_a_spill_folder_is_held_while_in_use_and_gone_after(tmp_path):
    out = tmp_path / "subset.npy"
    with temp_dir_beside(out) as spill:
        (spill / "000000.bin").write_bytes(b"x" * 64)
        assert spill.parent == tmp_path and spill.name.startswith(".tmp-subset.npy.parts.")
        assert _remove_from_another_process(out) == 0
        assert (spill / "000000.bin").read_bytes() == b"x" * 64
    assert _temps(tmp_path) == []


def test_a_killed_runs_spill_folder_is_removed(tmp_path):
    out = tmp_path / "subset.npy"
    r = _python(f"""
        import os, signal
        from sfcomp.atomic import temp_dir_beside
        with temp_dir_beside({str(out)!r}) as spill:
            (spill / "000000.bin").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert r.returncode == -signal.SIGKILL
    assert len(_temps(tmp_path)) == 1
    assert remove_stale_temps(out) == 1
    assert _temps(tmp_path) == []


def test_only_the_named_outputs_temps_are_touched(tmp_path):
    out = tmp_path / "subset.npy"
    other = tmp_path / ".tmp-subset.npy2.abc"  # another output's temp: its name only starts the same
    other.write_bytes(b"keep")
    stale = tmp_path / ".tmp-subset.npy.abc123"
    stale.write_bytes(b"stale")
    assert remove_stale_temps(out) == 1
    assert other.read_bytes() == b"keep" and not stale.exists()


def test_a_failed_write_removes_the_folders_it_made_and_no_other(tmp_path):
    # scores-to-parquet on a score file found bad mid-write used to leave its new output folder (the property
    # test's "refused, but left" check)

    (tmp_path / "old").mkdir()
    for target in (tmp_path / "new" / "deeper" / "out.bin", tmp_path / "old" / "out.bin"):
        with pytest.raises(ValueError):
            with atomic_open(target) as f:
                f.write(b"half")
                raise ValueError("found bad input mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"] and not any((tmp_path / "old").iterdir())

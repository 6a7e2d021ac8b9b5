"""The workdir lock: one run writes a workdir at a time; a killed holder's lock is free at once."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sfcomp.errors import BadInputError
from sfcomp.workdir import LOCK_FILE, WorkdirLock

HOLDER = ("import sys, time; from sfcomp.workdir import WorkdirLock; lock = WorkdirLock(sys.argv[1]); "
          "lock.acquire(); print('held', flush=True); time.sleep(600)")


def hold_in_another_process(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_nothing_changes(tmp_path):
    root = tmp_path / "w"
    proc = hold_in_another_process(root)
    try:
        (root / "config.json").write_text("{}")
        before = {p.name: p.read_bytes() for p in root.iterdir()}
        with pytest.raises(BadInputError) as e:
            WorkdirLock(root).acquire()
        assert str(e.value) == (f"{root}: workdir in use by another sfcomp run (pid {proc.pid} on "
                                f"{socket.gethostname()}, holding {LOCK_FILE}); wait for it to end, or use another "
                                "--workdir")
        assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_frees_the_workdir_at_once(tmp_path):
    root = tmp_path / "w"
    proc = hold_in_another_process(root)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (root / LOCK_FILE).exists()  # what the killed run left
    lock = WorkdirLock(root)
    lock.acquire()
    assert (root / LOCK_FILE).read_text() == f"pid {os.getpid()} on {socket.gethostname()}\n"
    lock.release()
    assert not (root / LOCK_FILE).exists() and root.is_dir()


def test_the_lock_is_reentrant_and_its_file_goes_with_the_last_release(tmp_path):
    root = tmp_path / "new" / "w"
    lock = WorkdirLock(root)
    with lock:
        with lock:
            assert lock.held
        assert lock.held and (root / LOCK_FILE).exists()
        with pytest.raises(BadInputError, match="in use by another sfcomp run"):
            WorkdirLock(root).acquire()  # another open file, even in this process
    assert not lock.held and not (root / LOCK_FILE).exists()
    lock.release()  # releasing an unheld lock is a no-op
    with WorkdirLock(root):  # free again
        pass


def test_a_lock_told_to_remove_the_folder_removes_only_an_empty_one(tmp_path):
    lock = WorkdirLock(tmp_path / "w")
    with lock:
        lock.remove_root_on_release = True
    assert not (tmp_path / "w").exists()
    lock = WorkdirLock(tmp_path / "v")
    with lock:
        (tmp_path / "v" / "keep").write_text("x")
        lock.remove_root_on_release = True
    assert (tmp_path / "v" / "keep").read_text() == "x"

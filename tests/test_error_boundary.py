"""The CLI's one error boundary (sfcomp/cli/__init__.py, sfcomp/errors.py error_line): an input problem, whatever
the library raised (OSError, a decode error, bad JSON, a malformed .npy/.npz/tar/parquet, a truncated stream),
becomes exactly one line `error: FILE: problem` and exit 2; disk full on a write says so and leaves no temp file;
a bug keeps its traceback; click's own errors pass through; SFCOMP_DEBUG=1 shows the traceback.

Most cases run a test-only command `_raise KIND PATH` registered in the real group (the boundary is the group's
invoke, so it is the same code every command runs under); disk full and a few real inputs drive real commands.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import _e_harness as H
from sfcomp import cli as C
from sfcomp.scorefile import write_scores
from sfcomp.uids import UID_DTYPE

ROOT = Path(__file__).resolve().parent.parent


def _raise_kind(kind: str, path: str) -> None:
    """Do what a library call does with a bad file at `path` (the file is prepared by `_prepare`)."""
    if kind == "oserror":
        open(path, "rb")
    elif kind == "utf8":
        Path(path).read_text(encoding="utf-8")
    elif kind == "json":
        with open(path) as f:
            json.load(f)
    elif kind == "npy_truncated":
        np.load(path, allow_pickle=False)
    elif kind == "npy_header":
        np.load(path, allow_pickle=False)
    elif kind == "npz_badzip":
        np.load(path, allow_pickle=False)
    elif kind == "parquet":
        import pyarrow.parquet as pq

        pq.read_table(path)
    elif kind == "tar":
        import tarfile

        tarfile.open(path)
    elif kind == "eof":
        with gzip.open(path) as f:
            f.read()
    elif kind in ("enospc", "enospc_temp"):
        with open(path, "wb") as f:  # a write that fails as on a full disk: the OSError names no file
            f.write(b"x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif kind == "keyboard":
        raise KeyboardInterrupt
    elif kind == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not end the command")
    elif kind == "sigterm_external":
        _wait_for_sigterm(Path(path))
    elif kind == "bug_key":
        {}["missing"]
    elif kind == "bug_value":
        int("not a number")
    elif kind == "logging":
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("torch._dynamo").setLevel(logging.INFO)
    else:
        raise AssertionError(kind)


@click.command("_raise")
@click.argument("kind")
@click.argument("where")
def raise_cmd(kind: str, where: str) -> None:
    """Test only: fail the way a reader fails on bad input (`where`: no local named like a path here)."""
    if kind == "json_no_file":
        _parse(Path(where).read_text())
    _raise_kind(kind, where)


def _wait_for_sigterm(d: Path) -> None:
    """A forked child that SIGTERM must end as before (killed by the signal), then a half-written output."""
    import multiprocessing as mp

    from sfcomp.atomic import atomic_open

    child = mp.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    (d / "child.pid").write_text(str(child.pid))
    child.join(60)
    (d / "child.rc").write_text(str(child.exitcode))
    with atomic_open(d / "out.npy") as f:
        f.write(b"half of an output")
        f.flush()
        time.sleep(60)
    raise AssertionError("SIGTERM did not end the command")


def _parse(text: str):
    return json.loads(text)


@pytest.fixture
def raising_cli(monkeypatch):
    monkeypatch.setitem(C.COMMANDS, "_raise", ("test_error_boundary:raise_cmd", "test only"))

    def run(kind: str, path, env: dict | None = None):
        r = CliRunner().invoke(C.main, ["_raise", kind, str(path)], env=env)
        return r
    return run


def _prepare(kind: str, d: Path) -> Path:
    p = d / f"input-{kind}"
    if kind == "oserror":
        os.symlink(p.name, p)  # a symlink loop: open() fails with ELOOP
    elif kind == "utf8":
        p.write_bytes(b"caption \xff\xfe not utf-8")
    elif kind in ("json", "json_no_file"):
        p.write_text('{"n": 3,')
    elif kind == "npy_truncated":
        np.save(p.with_suffix(".npy"), np.arange(1000, dtype=np.uint64))
        p = p.with_suffix(".npy")
        p.write_bytes(p.read_bytes()[:500])
    elif kind == "npy_header":
        p.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': garbage}\n")
    elif kind == "npz_badzip":
        p.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    elif kind == "parquet":
        p.write_bytes(b"PAR1" + os.urandom(64))
    elif kind == "tar":
        p.write_bytes(b"this is not a tar archive" * 40)
    elif kind == "eof":
        p.write_bytes(gzip.compress(b"x" * 10000)[:30])
    elif kind == "enospc_temp":
        p = d / ".tmp-out.npy.k2x9q_a"  # sfcomp.atomic's temp file for d/out.npy
    else:
        p.write_bytes(b"")
    return p


def _one_error_line(r) -> str:
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert (r.exit_code, len(lines)) == (2, 1), f"exit {r.exit_code}, stderr {r.stderr!r}, exc {r.exc_info}"
    return lines[0]


@pytest.mark.parametrize("kind,problem", [
    ("oserror", "Too many levels of symbolic links"),
    ("utf8", "not UTF-8 text"),
    ("json", "invalid JSON"),
    ("npy_truncated", "unreadable .npy/.npz"),
    ("npy_header", "unreadable .npy/.npz"),
    ("npz_badzip", "not a valid zip/npz file"),
    ("parquet", "unreadable arrow/parquet data"),
    ("tar", "unreadable tar"),
    ("eof", "truncated: unexpected end of file"),
    ("enospc", "disk full (No space left on device)"),
])
def test_an_input_problem_is_one_line_naming_the_file(raising_cli, tmp_path, kind, problem):
    path = _prepare(kind, tmp_path)
    line = _one_error_line(raising_cli(kind, path))
    assert line.startswith(f"error: {path}: {problem}"), line


def test_disk_full_on_a_temp_file_names_the_file_the_user_asked_for(raising_cli, tmp_path):
    line = _one_error_line(raising_cli("enospc_temp", _prepare("enospc_temp", tmp_path)))
    assert line == f"error: {tmp_path / 'out.npy'}: disk full (No space left on device)", line


def test_an_input_problem_with_no_file_known_names_the_exception_type(raising_cli, tmp_path):
    path = _prepare("json_no_file", tmp_path)
    line = _one_error_line(raising_cli("json_no_file", path))
    assert line == "error: JSONDecodeError: Expecting property name enclosed in double quotes: line 1 column 9 " \
                   "(char 8)", line


@pytest.mark.parametrize("kind,exc", [("bug_key", KeyError), ("bug_value", ValueError)])
def test_a_bug_keeps_its_traceback(raising_cli, tmp_path, kind, exc):
    r = raising_cli(kind, _prepare(kind, tmp_path))
    assert (r.exit_code, type(r.exception)) == (1, exc), (r.exit_code, r.stderr, r.exception)


def test_sfcomp_debug_lets_bad_input_through_with_its_traceback(tmp_path):
    from sfcomp.errors import BadInputError

    r = CliRunner().invoke(C.main, ["validate-subset", str(tmp_path / "missing.npy")], env={"SFCOMP_DEBUG": "1"})
    assert (r.exit_code, type(r.exception)) == (1, BadInputError), (r.exit_code, r.stderr, r.exception)


def test_keyboard_interrupt_is_one_line_and_exit_130(raising_cli, tmp_path):
    r = raising_cli("keyboard", tmp_path / "x")
    assert (r.exit_code, r.stderr) == (130, "interrupted\n"), (r.exit_code, r.stderr, r.exception)


def test_sigterm_is_one_line_and_exit_143_and_the_handler_is_restored(raising_cli, tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    r = raising_cli("sigterm", tmp_path / "x")
    assert (r.exit_code, r.stderr) == (143, "terminated\n"), (r.exit_code, r.stderr, r.exception)
    assert signal.getsignal(signal.SIGTERM) is before


def test_under_torchrun_sigterm_keeps_its_default(raising_cli, tmp_path, monkeypatch):
    # torchrun's SIGTERM, then SIGKILL after a grace period, stops a job's workers: one blocked in a collective
    # would run a Python handler only then
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    seen = []
    monkeypatch.setattr(signal, "signal", lambda *a: seen.append(a))
    assert raising_cli("logging", tmp_path / "x").exit_code == 0
    assert seen == []


def _wait(path: Path, proc) -> None:
    for _ in range(600):
        if path.exists() and path.read_text() or proc.poll() is not None:
            return
        time.sleep(0.1)


def test_sigterm_from_outside_removes_the_temp_file_and_spares_forked_workers(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from sfcomp import cli as C; "
            "C.COMMANDS['_raise'] = ('test_error_boundary:raise_cmd', 'test only'); "
            "C.main(['_raise', 'sigterm_external', sys.argv[2]])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT / "tests"), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(tmp_path / "child.pid", proc)
        os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGTERM)
        _wait(tmp_path / "child.rc", proc)
        assert (tmp_path / "child.rc").read_text() == str(-signal.SIGTERM)  # killed by it, not our one line
        for _ in range(600):
            if list(tmp_path.glob(".tmp-out.npy.*")) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert list(tmp_path.glob(".tmp-out.npy.*")), "the output was never begun"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert (proc.returncode, err) == (143, "terminated\n"), (proc.returncode, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child.pid", "child.rc"]  # no temp file, no output


def test_a_command_leaves_the_logger_levels_as_it_found_them(raising_cli, tmp_path):
    before = (logging.getLogger().level, logging.getLogger("torch._dynamo").level)
    r = raising_cli("logging", tmp_path / "x")
    assert r.exit_code == 0, r.stderr
    assert (logging.getLogger().level, logging.getLogger("torch._dynamo").level) == before


@pytest.mark.parametrize("args,line", [
    (["export-subset", "-o", "x.npy"], "error: Missing option '--scores' (see `sfcomp export-subset --help`)"),
    (["run", "--pool", "p", "--workdir", "w", "--steps", "abc"],
     "error: Invalid value for '--steps': 'abc' is not a valid integer (see `sfcomp run --help`)"),
    (["no-such-command"], "error: No such command 'no-such-command' (see `sfcomp --help`)"),
    (["--bogus"], "error: No such option '--bogus' (see `sfcomp --help`)"),  # the group's own parse
])
def test_click_usage_errors_are_one_line(args, line):
    r = CliRunner().invoke(C.main, args, prog_name="sfcomp")
    assert (r.exit_code, r.stderr.splitlines()) == (2, [line]), r.stderr


@pytest.mark.parametrize("args,bad,problem", [
    (["validate-subset", "{d}"], "{d}", "is a folder, expected a file (SUBSET)"),
    (["export-subset", "--scores", "{d}", "--top-k", "1", "-o", "{d}/o.npy"], "{d}", "is a folder, expected a file (--scores)"),
    (["scores-to-parquet", "{d}", "{d}/o.parquet"], "{d}", "is a folder, expected a file (SCORES)"),
    (["run", "--pool", "{d}", "--workdir", "{f}"], "{f}", "is a file, expected a folder (--workdir)"),
    (["run", "--pool", "{d}", "--workdir", "{d}/w", "--round0-from", "{d}/none"], "{d}/none",
     "does not exist (--round0-from)"),
    (["train-eval", "--subset", "{d}", "--out", "{d}/run"], "{d}", "is a folder, expected a file (--subset)"),
])
def test_path_refusals_name_the_path_first(tmp_path, args, bad, problem):
    (tmp_path / "f").write_text("a file")
    fill = {"d": str(tmp_path), "f": str(tmp_path / "f")}
    before = sorted(p.name for p in tmp_path.iterdir())
    r = CliRunner().invoke(C.main, [a.format(**fill) for a in args], prog_name="sfcomp")
    assert (r.exit_code, r.stderr.splitlines()) == (2, [f"error: {bad.format(**fill)}: {problem}"]), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_sfcomp_alone_prints_the_help_and_exits_0():
    r = CliRunner().invoke(C.main, [], prog_name="sfcomp")
    assert (r.exit_code, r.stderr, r.stdout.startswith("Usage: sfcomp")) == (0, "", True), (r.exit_code, r.output)


# ------------------------------------------------------------------------------------------ real commands
def _scores(path: Path, n: int = 2000) -> Path:
    rng = np.random.default_rng(0)
    u = np.empty(n, UID_DTYPE)
    u["f0"], u["f1"] = rng.integers(0, 2**63, n), rng.integers(0, 2**63, n)
    write_scores(path, u, {"cosine": rng.random(n)})
    return path


def test_a_symlink_loop_as_score_file_is_one_line(tmp_path):
    loop = tmp_path / "loop.npy"
    os.symlink(loop.name, loop)
    H.assert_one_line_error(H.cli("export-subset", "--scores", loop, "--top-k", "1", "-o", tmp_path / "o.npy"),
                            loop)


def test_sfcomp_debug_shows_the_traceback_in_the_real_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sfcomp", "validate-subset", str(tmp_path / "missing.npy")],
                       capture_output=True, text=True, env={**os.environ, "SFCOMP_DEBUG": "1"}, cwd=ROOT)
    assert r.stderr.startswith("Traceback (most recent call last):"), r.stderr


def test_an_atomic_write_under_an_existing_file_is_bad_input(tmp_path):
    from sfcomp.atomic import write_json
    from sfcomp.errors import BadInputError

    (tmp_path / "f").write_text("a file")
    with pytest.raises(BadInputError, match="cannot create its folder: .*/f is not a folder"):
        write_json(tmp_path / "f" / "sub" / "out.json", {})


def _sha(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _file_size_limit(limit: int):
    def apply():  # in the child, before exec: writes past `limit` bytes fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _export(scores: Path, out: Path, mode: str, limit: int | None):
    r = subprocess.run([sys.executable, "-m", "sfcomp", "export-subset", "--scores", str(scores), "--top-k", "1000",
                        mode, "-o", str(out)], capture_output=True, text=True, cwd=ROOT,
                       preexec_fn=_file_size_limit(limit) if limit else None)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("mode", ["--in-memory", "--streaming"])
def test_disk_full_on_export_is_one_line_leaves_nothing_and_the_rerun_works(tmp_path, mode):
    inputs = tmp_path / "in"
    inputs.mkdir()
    scores = _scores(inputs / "s.npy")
    before = _sha(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "subset.npy"
    # 1000 uids are 16 kB: a 4 kB file size limit stops the subset's first write
    H.assert_one_line_error(_export(scores, out, mode, limit=4096), out, "disk full")
    assert (H.all_files(out_dir), H.stray_files(tmp_path), _sha(inputs)) == ([], [], before)
    code, _, err = _export(scores, out, mode, limit=None)
    assert (code, H.all_files(out_dir)) == (0, ["subset.npy", "subset.npy.json"]), err

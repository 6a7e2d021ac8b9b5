"""Shared helpers for the reliability tests (test_distributed, test_faults, test_bad_input).

- `MICRO_PRESET`: an in-loop CLIP far smaller than `tiny` (1 layer, width 64), so a whole round on a 300-sample
  pool takes seconds; same code path as every preset.
- `run_cli(args, kill=...)`: run `sfcomp ARGS` in a child process forked from a forkserver that has torch,
  open_clip and sfcomp already imported (a fresh interpreter pays ~15 s of imports on this machine). The child
  is the real CLI (`sfcomp.cli.main`); `kill` makes it SIGKILL itself at a chosen point, a real kill -9: no
  exception handlers, no `finally`, no flushing.
- `cli(...)`: the CLI in this process via click's CliRunner, for bad-input tests.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import sys
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
# the installed CLI as a user runs it, by the interpreter running the tests (no path to a venv)
SFCOMP_CMD = [sys.executable, "-m", "sfcomp"]

MICRO_PRESET = {
    "name": "micro",
    "description": "Test-only in-loop CLIP: 1-layer ViT/text transformer of width 64, 32 px, context 16.",
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    },
    "image_size": 32, "context_length": 16, "batch_size": 64, "lr": 0.001, "wd": 0.1, "warmup": 2, "steps": 3,
    "beta2": 0.98, "cache": True, "score_batch_size": 128,
}

# One pool for the loop tests: 300 rows, ~270 downloaded, 3 shards of 100.
POOL_N, POOL_SEED, POOL_PER_SHARD = 300, 11, 100
# Loop settings of every reference run: 2 folds (the cross-fitted default), top 50% + random 10%, so each
# fold of round 1 still has more rows than the batch (see test_distributed for why that matters).
LOOP_ARGS = ["--steps", "3", "--folds", "2", "--top-frac", "0.5", "--random-frac", "0.1", "--seed", "3",
             "--threads", "1", "--quiet"]


def write_micro_preset(path: Path) -> Path:
    path.write_text(json.dumps(MICRO_PRESET))
    return path


def make_pool(root: Path, n: int = POOL_N, seed: int = POOL_SEED, samples_per_shard: int = POOL_PER_SHARD) -> Path:
    from poolfactory import write_tiny_pool

    import _input_guard

    write_tiny_pool(root, n=n, seed=seed, samples_per_shard=samples_per_shard)
    _input_guard.register(root)  # checked again when the session ends: no command may change an input
    return root


def loop_cmd(command: str, pool: Path, workdir: Path, preset: Path, cache: Path, *extra: str) -> list[str]:
    return [command, "--pool", str(pool), "--workdir", str(workdir), "--preset", str(preset),
            "--cache-dir", str(cache), *LOOP_ARGS, *extra]


# ------------------------------------------------------------------------------------------ kill -9 injection
# A kill point is a tuple:
#   ("call", "module:attr.path", nth)   SIGKILL at the entry of the nth call of that function/method
#   ("replace", "file name", nth)       SIGKILL at the nth os.replace onto a file of that name, i.e. after the
#                                       temp file was completely written but before it became the target
#                                       (the moment an atomic write is most exposed)
#   ("unlink_then_call", "shard path", "module:attr", nth)  delete a file right before the nth call (a shard
#                                       that disappears mid-run); no kill

def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _resolve(target: str):
    import importlib

    mod, attr = target.split(":")
    owner = importlib.import_module(mod)
    parts = attr.split(".")
    for p in parts[:-1]:
        owner = getattr(owner, p)
    return owner, parts[-1]


def _install(point: tuple) -> None:
    kind = point[0]
    if kind == "replace":
        _, name, nth = point
        real = os.replace
        seen = {"n": 0}

        def replace(src, dst, *a, **kw):
            if os.path.basename(os.fspath(dst)) == name:
                seen["n"] += 1
                if seen["n"] == nth:
                    _die()
            return real(src, dst, *a, **kw)

        os.replace = replace
        return
    if kind == "call":
        _, target, nth = point
        before = _die
    elif kind == "unlink_then_call":
        _, victim, target, nth = point

        def before():
            Path(victim).unlink()
    else:
        raise ValueError(point)
    owner, name = _resolve(target)
    real = getattr(owner, name)
    seen = {"n": 0}

    def wrapper(*a, **kw):
        seen["n"] += 1
        if seen["n"] == nth:
            before()
        return real(*a, **kw)

    setattr(owner, name, wrapper)


def _child(args: list[str], points: list[tuple], out: str, err: str, env: dict) -> None:
    os.environ.update(env)
    fo, fe = open(out, "w", buffering=1), open(err, "w", buffering=1)
    os.dup2(fo.fileno(), 1)
    os.dup2(fe.fileno(), 2)
    sys.stdout, sys.stderr = fo, fe
    import torch

    torch.set_num_threads(1)
    for p in points:
        _install(p)
    from sfcomp.cli import main

    try:
        main(args, prog_name="sfcomp", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    fo.flush()
    fe.flush()
    os._exit(code)


_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        # the forkserver imports these once; every child forks from it with them loaded (and with no
        # OpenMP thread pool started, so forking is safe)
        _CTX.set_forkserver_preload(["torch", "open_clip", "matplotlib.pyplot", "sfcomp.loop", "sfcomp.cache",
                                     "sfcomp.data", "sfcomp.export", "sfcomp.report", "sfcomp.model",
                                     "sfcomp.train", "sfcomp.score", "sfcomp.cli.loop_cmds", "_e_harness"])
    return _CTX


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out[-2000:]!r}, err={self.err[-4000:]!r})"


def run_cli(args: Sequence[str], logs: Path, kill: Sequence[tuple] = (), timeout: float = 600,
            kill_when_exists: Path | None = None, env: dict | None = None) -> Result:
    """`sfcomp ARGS` in a forked child; returns its exit code (-9 when it was killed).

    `kill`: points where the child kills itself; `kill_when_exists`: this process sends the child SIGKILL
    from outside as soon as that file exists (wherever the child has got to by then)."""
    logs.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{len(list(logs.glob('*.out')))}"
    out, err = logs / f"{tag}.out", logs / f"{tag}.err"
    env = {"NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    p = _context().Process(target=_child, args=([str(a) for a in args], list(kill), str(out), str(err), env))
    p.start()
    if kill_when_exists is not None:
        import time

        deadline = time.time() + timeout
        while p.is_alive() and not kill_when_exists.exists() and time.time() < deadline:
            time.sleep(0.02)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    p.join(timeout)
    if p.is_alive():
        p.kill()
        p.join()
        raise TimeoutError(f"sfcomp {' '.join(map(str, args))} ran past {timeout}s")
    return Result(p.exitcode, out.read_text(), err.read_text())


# ------------------------------------------------------------------------------------------ comparisons
ROUND_ARRAYS = ("mix.npy", "scores.npy", "next_mix.npy")


def round_files(workdir: Path, rounds: int) -> dict[str, bytes]:
    """The bytes of every result file of `rounds` finished rounds plus final_scores.npy."""
    out = {}
    for k in range(rounds):
        d = workdir / f"round_{k:02d}"
        assert (d / "done.json").exists(), f"{d} is not finished"
        for name in ROUND_ARRAYS:
            out[f"round_{k:02d}/{name}"] = (d / name).read_bytes()
        side = json.loads((d / "scores.npy.json").read_text())
        side.pop("pool", None)
        out[f"round_{k:02d}/scores.npy.json"] = json.dumps(side, sort_keys=True).encode()
    out["final_scores.npy"] = (workdir / "final_scores.npy").read_bytes()
    return out


def model_tensors(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def stray_files(root: Path) -> list[str]:
    """Temp files an atomic write left behind (name .tmp-*)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".tmp-*"))


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ in-process CLI
def cli(*args):
    """`sfcomp ARGS` through click's CliRunner: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from sfcomp.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stdout, r.stderr


def assert_one_line_error(result, path, *fragments: str) -> str:
    """exit 2, exactly one non-empty line on stderr, starting `error: PATH: ` (or `error: ` when PATH is None)
    and containing every fragment. Returns the line."""
    code, out, err = result
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, f"exit {code}, stdout {out!r}, stderr {err!r}"
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    prefix = "error: " if path is None else f"error: {path}: "
    assert lines[0].startswith(prefix), f"{lines[0]!r} does not start with {prefix!r}"
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
    record = os.environ.get("SFCOMP_E_RECORD")  # collect the lines for docs/RELIABILITY.md
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                                 "line": lines[0]}) + "\n")
    return lines[0]


def write_score_file(path: Path, uids: np.ndarray, scores: np.ndarray, field: str = "cosine") -> Path:
    """A score file written by hand (no validation), to hand sfcomp bad ones."""
    arr = np.empty(len(uids), dtype=[("f0", "<u8"), ("f1", "<u8"), (field, "<f4")])
    arr["f0"], arr["f1"], arr[field] = uids["f0"], uids["f1"], scores
    np.save(path, arr)
    return path


# Module-level mark for the tests that build pools from Fashion-MNIST (Debian package dataset-fashion-mnist).
requires_fashion_mnist = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
    and "SFCOMP_FASHION_MNIST_DIR" not in os.environ,
    reason="Fashion-MNIST (Debian package dataset-fashion-mnist) is not installed")


def tree_digest(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path` (hidden ones included; `path` itself when it is a file),
    so a test can assert that a command changed no byte and no file name of an input."""
    import hashlib

    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {("." if p == path else str(p.relative_to(path))): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


# ------------------------------------------------------------------------------------------ DataComp pool check
# DataComp's metadata columns, in order (shared/docs/datacomp-reference.md), written out rather than imported.
DATACOMP_COLUMNS = ["uid", "url", "text", "original_width", "original_height", "clip_b32_similarity_score",
                    "clip_l14_similarity_score", "face_bboxes", "sha256"]


def tar_members(tar: Path) -> dict[str, dict[str, bytes]]:
    """{KEY: {extension: bytes}} of a webdataset tar."""
    import tarfile

    groups: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            key, ext = m.name.split(".", 1)
            groups.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return groups


def datacomp_check(pool: Path) -> dict[str, bool]:
    """What DataComp's tools rely on in a pool folder, one named check each (all True on a good pool): metadata
    columns; uids 32-char lower-case hex and unique; npz rows aligned with the parquet rows (same count, the
    stored scores are the cosines of the stored embeddings); each shard's `_stats.json` successes equal to the
    samples in its tar; every shard sample's json uid in the metadata."""
    import re

    import pyarrow.parquet as pq

    parquets = sorted((Path(pool) / "metadata").glob("*.parquet"))
    tables = [pq.read_table(p).to_pandas() for p in parquets]
    uids = [u for t in tables for u in t["uid"]]
    aligned = bool(parquets)
    for p, t in zip(parquets, tables):
        z = np.load(p.with_suffix(".npz"))
        for arch in ("b32", "l14"):
            img, txt = z[f"{arch}_img"].astype(np.float32), z[f"{arch}_txt"].astype(np.float32)
            cos = np.einsum("ij,ij->i", img, txt) if len(img) == len(t) else None
            aligned &= cos is not None and float(np.abs(cos - t[f"clip_{arch}_similarity_score"]).max()) < 1e-5
    tars = sorted((Path(pool) / "shards").glob("*.tar"))
    members = {tar: tar_members(tar) for tar in tars}
    stats_ok = bool(tars) and all(
        json.loads(tar.with_name(tar.stem + "_stats.json").read_text())["successes"]
        == sum("jpg" in g for g in members[tar].values()) for tar in tars)
    known = set(uids)
    linked = all(json.loads(g["json"])["uid"] in known for m in members.values() for g in m.values() if "jpg" in g)
    return {
        "columns": bool(parquets) and all(list(t.columns) == DATACOMP_COLUMNS for t in tables),
        "uids_hex": bool(uids) and all(re.fullmatch(r"[0-9a-f]{32}", u) is not None for u in uids),
        "uids_unique": len(set(uids)) == len(uids),
        "npz_aligned": aligned,
        "stats_successes": stats_ok,
        "samples_linked": linked,
    }

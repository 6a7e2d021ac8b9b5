"""DataComp's standard step for one subset: reshard -> train at a fixed scale -> evaluate -> run.json.

OUT/run.json records what compare needs: method, seed, subset size (requested and found), clean precision
(when the pool has truth.parquet), scale, samples seen, the checkpoint and the eval summary.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sfcomp.atomic import write_json
from sfcomp.errors import BadInputError
from sfcomp.guard import check_clear_of_pool, check_outputs, is_url, pool_inputs, with_sidecars


def clean_precision(subset_file: str | os.PathLike, truth_file: str | os.PathLike) -> float | None:
    """Share of the subset's distinct uids that truth.parquet marks clean (uids absent from truth ignored)."""
    from sfcomp.truth import subset_clean_precision

    return subset_clean_precision(subset_file, truth_file)


def _check_train_eval_outputs(out: Path, eval_dir, subset, pool, data, reshard_dir, truth, eval_cache) -> None:
    """Input protection (sfcomp.guard): what train-eval writes vs what it reads, before anything is written."""
    inputs = [eval_dir, *with_sidecars([subset]), data, truth]
    if pool is not None and not is_url(pool):
        inputs += pool_inputs(pool)
        check_clear_of_pool(out, pool, what="--out", choose="a run folder outside it")
    check_outputs([out / "run.json", out / "eval_results.jsonl", out / "eval_summary.json"], inputs, what="--out")
    check_outputs([out / "train"], inputs, what="--out", kind="dir")
    if data is None:
        check_outputs([reshard_dir or out / "data"], inputs, what="--reshard-dir" if reshard_dir else "--out",
                      kind="dir")
    check_outputs([eval_cache], inputs, what="--eval-cache", kind="dir")


def train_eval(out: str | os.PathLike, eval_dir: str | os.PathLike, subset: str | os.PathLike | None = None,
               pool: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
               reshard_dir: str | os.PathLike | None = None, method: str | None = None, scale: str = "tiny",
               seed: int = 0, samples_seen: int | None = None, shard_size: int | None = None,
               nproc: int = 1, threads: int | None = None, workers: int | None = None,
               precision: str | None = None, tasks: Sequence[str] | None = None, truth: str | None = None,
               eval_cache: str | os.PathLike | None = None, log=print) -> dict:
    """Reshard `subset` from `pool` (or use resharded `data`), train at `scale`, evaluate on `eval_dir`."""
    from .evaluate import evaluate, find_tasks
    from .reshard import brace_literal, reshard
    from .scales import check_train_settings
    from .train import train

    out = Path(out)
    cfg = check_train_settings(scale, seed, samples_seen, precision, nproc, shard_size)
    _check_train_eval_outputs(out, eval_dir, subset, pool, data, reshard_dir, truth, eval_cache)
    find_tasks(eval_dir, tasks)  # a missing eval folder or task is refused now, not after the training
    brace_literal(data if data is not None else reshard_dir or out / "data")  # a '::' folder: refused now too
    reshard_meta = None
    if data is None:
        if subset is None or pool is None:
            raise BadInputError(None, "give --subset and --pool (to reshard), or --data (already resharded)")
        data = Path(reshard_dir) if reshard_dir else out / "data"
        shard_size = shard_size or (10000 if cfg.get("datacomp") else 1000)
        rep = reshard(pool, subset, data, shard_size=shard_size, log=log)
        log(rep.summary())
        reshard_meta = rep.as_dict()
    else:
        meta_path = Path(data) / "meta.json"
        if meta_path.exists():
            reshard_meta = json.loads(meta_path.read_text())
            subset = subset or reshard_meta.get("subset_file")
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", "sfcomp.eval.train",
               "--scale", scale, "--data", str(data), "--out", str(out / "train"), "--seed", str(seed)]
        for flag, val in (("--samples-seen", samples_seen), ("--workers", workers), ("--precision", precision),
                          ("--threads", threads)):
            if val is not None:
                cmd += [flag, str(val)]
        subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parent.parent)
        info = json.loads((out / "train" / "info.json").read_text())
    else:
        info = train(data, out / "train", scale=scale, seed=seed, samples_seen=samples_seen, workers=workers,
                     precision=precision, threads=threads)
    summary = evaluate(info["checkpoint"], info["model"], eval_dir, out, tasks=tasks, cache_dir=eval_cache, log=log)
    if truth is None and pool is not None and (Path(pool) / "truth.parquet").exists():
        truth = str(Path(pool) / "truth.parquet")
    run = {
        "method": method or (Path(subset).stem if subset else out.name), "seed": seed, "scale": scale,
        "subset": str(subset) if subset else None,
        "subset_size": reshard_meta["requested"] if reshard_meta else None,
        "found": reshard_meta["output_count"] if reshard_meta else None,
        "clean_precision": clean_precision(subset, truth) if (truth and subset) else None,
        "samples_seen": info["scale_config"]["train_num_samples"], "standard": info["standard"],
        "checkpoint": info["checkpoint"], "model": info["model"], "average": summary["average"],
        "eval_code": summary["eval_code"], "command": " ".join(sys.argv),
    }
    write_json(out / "run.json", run)
    return run

"""Train a CLIP at a fixed scale on resharded data, through open_clip's own trainer (`open_clip_train.main`).

As DataComp's train.py: `--dataset-type webdataset --dataset-resampled` (sampling with replacement, so samples
seen is fixed whatever the subset size), `--train-num-samples = samples seen / num_checkpoints` over
`num_checkpoints` epochs, per-GPU batch = global batch / (world size * accum_freq), `--resume latest`,
`--save-most-recent`. One difference: the sample shuffle is seeded (eval/sample_shuffle.py), so one seed fixes
the data order (DataComp's runs leave it to the clock).
Multi-GPU: `torchrun --nproc_per_node N -m sfcomp.eval.train --scale small --data DIR --out OUT`.
The finished run writes OUT/info.json (and DataComp's info.pkl), pointing at the final checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
from pathlib import Path

from sfcomp import __version__ as SFCOMP_VERSION
from sfcomp.atomic import atomic_open, write_json
from sfcomp.errors import BadInputError

from .reshard import brace_literal, shard_pattern
from .sample_shuffle import seeded_sample_shuffle
from .scales import check_train_settings, register_models


def world_info_from_env() -> tuple[int, int, int]:
    """(local_rank, rank, world_size) from torchrun / SLURM environment variables (1 process: 0, 0, 1)."""
    def first(*names: str, default: int) -> int:
        for n in names:
            if n in os.environ:
                return int(os.environ[n])
        return default

    return (first("LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", default=0),
            first("RANK", "PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", default=0),
            first("WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", default=1))


def train_data_pattern(data: str | os.PathLike) -> str:
    """A webdataset brace pattern for `data`: a finished reshard folder (meta.json), a folder of NNN.tar
    shards, or a pattern / single tar given as is."""
    s, p = str(data), Path(data)
    if "://" in s or not p.is_dir():  # a folder first: its name may hold braces
        if "{" in s or s.endswith(".tar") or "://" in s:
            return s
        raise BadInputError(p, "training data folder does not exist")
    if (p / "meta.json").exists():
        return shard_pattern(p)
    tars = sorted(x.stem for x in p.glob("*.tar") if x.stem.isdigit())
    if not tars:
        raise BadInputError(p, "no NNNNNNNN.tar shards to train on")
    width, last = len(tars[0]), max(int(t) for t in tars)
    return brace_literal(p) + os.sep + f"{{{0:0{width}d}..{last:0{width}d}}}.tar"


def trainer_args(scale_cfg: dict, train_data: str, logs: str, name: str, seed: int = 0, world_size: int = 1,
                 accum_freq: int = 1, workers: int | None = None, precision: str | None = None,
                 log_every_n_steps: int = 100, extra: list[str] | None = None) -> list[str]:
    """The argument list for open_clip_train.main, built exactly as DataComp's train.py builds it."""
    global_batch = scale_cfg["batch_size"]
    if global_batch % (world_size * accum_freq):
        raise BadInputError(None, f"global batch {global_batch} is not divisible by world size {world_size} "
                                  f"x accum_freq {accum_freq}")
    n_ckpt = int(scale_cfg["num_checkpoints"])
    args = [
        "--save-frequency", "0",
        "--train-data", train_data,
        "--train-num-samples", str(int(scale_cfg["train_num_samples"]) // n_ckpt),
        "--warmup", str(scale_cfg["warmup"]),
        "--dataset-type", "webdataset",
        "--dataset-resampled",
        "--precision", precision or scale_cfg["precision"],
        "--workers", str(scale_cfg["workers"] if workers is None else workers),
        "--model", scale_cfg["model"],
        "--batch-size", str(global_batch // (world_size * accum_freq)),
        "--epochs", str(n_ckpt),
        "--lr", str(scale_cfg["learning_rate"]),
        "--wd", str(scale_cfg["wd"]),
        "--logs", logs,
        "--name", name,
        "--seed", str(seed),
        "--accum-freq", str(accum_freq),
        "--log-every-n-steps", str(log_every_n_steps),
        "--save-most-recent",
        "--resume", "latest",
    ]
    if world_size > 1:
        args += ["--ddp-static-graph", "--local-loss", "--gather-with-grad"]
    if scale_cfg.get("grad_checkpointing"):
        args.append("--grad-checkpointing")
    if scale_cfg.get("beta2") is not None:
        args += ["--beta2", str(scale_cfg["beta2"])]
    return args + list(extra or [])


def train(data: str | os.PathLike, out: str | os.PathLike, scale: str = "tiny", seed: int = 0,
          samples_seen: int | None = None, accum_freq: int = 1, workers: int | None = None,
          precision: str | None = None, threads: int | None = None, log_every_n_steps: int = 100,
          extra: list[str] | None = None) -> dict:
    """Train at `scale` on `data`; returns the run info (also written to OUT/info.json by rank 0).

    `samples_seen` overrides the scale's samples seen; it is recorded and marks the run non-standard.
    A finished run (info.json present with the same settings) is not retrained.
    """
    import torch

    out = Path(out)
    cfg = check_train_settings(scale, seed, samples_seen, precision)
    if samples_seen is not None:
        # keep the schedule's shape: warmup shrinks (or grows) with samples seen, as a share of training
        ratio = int(samples_seen) / cfg["train_num_samples"]
        cfg["warmup"] = max(1, round(cfg["warmup"] * ratio))
        cfg["train_num_samples"] = int(samples_seen)
    train_data = train_data_pattern(data)
    _, rank, world_size = world_info_from_env()
    settings = {"scale": scale, "scale_config": cfg, "data_dir": str(data), "train_data": train_data,
                "seed": seed, "world_size": world_size, "accum_freq": accum_freq,
                "standard": samples_seen is None and cfg.get("datacomp", False)}
    info_path = out / "info.json"
    if info_path.exists():
        done = json.loads(info_path.read_text())
        if {k: done.get(k) for k in settings} == settings and Path(done["checkpoint"]).exists():
            return done
    # open_clip resumes from OUT/train/checkpoints/epoch_latest.pt: never let it resume another setting's run
    started = out / "settings.json"
    if started.exists() and json.loads(started.read_text()) != json.loads(json.dumps(settings)):
        raise BadInputError(out, "folder holds a training run with other settings (scale, data, seed or "
                                 "samples seen): use another output folder")
    if rank == 0 and not started.exists():
        write_json(started, settings)
    if threads:
        torch.set_num_threads(threads)
    register_models()
    from open_clip_train.main import main as open_clip_main

    name = "train"
    args = trainer_args(cfg, train_data, str(out), name, seed=seed, world_size=world_size,
                        accum_freq=accum_freq, workers=workers, precision=precision,
                        log_every_n_steps=log_every_n_steps, extra=extra)
    root_logger = logging.getLogger()
    handlers = list(root_logger.handlers)
    # open_clip's setup_logging sets the root logger and every logger that exists (torch._dynamo's among them)
    # to INFO: give each its own level back, or the caller's terminal fills with other libraries' INFO lines
    levels = {key: lg.level for key, lg in logging.root.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    root_level = root_logger.level
    try:
        with seeded_sample_shuffle(seed, rank) as shuffles:
            result = open_clip_main(args)
    finally:
        root_logger.setLevel(root_level)
        for key, lg in list(logging.root.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(key, logging.NOTSET))
        for h in list(root_logger.handlers):
            if h not in handlers:
                root_logger.removeHandler(h)
                h.close()
    checkpoint = out / name / "checkpoints" / "epoch_latest.pt"
    if result == -1 or (rank == 0 and not checkpoint.exists()):
        raise RuntimeError(f"open_clip training failed (see {out / name / 'out.log'})")
    info = {**settings, "checkpoint": str(checkpoint), "model": cfg["model"], "trainer_args": args,
            "sfcomp_version": SFCOMP_VERSION, "open_clip_version": _version("open_clip_torch"),
            # open_clip_train's own sample shuffle is seeded by pid and clock; sfcomp seeds it (sample_shuffle.py)
            "sample_shuffle": "seeded" if shuffles else "webdataset default (unseeded)"}
    if rank == 0:
        write_json(info_path, info)
        with atomic_open(out / "info.pkl", "wb") as f:  # what DataComp's evaluate.py reads
            pickle.dump({"scale": scale, "checkpoint": checkpoint, "scale_config": cfg, "data_dir": str(data)}, f)
    return info


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="tiny")
    p.add_argument("--data", required=True, help="reshard folder (meta.json), shard folder, or brace pattern")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-seen", type=int, default=None)
    p.add_argument("--accum-freq", type=int, default=1)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--precision", default=None)
    p.add_argument("--threads", type=int, default=None)
    a, extra = p.parse_known_args(argv)
    info = train(a.data, a.out, a.scale, a.seed, a.samples_seen, a.accum_freq, a.workers, a.precision,
                 a.threads, extra=extra)
    if world_info_from_env()[1] == 0:
        print(json.dumps({"checkpoint": info["checkpoint"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

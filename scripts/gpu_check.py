#!/usr/bin/env python3
"""`make gpu-check`: the DataComp path on one GPU machine, measured in one short run (issue 14 item 5).

1. installs what the machine's Python lacks (open_clip_torch, webdataset, img2dataset and their small
   dependencies) from the wheels `make gpu-wheels` put in .gpu-wheels/, with `pip install --no-index`, into the
   system site-packages or, where that is read-only, into a temporary folder put on PYTHONPATH; sfcomp itself
   (with baselines/ and eval/ as sfcomp.baselines / sfcomp.eval, as setup.py maps them) is copied beside it;
2. builds a pool of 224+ px RGB shards (256 px JPEGs, so 224 is a real resize + crop) from a real source with
   `sfcomp make-pool --direct` (img2dataset's own resize/encode/writer code, no HTTP);
3. runs one round of `datacomp-b32` and one of `datacomp-cheap` (their bf16 autocast, DataLoader workers;
   under torchrun with nccl when more than one GPU is visible, else one process) and prints, from each round's
   done.json and sfcomp/train.py's $SFCOMP_DATA_WAIT_LOG line, train and score samples/s, peak GPU memory and
   the share of the training loop's wall time the host spent blocked on the data iterator;
4. scores a fixed slice of the pool with the same datacomp-b32 checkpoint on the CPU in fp32 and on the GPU in
   fp32 and in the preset's bf16, and checks the cosine scores agree within SCORE_TOL.

Without a CUDA GPU it prints one line and exits 0. `--rehearse-on-cpu --size 300` runs the whole flow on the CPU
with narrowed presets (tests/test_gpu_check.py), so the script cannot rot between GPU loans.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".gpu-wheels"
NO_GPU_LINE = "gpu-check: no CUDA GPU visible (torch.cuda.is_available() is False): nothing measured"
# Imports the run needs in the machine's Python; wandb only because img2dataset's logger imports it.
NEEDED = ("open_clip", "webdataset", "img2dataset", "ftfy", "braceexpand", "sfcomp.cli", "sfcomp.eval",
          "sfcomp.baselines")
# Cosine scores lie in [-1, 1]. fp32 on GPU vs CPU differ only by summation order (and TF32 in the patch
# convolution): 2e-3. bf16 keeps 8 mantissa bits (relative step 2^-8 = 0.0039) through 12 residual blocks a
# tower; the embeddings are L2-normalised in fp32, so a cosine moves by a few steps at most: 3e-2.
SCORE_TOL = {"fp32": 2e-3, "bf16": 3e-2}
SLICE = 256

# rehearsal: datacomp's layouts (224 px, patch 32 / 112 px, patch 16, contexts 77 / 32) narrowed to 1 layer
NARROW = {"model_cfg": {"vision_cfg": {"layers": 1, "width": 64, "head_width": 32},
                        "text_cfg": {"width": 64, "heads": 2, "layers": 1}},
          "batch_size": 16, "score_batch_size": 64, "num_workers": 2}


def _say(line: str) -> None:
    print(line, flush=True)


def _missing_modules(env: dict) -> list[str]:
    code = ("import importlib, sys\n"
            "def _ok(m):\n"
            "    try:\n        importlib.import_module(m)\n        return True\n"
            "    except Exception:\n        return False\n"
            f"print(' '.join(m for m in {NEEDED!r} if not _ok(m)))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/")
    return out.stdout.split()


def _copy_sfcomp(dest: Path) -> None:
    """sfcomp as setup.py installs it: baselines/ and eval/ inside it as sfcomp.baselines / sfcomp.eval."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "sfcomp", dest / "sfcomp", ignore=ignore)
    shutil.copytree(REPO / "baselines", dest / "sfcomp" / "baselines", ignore=ignore)
    shutil.copytree(REPO / "eval", dest / "sfcomp" / "eval", ignore=ignore)


def prepare_env(tmp: Path, wheel_dir: Path = WHEELS, target_only: bool = False) -> dict:
    """The environment the run's processes get: missing packages installed from .gpu-wheels, sfcomp on the path.
    Exits 1 with one line when something is still missing."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1")
    missing = _missing_modules(env)
    if not missing:
        return env
    site = tmp / "site"
    site.mkdir()
    wheels = sorted(glob.glob(str(wheel_dir / "*.whl")))
    if any(not m.startswith("sfcomp") for m in missing):
        if not wheels:
            _say(f"gpu-check: missing {' '.join(missing)} and no wheels in {wheel_dir}: run `make gpu-wheels` first")
            sys.exit(1)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--find-links", str(wheel_dir)]
        r = None if target_only else subprocess.run(pip + wheels, capture_output=True, text=True)
        where = "the system site-packages"
        if r is None or r.returncode != 0:  # a read-only system site-packages: install beside it
            subprocess.run(pip + ["--target", str(site)] + wheels, check=True)
            where = f"{site} (on PYTHONPATH)"
        _say(f"gpu-check: installed {len(wheels)} wheels from {wheel_dir} into {where}")
    try:
        import importlib.util
        has_wandb = importlib.util.find_spec("wandb") is not None
    except Exception:
        has_wandb = False
    if not has_wandb:
        # img2dataset's logger imports wandb at import time and calls it only with enable_wandb, which
        # sfcomp.download never sets; the real wheel (20 MB) and its ~10 dependencies stay behind
        (site / "wandb.py").write_text('"""Stand-in: img2dataset imports wandb; sfcomp runs it with enable_wandb=False."""\n')
    if any(m.startswith("sfcomp") for m in missing):
        _copy_sfcomp(site)
        _say(f"gpu-check: sfcomp copied to {site} with baselines/ and eval/ inside it, as setup.py installs it")
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in [env.get("PYTHONPATH")] if p])
    still = _missing_modules(env)
    if still:
        _say(f"gpu-check: still missing after installing {wheel_dir}: {' '.join(still)}")
        sys.exit(1)
    return env


def _run(cmd: list[str], env: dict, log: Path) -> None:
    with open(log, "w") as fh:
        # cwd outside the repo: its sfcomp/ (without baselines/ and eval/ inside) must not shadow the installed one
        r = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(log.parent))
    if r.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        _say(f"gpu-check: {' '.join(cmd[:4])} ... exited {r.returncode}; last lines of {log}:")
        for line in tail:
            _say("  " + line)
        sys.exit(1)


def build_pool(args, env: dict, work: Path) -> Path:
    pool = work / "pool"
    per_shard = max(1, args.size // (2 if args.rehearse_on_cpu else 8))  # >= one shard per DataLoader worker
    cmd = [sys.executable, "-m", "sfcomp", "make-pool", "--source", args.source, "--out", str(pool),
           "--size", str(args.size), "--direct", "--image-size", "256", "--samples-per-shard", str(per_shard),
           "--processes", str(1 if args.rehearse_on_cpu else 8), "--threads", "8",
           "--ref-steps", str(2 if args.rehearse_on_cpu else 50), "--quiet"]
    _run(cmd, env, work / "make-pool.log")
    return pool


def run_round(args, env: dict, work: Path, pool: Path, preset: str, steps: int, gpus: int) -> dict:
    spec: dict = {"extends": preset, "name": f"{preset}-gpu-check"}
    if args.rehearse_on_cpu:
        spec.update(NARROW)
    preset_file = work / f"{preset}.json"
    preset_file.write_text(json.dumps(spec))
    wait_log = work / f"{preset}.wait.jsonl"
    rnd = ["-m", "sfcomp", "round", "--pool", str(pool), "--workdir", str(work / preset), "--preset",
           str(preset_file), "--steps", str(steps), "--quiet"]
    if args.rehearse_on_cpu:
        rnd += ["--device", "cpu", "--threads", "1"]
    if gpus > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"] + rnd
    else:
        cmd = [sys.executable] + rnd
    _run(cmd, dict(env, SFCOMP_DATA_WAIT_LOG=str(wait_log)), work / f"{preset}.log")
    done = json.loads((work / preset / "round_00" / "done.json").read_text())
    waits = [json.loads(line) for line in wait_log.read_text().splitlines() if line.strip()]
    wait_s, loop_s = sum(w["wait_s"] for w in waits), sum(w["loop_s"] for w in waits)
    peaks = [w["peak_bytes"] for w in waits if w["peak_bytes"] is not None]
    _say(f"[{preset}] train samples/s: {done['train_samples_per_s']:.1f} ({steps} steps x {done['world_size']} "
         f"process(es), 2 folds)")
    _say(f"[{preset}] score samples/s: {done['score_samples_per_s']:.1f}")
    _say(f"[{preset}] peak GPU memory: " + (f"{max(peaks) / 2**30:.2f} GiB (torch.cuda.max_memory_allocated)"
                                            if peaks else "n/a (rehearsal on CPU)"))
    _say(f"[{preset}] data wait: {100 * wait_s / loop_s if loop_s else 0:.1f}% of the training loop's "
         f"{loop_s:.1f} s blocked on the data iterator")
    return done


def score_match(work: Path, pool: Path, preset: str, gpu: str) -> bool:
    """Cosine scores of the first SLICE pool rows by fold 0's checkpoint: CPU fp32 against `gpu` in fp32 and
    in the preset's precision (bf16)."""
    import numpy as np
    import torch

    from sfcomp.model import create_model
    from sfcomp.pool import Pool
    from sfcomp.score import cosine_scores
    from sfcomp.stream import StreamedPoolData

    cfg = json.loads((work / preset / "config.json").read_text())["preset"]
    fp32 = {**cfg, "precision": "fp32"}
    model, _ = create_model(cfg)
    model.load_state_dict(torch.load(work / preset / "round_00" / "model_f0.pt", map_location="cpu"))
    data = StreamedPoolData(Pool(pool), cfg)
    rows = np.arange(min(SLICE, len(data.uids)))

    def scores(p: dict, device: str) -> np.ndarray:
        model.to(device)
        return cosine_scores(*data.embed(model, rows, p, device=device, progress=False))

    ref = scores(fp32, "cpu")
    ok = True
    for name, p in (("fp32", fp32), ("bf16", cfg)):
        got = scores(p, gpu)
        diff = float(np.abs(got - ref).max())
        passed = diff <= SCORE_TOL[name]
        ok &= passed
        _say(f"[score match] {len(rows)} samples, {gpu} {name} vs cpu fp32: max |diff| {diff:.2e} <= "
             f"{SCORE_TOL[name]:.0e}: {'PASS' if passed else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="fashion-mnist", help="make-pool --source (default: fashion-mnist)")
    ap.add_argument("--size", type=int, default=None, help="pool samples (default 20000; rehearsal 300)")
    ap.add_argument("--b32-steps", type=int, default=None, help="datacomp-b32 steps a fold (default 20)")
    ap.add_argument("--cheap-steps", type=int, default=None, help="datacomp-cheap steps a fold (default 60)")
    ap.add_argument("--workdir", default=None, help="keep the pool and rounds here (default: a temp folder)")
    ap.add_argument("--wheels", type=Path, default=WHEELS, help="wheel folder (default: .gpu-wheels)")
    ap.add_argument("--pip-target", action="store_true",
                    help="install missing wheels into a temporary folder even where site-packages is writable")
    ap.add_argument("--rehearse-on-cpu", action="store_true", help="the whole flow on the CPU, narrowed presets")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        _say("gpu-check: torch is not installed in this Python: no GPU to check (run `make install`, or use the "
             "GPU machine's python3)")
        return 0
    if not torch.cuda.is_available() and not args.rehearse_on_cpu:
        _say(NO_GPU_LINE)
        return 0
    cpu = args.rehearse_on_cpu
    args.size = args.size or (300 if cpu else 20000)
    b32_steps = args.b32_steps or (2 if cpu else 20)
    cheap_steps = args.cheap_steps or (2 if cpu else 60)
    gpus = 0 if cpu else torch.cuda.device_count()
    if not cpu:
        _say(f"gpu-check: {gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    if not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") and \
            (args.wheels / "fashion-mnist").is_dir():
        os.environ.setdefault("SFCOMP_FASHION_MNIST_DIR", str(args.wheels.resolve() / "fashion-mnist"))
    with tempfile.TemporaryDirectory(prefix="sfcomp-gpu-check-") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp) / "work"
        work.mkdir(parents=True, exist_ok=True)
        env = prepare_env(Path(tmp), args.wheels, args.pip_target)
        pool = build_pool(args, env, work)
        _say(f"gpu-check: pool of {args.size} samples, 256 px RGB JPEG shards, from --source {args.source}")
        run_round(args, env, work, pool, "datacomp-b32", b32_steps, gpus)
        run_round(args, env, work, pool, "datacomp-cheap", cheap_steps, gpus)
        # the score check runs in a child with the prepared environment (open_clip may be in the temp folder)
        code = (f"import sys; sys.path[:0] = {[str(REPO / 'scripts')]!r}; import gpu_check as g; "
                f"from pathlib import Path; "
                f"sys.exit(0 if g.score_match(Path({str(work)!r}), Path({str(pool)!r}), 'datacomp-b32', "
                f"{'cpu' if cpu else 'cuda'!r}) else 1)")
        ok = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(work)).returncode == 0
    _say("gpu-check: " + ("score match passed" if ok else "score match FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

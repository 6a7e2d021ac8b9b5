"""The streamed data path measured (issue 14 item 4; figures for docs/BENCHMARKS.md).

    .venv/bin/python bench/perf/bench_datapath.py [--n 360] [--repeats 3] [--steps 16] [--json bench/out/datapath.json]

1. decode: JPEG decode + resize/centre-crop + tokenise (context 77), samples/s on one core (this process, one
   torch thread), at 64, 128 and 224 px, through sfcomp.stream._sample_stream (tar read, json membership check,
   PIL decode, sfcomp.cache.resize_center_crop, sfcomp.text.tokenize_captions: what each DataLoader worker runs),
   plus the split by stage. Source JPEGs are sized as DataComp's shards hold them (img2dataset at 512 px on the
   longer side, quality 95): crops of the photos that ship with matplotlib and scikit-learn, so JPEG entropy is a
   photograph's, not a flat test pattern's.
2. train: the streamed training loop (StreamedPoolData.train: DataLoader over the shards, 0/1/2 workers) against
   the same model, batch and steps fed by train_loop from arrays already in memory, for a narrowed datacomp-b32
   (224 px, patch 32, context 77) via the preset's `extends`. Steady-state samples/s from the on_step clock after
   the first --skip steps (DataLoader start, shuffle buffer fill and prefetch excluded); interleaved repeats;
   the ratio is taken within each repeat, then the median; also the fraction of the steady-state wall time the
   training loop spends waiting on the DataLoader.
3. cores per GPU: FLOPs per training sample of the real ViT-B-32 (torch.utils.flop_counter over forward + ClipLoss
   + backward at batch 2), a stated GPU bf16 dense rate at a stated utilisation -> samples/s per GPU, divided by
   the 224 px decode samples/s per core.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from common import machine  # bench/perf is the script's own folder, first on sys.path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[2]

SIZES = (64, 128, 224)
CONTEXT = 77
# H100 SXM / H200 SXM bf16 dense tensor-core peak (NVIDIA datasheets: 989 TFLOP/s without sparsity; the H200 has
# the H100's compute and more memory). Utilisation: model FLOPs over peak; 0.35 is typical of a well-fed ViT-B
# CLIP step with bf16 autocast, 0.2 and 0.5 bracket it.
GPU_PEAK_FLOPS = 989e12
MFU = (0.2, 0.35, 0.5)
NARROW = {
    "extends": "datacomp-b32", "name": "datacomp-b32-bench",
    "model_cfg": {"embed_dim": 256, "vision_cfg": {"layers": 4, "width": 256, "head_width": 64},
                  "text_cfg": {"width": 256, "heads": 4, "layers": 4}},
    "batch_size": 32, "warmup": 1,
}


def _tests_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def photo_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """`n` JPEGs of 512 x 384 (or 384 x 512), quality 95: random crops, flips and scales of real photographs."""
    from matplotlib import cbook
    from PIL import Image, ImageOps

    import sklearn.datasets

    photos = [Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")]
    img_dir = Path(sklearn.datasets.__file__).parent / "images"
    photos += [Image.open(p).convert("RGB") for p in sorted(img_dir.glob("*.jpg"))]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        f = rng.uniform(0.5, 1.0)
        cw, ch = int(w * f), int(h * f)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        crop = crop.resize((512, 384) if rng.random() < 0.5 else (384, 512), Image.BICUBIC)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def build_pool(root: Path, n: int) -> Path:
    """A DataComp-layout pool (tests/poolfactory.py) whose shards' JPEGs are swapped for `photo_jpegs`."""
    _tests_module("poolfactory").write_tiny_pool(root, n=n, seed=0, samples_per_shard=max(1, n // 4),
                                                 with_npz=False)
    jpegs = iter(photo_jpegs(n))
    for tar in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(tar) as tf:
            members = [(m, tf.extractfile(m).read()) for m in tf.getmembers()]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as out:
            for m, data in members:
                if m.name.endswith(".jpg"):
                    data = next(jpegs)
                m.size = len(data)
                out.addfile(m, io.BytesIO(data))
        tar.write_bytes(buf.getvalue())
    return root


def _all_members(pool_root: Path):
    from sfcomp.pool import Pool
    from sfcomp.stream import StreamedPoolData

    data = StreamedPoolData(Pool(str(pool_root)), {"image_size": 224, "context_length": CONTEXT})
    return data.shards, data.uids


def decode_rates(pool_root: Path, repeats: int) -> dict:
    """samples/s of _sample_stream per size (wall and per CPU-second), and CPU ms per sample of each stage."""
    from PIL import Image

    from sfcomp.cache import resize_center_crop
    from sfcomp.pool import ShardErrors, iter_shard_samples
    from sfcomp.stream import _sample_stream
    from sfcomp.text import tokenize_captions

    shards, members = _all_members(pool_root)
    for _ in _sample_stream(shards[:1], members, 64, CONTEXT, ShardErrors()):  # warm-up: imports, BPE vocabulary
        pass
    out = {}
    for size in SIZES:
        runs, cpu_runs, count = [], [], 0
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            count = sum(1 for _ in _sample_stream(shards, members, size, CONTEXT, ShardErrors()))
            runs.append(count / (time.perf_counter() - t0))
            cpu_runs.append(count / (time.process_time() - c0))
        # per CPU-second of this one-thread process = per core, whatever else shares the machine
        out[size] = {"samples_per_s": statistics.median(runs), "samples_per_cpu_s": statistics.median(cpu_runs),
                     "runs": runs, "cpu_runs": cpu_runs, "samples": count}
    raw = list(iter_shard_samples(shards, decode=None))
    jpgs, texts = [s["image"] for s in raw], [s["text"] for s in raw]
    n = len(jpgs)

    def ms(fn) -> float:
        ts = []
        for _ in range(repeats):
            c0 = time.process_time()
            fn()
            ts.append((time.process_time() - c0) / n * 1e3)
        return statistics.median(ts)

    def decode_all():
        return [Image.open(io.BytesIO(b)).convert("RGB") for b in jpgs]

    ims = decode_all()
    stages = {"read+json (tar, no decode)": ms(lambda: list(iter_shard_samples(shards, decode=None))),
              "jpeg decode (PIL)": ms(decode_all),
              "tokenise (1 caption per call, as stream.py)": ms(lambda: [tokenize_captions([t], CONTEXT)
                                                                         for t in texts])}
    for size in SIZES:
        stages[f"resize + crop to {size}"] = ms(lambda s=size: [resize_center_crop(im, s) for im in ims])

    def draft_decode(size):
        for b in jpgs:
            im = Image.open(io.BytesIO(b))
            im.draft("RGB", (size, size))
            resize_center_crop(im.convert("RGB"), size)

    for size in SIZES:
        stages[f"decode with PIL draft + resize to {size} (not used by stream.py)"] = ms(lambda s=size: draft_decode(s))
    return {"per_size": out, "stage_ms": stages, "jpeg_kb_mean": float(np.mean([len(b) for b in jpgs]) / 1024)}


def _steady_rate(stamps: list[float], batch: int, skip: int) -> float:
    return batch * (len(stamps) - 1 - skip) / (stamps[-1] - stamps[skip])


def train_rates(pool_root: Path, repeats: int, steps: int, skip: int, workers=(0, 1, 2)) -> dict:
    from sfcomp.model import create_model, load_preset
    from sfcomp.pool import Pool, ShardErrors
    from sfcomp.stream import StreamedPoolData, _sample_stream
    from sfcomp.train import train_loop

    preset = load_preset({**NARROW, "steps": steps})
    batch = preset["batch_size"]
    shards, members = _all_members(pool_root)
    decoded = list(_sample_stream(shards, members, 224, CONTEXT, ShardErrors()))
    px = np.stack([d[0] for d in decoded])
    tok = np.stack([d[1] for d in decoded])

    def in_memory(stamps):
        rng = np.random.default_rng(0)

        def batches():
            while True:
                idx = rng.choice(len(px), batch, replace=False)
                yield px[idx], tok[idx]

        model, _ = create_model(preset, seed=0)
        train_loop(model, batches(), preset, steps, "cpu", False, lambda s, m: stamps.append(time.perf_counter()))

    def streamed(nw, stamps, waits):
        import sfcomp.stream as S

        def timed_loop(model, batches, *a, **kw):  # the seconds train_loop waits on the DataLoader per step
            def timed():
                it = iter(batches)
                while True:
                    t0 = time.perf_counter()
                    try:
                        x = next(it)
                    except StopIteration:
                        return
                    waits.append(time.perf_counter() - t0)
                    yield x

            return train_loop(model, timed(), *a, **kw)

        p = {**preset, "num_workers": nw}
        data = StreamedPoolData(Pool(str(pool_root)), p)
        model, _ = create_model(p, seed=0)
        S.train_loop = timed_loop
        try:
            data.train(model, np.arange(len(data.uids)), p, steps, seed=0, progress=False,
                       on_step=lambda s, m: stamps.append(time.perf_counter()))
        finally:
            S.train_loop = train_loop

    results = {"in_memory": [], **{f"streamed_{w}": [] for w in workers}}
    for _ in range(repeats):
        for name in results:
            stamps, waits = [time.perf_counter()], []
            if name == "in_memory":
                in_memory(stamps)
            else:
                streamed(int(name.rsplit("_", 1)[1]), stamps, waits)
            # waits[i] precedes step i + 1, i.e. falls between stamps[i] and stamps[i + 1]
            wait_frac = sum(waits[skip:steps]) / (stamps[-1] - stamps[skip]) if waits else 0.0
            results[name].append({"steady": _steady_rate(stamps, batch, skip),
                                  "first_step_s": stamps[1] - stamps[0], "wait_frac": wait_frac})
    out = {"preset": {k: preset[k] for k in ("model_cfg", "image_size", "context_length", "batch_size")},
           "steps": steps, "skip": skip, "samples_in_pool": len(px)}
    for name, runs in results.items():
        out[name] = {"samples_per_s": statistics.median(r["steady"] for r in runs),
                     "first_step_s": statistics.median(r["first_step_s"] for r in runs),
                     "data_wait_frac": statistics.median(r["wait_frac"] for r in runs),
                     "runs": [r["steady"] for r in runs]}
        if name != "in_memory":
            out[name]["ratio"] = statistics.median(r["steady"] / m["steady"]
                                                   for r, m in zip(runs, results["in_memory"]))
    return out


def vit_b32_train_flops() -> float:
    """FLOPs of one training sample of datacomp-b32's ViT-B-32 (forward + ClipLoss + backward, batch 2)."""
    import torch
    from open_clip import ClipLoss
    from torch.utils.flop_counter import FlopCounterMode

    from sfcomp.model import create_model, load_preset

    preset = load_preset("datacomp-b32")
    model, _ = create_model(preset, seed=0)
    x = torch.randn(2, 3, 224, 224)
    t = torch.randint(0, 49408, (2, CONTEXT))
    with FlopCounterMode(display=False) as fc:
        out = model(x, t)
        ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    return fc.get_total_flops() / 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=360, help="pool rows (about 90%% are downloaded samples)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--skip", type=int, default=6, help="steps left out of the steady-state rate")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--only", choices=["decode", "train", "flops"], default=None)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": "python " + " ".join(sys.argv), "load_avg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_datapath_") as tmp:
        pool = build_pool(Path(tmp) / "pool", a.n)
        if a.only in (None, "decode"):
            res["decode"] = decode_rates(pool, a.repeats)
            print(json.dumps(res["decode"], indent=1), flush=True)
        if a.only in (None, "train"):
            res["train"] = train_rates(pool, a.repeats, a.steps, a.skip)
            print(json.dumps(res["train"], indent=1), flush=True)
    if a.only in (None, "flops"):
        f = vit_b32_train_flops()
        res["gpu"] = {"train_flops_per_sample": f, "peak_flops": GPU_PEAK_FLOPS,
                      "samples_per_s": {str(m): GPU_PEAK_FLOPS * m / f for m in MFU}}
        if "decode" in res:
            per_core = res["decode"]["per_size"][224]["samples_per_cpu_s"]
            res["gpu"]["cores_per_gpu"] = {str(m): GPU_PEAK_FLOPS * m / f / per_core for m in MFU}
        print(json.dumps(res["gpu"], indent=1), flush=True)
    res["load_avg_end"] = os.getloadavg()
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()

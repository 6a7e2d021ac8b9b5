"""Every DataComp baseline on the demo pool: subset size and clean precision from truth.parquet.

    python bench/experiments/demo_baselines.py [--pool data/demo] [--out work/demo/baselines] [--num-workers 2]

The image-based baselines need target embeddings: DataComp uses ImageNet-1k train images through OpenAI's
L/14; on the demo pool the held-out clean split (the Fashion-MNIST train images that trained the pool's
reference models, never pool samples) goes through the pool's own reference L/14 model (POOL/reference/
ref-l14.pt), the model behind the pool's l14_img. truth.parquet is read here only, to score the subsets.
Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def heldout_targets(pool: Path, out: Path) -> Path:
    """L/14 image embeddings of the held-out clean split, float16 unit rows, as the pool's npz stores them."""
    if out.exists():
        return out
    import torch

    from sfcomp.sources import fashion_mnist as F
    from sfcomp.sources import reference_clip as RC

    torch.set_num_threads(2)
    images, labels = F.load("train")
    ref_file = pool / "_work" / "ref_indices.npy"
    if ref_file.exists():
        ref = np.load(ref_file)
    else:  # make-pool removed its work folder: the plan is deterministic in make_pool.json's arguments
        from sfcomp.sources.pool_plan import plan_pool

        info = json.loads((pool / "make_pool.json").read_text())
        a = info["args"]
        ref = plan_pool(images, labels, a["size"], a["noise"], info["profile"], a["seed"],
                        ref_size=a["ref_size"]).ref_indices
    held = images[ref]
    ckpt_dir = pool / "reference"
    if not (ckpt_dir / "ref-l14.pt").exists():
        raise SystemExit(f"{ckpt_dir / 'ref-l14.pt'}: the pool's reference L/14 model is missing")
    model, tok, preset = RC.train_reference("l14", held, [""] * len(held), seed=0, out_dir=ckpt_dir, progress=False)
    img, _ = RC.embed(model, tok, preset, held, [""] * len(held))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, RC.to_float16_unit(img))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", default=str(ROOT / "data/demo"))
    ap.add_argument("--out", default=str(ROOT / "work/demo/baselines"))
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--targets", default=None, help="image-based targets file [held-out clean split, computed]")
    args = ap.parse_args()

    from sfcomp.baselines.apply import BaselineArgs, run_baseline
    from sfcomp.truth import clean_precision, read_truth, truth_path

    pool, out = Path(args.pool), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = str(pool / "metadata")
    truth = read_truth(truth_path(pool), ["clean"])
    targets = args.targets or str(heldout_targets(pool, out / "heldout_l14_img.npy"))

    runs = [
        ("no_filter", {}),
        ("random", dict(fraction=0.3, seed=0)),
        ("basic_filter", {}),
        ("laion2b", {}),
        ("clip_score", dict(arch="b32", fraction=0.3)),
        ("clip_score", dict(arch="l14", fraction=0.3)),
        ("clip_score", dict(arch="b32", threshold=0.25)),
        ("text_based", {}),
        ("image_based", dict(image_based_targets=[targets])),
        ("image_based_intersect_clip_score", dict(arch="l14", fraction=0.3, image_based_targets=[targets])),
    ]
    rows = []
    for name, kw in runs:
        tag = name + "".join(f"_{k}{v}" for k, v in kw.items() if k != "image_based_targets")
        path = out / f"{tag}.npy"
        t0 = time.time()
        try:
            side = run_baseline(BaselineArgs(name=name, metadata_dir=meta, save_path=str(path),
                                             num_workers=args.num_workers, **kw), log=lambda m: None)
        except Exception as e:  # report and go on with the other baselines
            rows.append((tag, f"failed: {e}", "", "", ""))
            continue
        sub = np.load(path)
        precision = clean_precision(sub, truth)
        precision = float("nan") if precision is None else precision
        lang = side.get("language_id", {})
        rows.append((tag, len(sub), f"{100 * len(sub) / side['pool_rows']:.1f}%", f"{precision:.3f}",
                     f"{time.time() - t0:.1f}" + (f" ({lang.get('model_name') or lang.get('package')})" if lang else "")))
        print(json.dumps({"baseline": tag, "kept": len(sub), "precision": precision}), file=sys.stderr, flush=True)
    print(f"\nDemo pool {pool} ({len(truth.uids)} rows in truth.parquet, clean base rate "
          f"{truth.columns['clean'].astype(bool).mean():.3f}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| baseline | subset size | of pool | clean precision | seconds (language model) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


if __name__ == "__main__":
    main()

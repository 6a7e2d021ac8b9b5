"""Benchmarks of the self-filtering loop (figures for docs/bench/loop.md).

  speed:  scoring throughput through the loop's data path (memory-mapped cache -> embed) vs the bare model's
          inference on tensors already in memory, and training throughput through train_on_arrays on cache rows
          vs a bare training step (forward, ClipLoss, backward, AdamW step) on a batch already in memory; same
          batch size, same model, same process, interleaved repeats, medians, ratio per repeat.
  table:  per-round precision of clean samples in the top 30% for every score field, and the round's wall
          time split, read from finished workdirs (made by `sfcomp run`).

    python bench/perf/bench_loop.py speed --pool data/demo --threads 1
    python bench/perf/bench_loop.py table work/demo [work/demo-cosine ...]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


class Clock:
    """Wall and process-CPU seconds of a block. With one torch thread the CPU time is the work done, stable
    when other jobs share the cores; wall time is what a user waits."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def speed(args) -> dict:
    import torch
    from open_clip import ClipLoss

    from sfcomp.cache import build_cache
    from sfcomp.data import CachedPoolData
    from sfcomp.model import create_model, load_preset, to_model_input
    from sfcomp.train import make_optimizer, train_on_arrays
    from sfcomp.data import RowView

    torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    data = CachedPoolData(build_cache(args.pool, preset, progress=False))
    model, _ = create_model(preset, seed=0)
    n_score = min(args.score_rows, len(data.uids))
    rows = np.sort(np.random.default_rng(0).choice(len(data.uids), n_score, replace=False))
    sb, tb = preset["score_batch_size"], preset["batch_size"]

    # bare inference: the same number of samples, from tensors already normalised and in memory
    x = to_model_input(np.asarray(data.cache.pixels[:sb]), preset)
    t = torch.as_tensor(np.asarray(data.cache.tokens[:sb])).long()

    def bare_score():
        model.eval()
        with Clock() as c, torch.inference_mode():
            for _ in range(0, n_score, sb):
                torch.nn.functional.normalize(model.encode_image(x), dim=-1)
                torch.nn.functional.normalize(model.encode_text(t), dim=-1)
        return n_score, c

    def loop_score():
        with Clock() as c:
            data.embed(model, rows, preset, progress=False)
        return n_score, c

    xb = to_model_input(np.asarray(data.cache.pixels[:tb]), preset)
    tkb = torch.as_tensor(np.asarray(data.cache.tokens[:tb])).long()
    loss_fn = ClipLoss()

    def bare_train():
        model.train()
        opt = make_optimizer(model, preset)
        with Clock() as c:
            for _ in range(args.train_steps):
                out = model(xb, tkb)
                loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return args.train_steps * tb, c

    train_rows = np.sort(np.random.default_rng(1).choice(len(data.uids), min(len(data.uids), 20 * tb), replace=False))

    def loop_train():
        with Clock() as c:
            train_on_arrays(model, RowView(data.cache.pixels, train_rows), RowView(data.cache.tokens, train_rows),
                            preset, args.train_steps, seed=0, progress=False)
        return args.train_steps * tb, c

    bare_score()  # warm-up
    bare_train()
    res = {f"{k}_{u}": [] for k in ("bare_score", "loop_score", "bare_train", "loop_train") for u in ("wall", "cpu")}
    for _ in range(args.repeats):
        for name, fn in (("bare_score", bare_score), ("loop_score", loop_score),
                         ("bare_train", bare_train), ("loop_train", loop_train)):
            n, c = fn()
            res[f"{name}_wall"].append(n / c.wall)
            res[f"{name}_cpu"].append(n / c.cpu)
    out = {"preset": preset["name"], "threads": args.threads, "score_batch": sb, "train_batch": tb,
           "score_rows": n_score, "train_steps": args.train_steps, "repeats": args.repeats,
           **{f"{k}_per_s_median": statistics.median(v) for k, v in res.items()}}
    for task in ("score", "train"):
        for u in ("wall", "cpu"):
            ratios = [a / b for a, b in zip(res[f"loop_{task}_{u}"], res[f"bare_{task}_{u}"])]
            out[f"{task}_ratio_{u}_median"] = statistics.median(ratios)
            out[f"{task}_ratio_{u}_all"] = ratios
    out["raw"] = res
    print(json.dumps(out, indent=2))
    return out


def table(args) -> None:
    for wd in args.workdirs:
        wd = Path(wd)
        cfg = json.loads((wd / "config.json").read_text())
        loop = cfg["loop"]
        print(f"\n{wd}: selection by `{loop['score']}`, folds {loop['folds']}, top {loop['top_frac']} + random "
              f"{loop['random_frac']}, steps {loop['steps'] or cfg['preset'].get('steps')}, seed {loop['seed']}\n")
        rounds = sorted(p for p in wd.glob("round_*") if (p / "done.json").exists())
        if not rounds:
            continue
        fields = list(json.loads((rounds[0] / "report.json").read_text())["top_k"])
        print("| round | mix | " + " | ".join(f"prec. top-30% {f}" for f in fields)
              + " | clean share next mix | cluster cov. | class cov. | wall s | train s | score s | select s |")
        print("|---" * (len(fields) + 9) + "|")
        for r in rounds:
            rep = json.loads((r / "report.json").read_text())
            done = json.loads((r / "done.json").read_text())
            print(f"| {rep['round']} | {rep['mix']} | "
                  + " | ".join(f"{rep['top_k'][f]['precision']:.3f}" for f in fields)
                  + f" | {rep['next_mix_clean']['precision']:.3f} | {rep['cluster_drift']['coverage']:.3f} | "
                    f"{rep['class_drift']['coverage']:.3f} | {done['wall_s']:.0f} | {done['train_s']:.0f} | "
                    f"{done['score_s']:.0f} | {done['select_s']:.2f} |")
        r = rounds[-1]
        rep = json.loads((r / "report.json").read_text())
        if "noise_types" in rep:
            print("\nlast round, noise types (pool / top-30% by each field / next mix):")
            for t, v in rep["noise_types"].items():
                print(f"- {t}: pool {v['pool']}, " + ", ".join(f"{k} {v[k]}" for k in v if k.startswith("top_"))
                      + f", next mix {v['next_mix']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--pool", default="data/demo")
    s.add_argument("--preset", default="tiny")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--score-rows", type=int, default=8192)
    s.add_argument("--train-steps", type=int, default=10)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--out", default=None, help="Also write the JSON here.")
    t = sub.add_parser("table")
    t.add_argument("workdirs", nargs="+")
    args = ap.parse_args()
    if args.cmd == "speed":
        out = speed(args)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2))
    else:
        table(args)


if __name__ == "__main__":
    main()

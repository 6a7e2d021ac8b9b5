"""What the loop's whole default run costs, against the final DataComp training it is meant to improve.

For each in-loop preset (tiny, rgb64, datacomp-b32, datacomp-cheap) and each scale (DataComp small and medium, and the
demo pool at sfcomp's tiny scale): the default run's training and scoring FLOPs (sfcomp.flops: torch's
FlopCounterMode on the real models, meta device) and its cost ratio = loop FLOPs / final-training FLOPs (the
scale's model, counted the same way at the scale's batch, x its samples seen). Nothing is trained; a printed
markdown table.

The run is the library's defaults (sfcomp/configs/loop_defaults.json: 3 rounds x 2 folds, top 0.3 + random 0.1,
round 0 on the whole pool), on a pool whose every row was downloaded (real downloads get 85-95%, which lowers
scoring, and training for `epochs` presets, in proportion):
- round 0 trains on the pool, round k > 0 on the expected next mix, N x (top + random - top x random) (a uniform
  sample overlaps the top fraction at random); each fold model on (folds - 1) / folds of its round's mix, for the
  preset's `steps` or `epochs` passes (sfcomp.train.steps_for), at batch min(batch, its share);
- every round every fold model scores the whole pool (no snapshots by default);
- the final training: eval/configs/scales.json (ViT-B-32 for small and medium, batch 4096, 12.8M / 128M seen).

    python bench/experiments/cost_table.py [--demo-pool-size 57618]
"""
from __future__ import annotations

import argparse


PRESETS = ("tiny", "rgb64", "datacomp-cheap", "datacomp-b32")


def run_compute(preset: dict, pool_size: int, loop: dict, steps: int | None = None) -> dict:
    """The default run's compute, round by round, summed (see the module docstring for the mix model)."""
    from sfcomp.flops import round_compute
    from sfcomp.train import steps_for

    folds, rounds = loop["folds"], loop["rounds"]
    next_share = loop["top_frac"] + loop["random_frac"] - loop["top_frac"] * loop["random_frac"]
    total = {"samples_trained": 0, "samples_scored": 0, "train_flops": 0.0, "score_flops": 0.0, "total_flops": 0.0}
    steps_per_round = []
    for k in range(rounds):
        mix = int(pool_size * (loop["round0_frac"] if k == 0 else next_share))
        per_model = mix * (folds - 1) // folds if folds >= 2 else mix
        s = steps if steps is not None else steps_for(preset, per_model)
        steps_per_round.append(s)
        c = round_compute(preset, s, [min(preset["batch_size"], per_model)] * max(1, folds), pool_size, max(1, folds))
        for key in total:
            total[key] += c[key]
    return {**total, "steps_per_round": steps_per_round}


def rows(demo_pool_size: int) -> list[dict]:
    from sfcomp.defaults import LOOP_DEFAULTS
    from sfcomp.flops import final_training
    from sfcomp.model import load_preset
    from sfcomp.workdir import SCALE_POOL_SIZES, final_reference

    out = []
    cases = [(name, scale, SCALE_POOL_SIZES[scale], None) for scale in ("small", "medium") for name in PRESETS]
    # the demo run: tiny preset on the demo pool at the tiny scale, with the preset's steps and make demo's 100
    cases += [("tiny", "tiny", demo_pool_size, None), ("tiny", "tiny", demo_pool_size, 100)]
    for name, scale, n, steps in cases:
        preset = load_preset(name)
        final = final_training(final_reference(scale, n, None))
        c = run_compute(preset, n, LOOP_DEFAULTS, steps)
        out.append({"preset": name + (f" --steps {steps}" if steps else ""), "scale": scale, "pool": n,
                    "final": final, **c, "ratio": c["total_flops"] / final["flops"]})
    return out


def table(rs: list[dict]) -> str:
    lines = ["| preset | scale (pool) | steps a model, rounds 0/1/2 | samples trained | samples scored | "
             "train FLOPs | score FLOPs | loop FLOPs | final training | **cost ratio** |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs:
        f = r["final"]
        lines.append(f"| `{r['preset']}` | {r['scale']} ({r['pool']:,}) | "
                     f"{' / '.join(f'{s:,}' for s in r['steps_per_round'])} | {r['samples_trained']:,} | "
                     f"{r['samples_scored']:,} | {r['train_flops']:.3g} | {r['score_flops']:.3g} | "
                     f"{r['total_flops']:.3g} | {f['model']} x {f['samples_seen']:,}: {f['flops']:.3g} | "
                     f"**{r['ratio']:.3g}** |")
    return "\n".join(lines)


def per_sample_table() -> str:
    from sfcomp.flops import named_model_preset, score_flops_per_sample, train_flops_per_sample
    from sfcomp.model import load_preset

    lines = ["| model | train GFLOPs / sample (at batch) | score GFLOPs / sample |", "|---|---|---|"]
    models = [(f"preset `{n}`", load_preset(n)) for n in PRESETS]
    models += [(m, named_model_preset(m, b)) for m, b in (("ViT-B-32", 4096), ("ViT-B-16", 8192),
                                                             ("ViT-L-14", 90112), ("sfcomp-ViT-tiny", 256))]
    for label, p in models:
        b = p["batch_size"]
        lines.append(f"| {label} | {train_flops_per_sample(p, b) / 1e9:.4g} ({b}) | "
                     f"{score_flops_per_sample(p) / 1e9:.4g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-pool-size", type=int, default=57618,
                    help="samples of the demo pool (docs/BENCHMARKS.md: 57,618 of 60,000 downloaded)")
    args = ap.parse_args()
    print(table(rows(args.demo_pool_size)))
    print()
    print(per_sample_table())


if __name__ == "__main__":
    main()

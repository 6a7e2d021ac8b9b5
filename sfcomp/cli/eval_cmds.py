"""CLI: the evaluation side (`reshard`, `train-eval`, `evaluate`, `compare`). Logic lives in eval/."""
from __future__ import annotations

import json

import click

from .paths import PathParam, per_core


@click.command("reshard")
@click.option("-i", "--input-dir", required=True, help="Pool folder (with shards/) or a shard folder.")
@click.option("-s", "--subset-file", required=True, type=PathParam(dir_okay=False),
              help="Sorted u8,u8 subset (.npy or raw memmap); a repeated uid is upsampled.")
@click.option("-o", "--output-dir", required=True, type=PathParam())
@click.option("--shard-size", default=10000, show_default=True, help="Maximum samples per output shard.")
@click.option("--overwrite", is_flag=True, help="Replace an output folder made for another subset.")
@click.option("--allow-empty", is_flag=True, help="Reshard an empty subset (writes no sample) instead of refusing it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def reshard(input_dir, subset_file, output_dir, shard_size, overwrite, allow_empty, as_json):
    """Write the subset's samples to new shards for training (DataComp resharder semantics; refuses an
    unsorted subset; resumable)."""
    from sfcomp.eval.reshard import reshard as run

    rep = run(input_dir, subset_file, output_dir, shard_size=shard_size, overwrite=overwrite,
              log=lambda m: click.echo(m, err=True), allow_empty=allow_empty)
    click.echo(json.dumps(rep.as_dict()) if as_json else rep.summary())


@click.command("train-eval")
@click.option("--subset", default=None, type=PathParam(dir_okay=False), help="Subset .npy to reshard and train on.")
@click.option("--pool", default=None, help="Pool folder the subset is drawn from.")
@click.option("--data", default=None, help="Already resharded data (folder with meta.json, shard folder or pattern).")
@click.option("--reshard-dir", default=None, help="Where to reshard (default OUT/data); reused if already done.")
@click.option("--eval", "eval_dir", required=True, help="Folder of clip_benchmark wds eval sets.")
@click.option("--out", required=True, type=PathParam(), help="Run folder.")
@click.option("--method", default=None, help="Name shown by `sfcomp compare` (default: the subset's file name).")
@click.option("--scale", default="tiny", show_default=True, help="tiny, small, medium, large, xlarge.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--samples-seen", default=None, type=int, help="Override the scale's samples seen (non-standard).")
@click.option("--shard-size", default=None, type=int, help="Reshard shard size (default 10000; tiny 1000).")
@click.option("--nproc", default=1, show_default=True, type=int, help="GPUs: >1 trains under torchrun.")
@click.option("--threads", default=None, type=per_core(), help="torch CPU threads.")
@click.option("--workers", default=None, type=per_core(low=0), help="Data loader workers (default: the scale's).")
@click.option("--precision", default=None, help="Override the scale's precision (e.g. fp32 on CPU).")
@click.option("--task", "tasks", multiple=True, help="Evaluate only these tasks (repeatable).")
@click.option("--truth", default=None, help="truth.parquet for clean precision (default: POOL/truth.parquet).")
@click.option("--eval-cache", default=None, type=PathParam(),
              help="Keep preprocessed eval images here and reuse them (many runs on the same eval sets).")
def train_eval(subset, pool, data, reshard_dir, eval_dir, out, method, scale, seed, samples_seen, shard_size, nproc,
               threads, workers, precision, tasks, truth, eval_cache):
    """Reshard a subset, train a CLIP at a fixed scale (open_clip's trainer), evaluate it; writes OUT/run.json."""
    from sfcomp.eval.pipeline import train_eval as run

    r = run(out, eval_dir, subset=subset, pool=pool, data=data, reshard_dir=reshard_dir, method=method,
            scale=scale, seed=seed, samples_seen=samples_seen, shard_size=shard_size, nproc=nproc, threads=threads,
            workers=workers, precision=precision, tasks=list(tasks) or None, truth=truth, eval_cache=eval_cache,
            log=lambda m: click.echo(m, err=True))
    avg = "-" if r["average"] is None else f"{r['average']:.4f}"
    click.echo(f"{out}: {r['method']} seed {r['seed']}: average main metric {avg} ({out}/eval_results.jsonl)")


@click.command("evaluate")
@click.option("--checkpoint", required=True, type=PathParam(dir_okay=False))
@click.option("--model", "model_name", default=None,
              help="open_clip model name (default: from the info.json beside the training run).")
@click.option("--eval", "eval_dir", required=True, help="Eval folder: DataComp's download or wds task folders.")
@click.option("--out", required=True, type=PathParam(), help="Writes eval_results.jsonl here.")
@click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1, None))
@click.option("--device", default=None)
@click.option("--cache-dir", default=None, type=PathParam(),
              help="Keep preprocessed eval images here and reuse them.")
def evaluate(checkpoint, model_name, eval_dir, out, tasks, batch_size, device, cache_dir):
    """Zero-shot classification / retrieval of a checkpoint on clip_benchmark wds sets (DataComp's line format)."""
    from pathlib import Path

    from sfcomp.eval.evaluate import evaluate as run
    from sfcomp.errors import BadInputError
    from sfcomp.guard import check_outputs

    check_outputs([Path(out) / "eval_results.jsonl", Path(out) / "eval_summary.json"], [checkpoint, eval_dir],
                  what="--out")
    check_outputs([cache_dir], [checkpoint, eval_dir], what="--cache-dir", kind="dir")
    if model_name is None:
        up = Path(checkpoint).resolve().parents  # RUN/checkpoints/epoch_N.pt: info.json in RUN or beside it
        for cand in [up[i] / "info.json" for i in (2, 1) if i < len(up)]:
            if cand.exists():
                model_name = json.loads(cand.read_text())["model"]
                break
        else:
            raise BadInputError(checkpoint, "no info.json beside this checkpoint: pass --model")
    s = run(checkpoint, model_name, eval_dir, out, tasks=list(tasks) or None, batch_size=batch_size,
            device=device, cache_dir=cache_dir, log=click.echo)
    for note in s["skipped"]:
        click.echo(f"skipped: {note}", err=True)
    avg = "-" if s["average"] is None else f"{s['average']:.4f}"
    click.echo(f"average main metric over {s['n_tasks']} tasks: {avg} ({s['eval_code']})")


@click.command("compare")
@click.argument("results", nargs=-1, required=True)
@click.option("--md", "out_md", default=None, type=PathParam(), help="Write the markdown table here.")
@click.option("--png", "out_png", default=None, type=PathParam(), help="Write the plot here.")
@click.option("--order", default=None, help="Comma-separated method order.")
def compare(results, out_md, out_png, order):
    """Table (markdown) and plot (PNG) of methods side by side from run folders; seeds as mean +- std."""
    from sfcomp.eval.compare import compare as run

    click.echo(run(results, out_md, out_png, order=order.split(",") if order else None, strict_order=True), nl=False)

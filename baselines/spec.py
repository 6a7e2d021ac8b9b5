"""What a baseline is: a name, the metadata it reads, the flags it takes, and a selection function.

A baseline module defines one or more `Baseline`s (the model is datatrove's filter steps: a small declared unit
the runner drives); `registry.py` lists the modules. The runner (`apply.py`) does everything generic from the
declaration: refuses flags the baseline does not take, checks the required metadata columns and npz arrays
before any work, sets up language ID, writes the subset and the sidecar. The selection function only selects.

Cheap to import (no numpy, no pyarrow): the CLI reads names and flags from here for `sfcomp baseline --help`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any
from collections.abc import Callable, Mapping, Sequence

from sfcomp.errors import SfcompError


class BaselineArgsError(SfcompError):
    """A bad combination of baseline flags (reported before any work)."""


@dataclass(frozen=True)
class Option:
    """One flag a baseline may take. `check(value)` returns the problem with a given value, or None."""

    flag: str  # "--min-chars"
    help: str
    type: type = str
    choices: tuple[str, ...] = ()
    multiple: bool = False
    check: Callable[[Any], str | None] | None = None
    missing_hint: str = ""  # said when a baseline requires the flag and it is absent
    is_path: bool = False  # an input file or folder: no output may be written onto or into it

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def problem(self, value: Any) -> str | None:
        if self.choices and value not in self.choices:
            return f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}"
        return self.check(value) if self.check else None


def given(value: Any) -> bool:
    """A flag counts as given unless absent (None) or an empty repeatable flag."""
    return value is not None and not (isinstance(value, (tuple, list)) and len(value) == 0)


def in_unit_interval(flag: str) -> Callable[[Any], str | None]:
    return lambda v: None if 0.0 < v <= 1.0 else f"{flag} must be in (0, 1], got {v}"


def at_least(flag: str, low: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"{flag} must be >= {low}, got {v}"


def finite(flag: str) -> Callable[[Any], str | None]:
    return lambda v: None if math.isfinite(v) else f"{flag} must be a finite number, got {v}"


@dataclass
class BaselineArgs:
    """One run's flags. The named fields are DataComp's flags (shared by the built-in baselines; they are
    recorded in the sidecar in this order); `extra` holds the values of a baseline's own flags, by dest."""

    name: str
    metadata_dir: str
    save_path: str
    arch: str | None = None
    threshold: float | None = None
    fraction: float | None = None
    num_workers: int | None = None
    seed: int | None = None
    fasttext_model: str | None = None
    image_based_targets: Sequence[str] = field(default_factory=tuple)
    centroids: str | None = None
    num_clusters: int | None = None
    kmeans_sample: float | None = None
    synset_list: str | None = None
    wordnet_dir: str | None = None
    allow_empty: bool = False  # write an empty subset instead of refusing it (sfcomp.uids.refuse_empty)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def value(self, dest: str) -> Any:
        return getattr(self, dest) if dest in _ARG_FIELDS else self.extra.get(dest)


_ARG_FIELDS = frozenset(f.name for f in fields(BaselineArgs)) - {"extra"}

PerFileResult = tuple  # (kept uids as sfcomp.uids.UID_DTYPE, {stage: count}); "rows" counts are dropped


def sum_counts(parts: Sequence[Mapping[str, int]]) -> dict:
    """Per-file stage counts, summed by key (first-seen key order)."""
    out: dict = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0) + v
    return out


@dataclass
class Run:
    """What a selection function gets: the flags, the checked metadata files, and the sidecar to add to."""

    args: BaselineArgs
    files: list[str]
    file_rows: list[int]
    workers: int
    lang: Any  # langid.LangIdSpec when the baseline declares language_id, else None
    sidecar: dict
    log: Callable[[str], None]

    @property
    def n_pool(self) -> int:
        return int(sum(self.file_rows))

    def map(self, task: Callable[..., PerFileResult], *args: Any) -> list:
        """`[task(path, *args) for path in files]` over the worker processes (task must be module level)."""
        from .reader import map_files

        return map_files(task, self.files, self.workers, *args)


@dataclass(frozen=True)
class Baseline:
    """A baseline, declared. `select(run)` returns one (uids, counts) per file (more entries are fine: uids
    are concatenated, counts summed). `columns` are the parquet columns it reads besides `uid` (a function of
    the args when they depend on a flag); `npz_keys` the arrays it reads from the npz beside each parquet."""

    name: str
    summary: str
    select: Callable[[Run], list]
    columns: Sequence[str] | Callable[[BaselineArgs], Sequence[str]] = ()
    npz_keys: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()  # the flags it takes (any other is refused)
    required: tuple[Option, ...] = ()
    one_of: tuple[tuple[Option, ...], ...] = ()  # exactly one of each group
    language_id: str | None = None  # "fasttext" or "gcld3": the runner loads it and records it
    check: Callable[[BaselineArgs], str | None] | None = None  # a rule across flags -> the problem, or None

    def __post_init__(self) -> None:
        declared = set(self.options)
        loose = [o.flag for o in (*self.required, *(o for g in self.one_of for o in g)) if o not in declared]
        if loose:
            raise ValueError(f"baseline {self.name!r}: {', '.join(loose)} required but not among its options")
        if self.language_id not in (None, "fasttext", "gcld3"):
            raise ValueError(f"baseline {self.name!r}: unknown language_id {self.language_id!r}")

    def needed_columns(self, args: BaselineArgs) -> list[str]:
        cols = self.columns(args) if callable(self.columns) else self.columns
        return ["uid", *cols]

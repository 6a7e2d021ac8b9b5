"""Score file(s) -> a DataComp subset `.npy` (top-scored UNION seeded random) plus a JSON sidecar `OUT.npy.json`.

This is the one code path that makes every mix: `sfcomp export-subset` and each round of the loop call
`export_subset`. Small pools are selected in memory (`sfcomp.select.make_mix`), large ones or several score files
stream (`sfcomp.streaming_select.stream_select`); both give the same uids, so the output bytes do not depend on
the path taken. The subset is written first, the sidecar last (temp file + rename each, the pair inside
`writing_pair`, so two exports of one output at once leave one of them whole); the sidecar's `output_sha256` names
the exact subset it describes (a crash between the two leaves a sidecar that does not match, which
`sfcomp validate-subset` refuses).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import remove_stale_temps, write_json, writing_pair
from .errors import BadInputError
from .guard import check_outputs, with_sidecars
from .scorefile import read_scores, resolve_field, score_info, sidecar_path
from .select import check_selection, make_mix
from .uids import check_subset_output, write_subset

IN_MEMORY_MAX_ROWS = 1 << 25  # 33.5M rows (~2 GB working set): beyond this, or with several files, stream


def sha256_file(path: str | os.PathLike, block: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                return h.hexdigest()
            h.update(b)


def expand_score_paths(scores: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """One path, several, or a directory (all its `*.npy` score files, sorted by name) -> list of files."""
    items = [scores] if isinstance(scores, (str, os.PathLike)) else list(scores)
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(x) for x in p.glob("*.npy"))
            if not found:
                raise BadInputError(p, "directory holds no *.npy score files")
            out += found
        else:
            out.append(os.fspath(p))
    if not out:
        raise BadInputError(None, "no score files given")
    return out


def export_subset(scores: str | os.PathLike | Sequence[str | os.PathLike], out_npy: str | os.PathLike,
                  field: str | None = None, top_frac: float | None = None, top_k: int | None = None,
                  threshold: float | None = None, random_frac: float | None = 0.0, random_count: int | None = None,
                  seed: int = 0, streaming: bool | None = None, hash_inputs: bool = True,
                  meta: Mapping[str, Any] | None = None, allow_empty: bool = False) -> dict[str, Any]:
    """Select from one score file (or several parts of one pool, or a directory of them) and write the subset
    and its sidecar.

    Rules (exactly one of top_frac / top_k / threshold, or none for a random-only mix; random_frac /
    random_count for the uniform random part of the whole pool): see `sfcomp.select.make_mix`.
    `field`: the score to rank by (default: the score file's default field). `streaming`: None = automatic
    (stream for several files or more than IN_MEMORY_MAX_ROWS rows). `meta` is copied into the sidecar.
    Returns the sidecar dict. Bad input raises BadInputError naming the file; nothing is written then. An empty
    selection is bad input unless `allow_empty` (`sfcomp.select.check_selection`).
    """
    paths = expand_score_paths(scores)
    items = [scores] if isinstance(scores, (str, os.PathLike)) else list(scores)
    folders = [os.fspath(i) for i in items if os.path.isdir(i)]  # a folder of score files is an input too
    check_outputs(with_sidecars([out_npy]), with_sidecars(paths) + folders, what="output")
    check_subset_output(out_npy)
    infos = [score_info(p) for p in paths]
    field = resolve_field(paths[0], field)
    for p in paths[1:]:
        resolve_field(p, field)
    n = sum(i["n"] for i in infos)
    if streaming is None:
        streaming = len(paths) > 1 or n > IN_MEMORY_MAX_ROWS
    rules = dict(top_frac=top_frac, top_k=top_k, threshold=threshold, random_frac=random_frac,
                 random_count=random_count, seed=seed)
    with writing_pair(out_npy):
        if streaming:
            from .streaming_select import stream_select

            counts = stream_select(paths, out_npy, field=field, allow_empty=allow_empty, **rules)
        else:
            remove_stale_temps(out_npy)
            arr = read_scores(paths[0])  # memmap; validated chunk by chunk
            mix, counts = make_mix(arr[["f0", "f1"]], np.asarray(arr[field]), source=paths[0], **rules)
            check_selection(len(mix), n, paths[0], top_k, threshold, allow_empty, random_frac, random_count)
            write_subset(out_npy, mix)
        inputs = [{"path": p, "n": i["n"], "sha256": sha256_file(p) if hash_inputs else None,
                   "default": i["default"]} for p, i in zip(paths, infos)]
        return _write_sidecar(out_npy, inputs, field, rules, "streaming" if streaming else "in-memory", counts,
                              meta)


def export_from_arrays(uids: np.ndarray, scores: np.ndarray | None, out_npy: str | os.PathLike,
                       top_frac: float | None = None, top_k: int | None = None, threshold: float | None = None,
                       random_frac: float | None = 0.0, random_count: int | None = None, seed: int = 0,
                       field: str | None = None, inputs: Sequence[Mapping[str, Any]] = (),
                       meta: Mapping[str, Any] | None = None, allow_empty: bool = False) -> dict[str, Any]:
    """`export_subset` for uids/scores already in memory (e.g. round 0's uniform sample of the pool's uids,
    `scores=None`): same rules, same subset bytes, same sidecar; `inputs` describes where they came from."""
    rules = dict(top_frac=top_frac, top_k=top_k, threshold=threshold, random_frac=random_frac,
                 random_count=random_count, seed=seed)
    check_outputs(with_sidecars([out_npy]), [], what="output")  # the inputs are in memory
    check_subset_output(out_npy)
    mix, counts = make_mix(uids, scores, source=out_npy, **rules)
    check_selection(len(mix), len(uids), out_npy, top_k, threshold, allow_empty, random_frac, random_count)
    with writing_pair(out_npy):
        write_subset(out_npy, mix)
        return _write_sidecar(out_npy, [dict(i) for i in inputs], field, rules, "in-memory", counts, meta)


def _write_sidecar(out_npy, inputs: list, field: str | None, rules: dict, method: str, counts: dict,
                   meta: Mapping[str, Any] | None) -> dict[str, Any]:
    out_npy = Path(out_npy)
    side = {
        "format": "sfcomp-subset/1",
        "output": out_npy.name,
        "output_sha256": sha256_file(out_npy),
        "inputs": inputs,
        "field": field,
        **rules,
        "random_rule": "the uids with the smallest sfcomp.select.uid_hash(uid, seed), ties by uid",
        "method": method,
        "counts": counts,
        **dict(meta or {}),
    }
    write_json(sidecar_path(out_npy), side)
    return side

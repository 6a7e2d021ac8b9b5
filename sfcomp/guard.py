"""Input protection: the one check every command that writes makes before it writes anything.

An output may not be, contain or lie inside any input of the same command. Paths are compared as real paths
(links resolved; a path that does not exist yet is resolved through its nearest existing parent, which is what
`os.path.realpath` does). Sidecars count: callers pass `with_sidecars(...)` of the files that have one (an `X.npy`
score file or subset has `X.npy.json`). URLs (`://`) are not checked. The same call also refuses an output that
cannot be written: one under an existing file, an existing folder where a file is wanted (or the reverse), a
broken symlink (a loop, or a link to nothing: the atomic rename would replace the link), and a folder the user
may not write to.
"""
from __future__ import annotations

import errno
import fnmatch
import os
from collections.abc import Iterable, Sequence

from .errors import BadInputError

PathLike = str | os.PathLike


def sidecar(path: PathLike) -> str:
    return f"{os.fspath(path)}.json"


def with_sidecars(paths: Iterable[PathLike | None]) -> list[str]:
    """Each path followed by its `<path>.json` sidecar (None entries dropped)."""
    out: list[str] = []
    for p in paths:
        if p is not None:
            out += [os.fspath(p), sidecar(p)]
    return out


def pool_inputs(pool_root: PathLike) -> list[str]:
    """The parts of a pool folder a command reads: metadata/, shards/ and truth.parquet. The rest of the folder
    (e.g. the tool's own POOL/.sfcomp-cache) is not an input."""
    root = os.fspath(pool_root)
    return [os.path.join(root, "metadata"), os.path.join(root, "shards"), os.path.join(root, "truth.parquet")]


def real(path: PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def is_url(path: PathLike) -> bool:
    return "://" in os.fspath(path)


def _inside(child: str, parent: str) -> bool:
    """`child` is `parent` or lies below it (both real paths)."""
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _nearest_existing(path: str) -> str:
    p = os.path.dirname(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def overlap(output: PathLike, inp: PathLike) -> str | None:
    """How `output` overlaps `inp`: "is", "contains", "inside" or None (real paths, then file identities: a hard
    link or a bind mount is the same file or folder under another real path)."""
    o, i = real(output), real(inp)
    if o == i:
        return "is"
    if _inside(i, o):
        return "contains"
    if _inside(o, i):
        return "inside"
    o_id, i_id = _identity(o), _identity(i)
    if o_id is not None and o_id == i_id:
        return "is"
    if o_id is not None and o_id in _ancestor_identities(i):
        return "contains"
    if i_id is not None and i_id in _ancestor_identities(o):
        return "inside"
    return None


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _ancestor_identities(path: str) -> set[tuple[int, int]]:
    """(device, inode) of each existing folder above `path` (a real path)."""
    ids = set()
    p = os.path.dirname(path)
    while True:
        ident = _identity(p)
        if ident is not None:
            ids.add(ident)
        parent = os.path.dirname(p)
        if parent == p:
            return ids
        p = parent


def check_outputs(outputs: Sequence[PathLike | None], inputs: Sequence[PathLike | None], *, what: str,
                  kind: str = "file") -> None:
    """Raise BadInputError(output, ...) unless every output is clear of every input and can be written.

    `what` names the output in the message (an option, e.g. "-o" or "--save-path"); `kind` is "file" when the
    outputs are files, "dir" when they are folders the command fills. None entries and URLs are skipped.
    """
    if kind not in ("file", "dir"):
        raise ValueError(kind)
    ins = [os.fspath(i) for i in inputs if i is not None and not is_url(i)]
    for out in outputs:
        if out is None or is_url(out):
            continue
        out = os.fspath(out)
        for inp in ins:
            how = overlap(out, inp)
            if how == "is":
                raise BadInputError(out, f"{what} is an input of this command ({inp}); refusing to overwrite "
                                         "it: choose another output path")
            if how == "contains":
                raise BadInputError(out, f"{what} contains the input {inp}; refusing to write over it: "
                                         "choose an output outside it")
            if how == "inside":
                raise BadInputError(out, f"{what} lies inside the input {inp}; choose an output outside it")
        _check_writable(out, what, kind)


def _check_writable(out: str, what: str, kind: str) -> None:
    path = os.path.abspath(out)
    if os.path.islink(path) and not os.path.exists(path):  # a write would replace the link, not fill its target
        how = "a symlink loop" if _is_link_loop(path) else f"a symlink to {os.readlink(path)}, which does not exist"
        raise BadInputError(out, f"{what} is {how}; give a path that is not a broken link")
    if kind == "file" and os.path.isdir(path):
        raise BadInputError(out, f"{what} is an existing folder; a file path is wanted here")
    if kind == "dir" and os.path.exists(path) and not os.path.isdir(path):
        raise BadInputError(out, f"{what} is an existing file; a folder is wanted here")
    anc = _nearest_existing(path)
    if not os.path.isdir(anc):
        raise BadInputError(out, f"{what} lies under {anc}, which is a file, not a folder")
    target = path if kind == "dir" and os.path.isdir(path) else anc
    if not os.access(target, os.W_OK | os.X_OK):
        raise BadInputError(out, f"{what}: folder {target} is not writable")


def _is_link_loop(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def check_clear_of_pool(folder: PathLike, pool_root: PathLike, *, what: str, choose: str) -> None:
    """An output folder may not be or hold the pool folder itself, whose other entries are not inputs
    (`pool_inputs`) but would mix a command's files with the pool's."""
    how = overlap(folder, pool_root)
    if how in ("is", "contains"):
        raise BadInputError(folder, f"{what} {how} the pool folder {os.fspath(pool_root)}; choose {choose}")


def check_loop_dirs(pool_root: PathLike, workdir: PathLike, cache_dir: PathLike | None = None,
                    round0_from: PathLike | None = None, default_cache_root: PathLike | None = None) -> None:
    """`round`/`run`: the workdir may not be or contain the pool, nor lie inside its metadata/ or shards/; the same
    for an explicit --cache-dir (the default POOL/.sfcomp-cache is the tool's own folder, not an input). The
    workdir may not be or lie inside the cache folder (explicit or `default_cache_root`), whose files the cache
    builder owns; --round0-from's workdir is an input.
    `default_cache_root`: where caches go without --cache-dir."""
    inputs = [] if is_url(pool_root) else pool_inputs(pool_root)
    if inputs:
        check_clear_of_pool(workdir, pool_root, what="--workdir",
                            choose="a workdir outside the pool (or at least outside its metadata/ and shards/)")
    check_outputs([workdir], [*inputs, round0_from], what="--workdir", kind="dir")
    check_outputs([cache_dir], inputs, what="--cache-dir", kind="dir")
    if cache_dir is not None and not is_url(cache_dir):
        # a cache inside the workdir is fine (the workdir's files go by name); a workdir in the cache is not
        if (how := overlap(workdir, cache_dir)) in ("is", "inside"):
            raise BadInputError(workdir, f"--workdir {'is' if how == 'is' else 'lies inside'} the --cache-dir "
                                         f"{os.fspath(cache_dir)}; choose a workdir outside it")
    elif default_cache_root is not None and overlap(workdir, default_cache_root) in ("is", "inside"):
        raise BadInputError(workdir, f"--workdir lies inside the cache folder {os.fspath(default_cache_root)}; "
                                     "choose a workdir outside it")


def refuse_foreign_folder(folder: PathLike, *, markers: Sequence[str], leftovers: Sequence[str], what: str,
                          made_by: str) -> None:
    """Refuse a folder a command fills with files of its own and cleans up in (overwriting and deleting them by
    name) when it is someone else's: it exists, holds none of the command's `markers` (paths relative to it), and
    holds something other than the `leftovers` the command itself can leave there without a marker (glob
    patterns of paths relative to it; a folder counts as a leftover when its name matches and all it holds does).
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder) or any(os.path.lexists(os.path.join(folder, m)) for m in markers):
        return
    others = _foreign_entries(folder, "", leftovers)
    if others:
        marked = f" and none of its markers ({', '.join(markers)})" if markers else ""
        raise BadInputError(folder, f"{what} holds {len(others)} entries not made by {made_by} (e.g. {others[0]})"
                                    f"{marked}; refusing to write into it, since {made_by} overwrites and deletes "
                                    "files by name there: choose a new or empty folder")


def _foreign_entries(folder: str, rel: str, leftovers: Sequence[str]) -> list[str]:
    out = []
    with os.scandir(os.path.join(folder, rel) if rel else folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = f"{rel}/{entry.name}" if rel else entry.name
            own = any(fnmatch.fnmatchcase(path, pat) for pat in leftovers)
            if own and entry.is_dir(follow_symlinks=False):
                own = not _foreign_entries(folder, path, leftovers)
            if not own:
                out.append(path)
    return out


def check_replaceable(path: PathLike, *, what: str, kind: str, looks_like, has_sidecar: bool = True) -> None:
    """Refuse an output path that names an existing file of another kind: a command may replace an earlier output
    of its own kind (`looks_like(path)` true), never some other file a user pointed it at by mistake (a pool's
    shard, a parquet, notes). Its `<path>.json` sidecar, when there, must be a JSON object."""
    import json

    path = os.fspath(path)
    if os.path.isfile(path) and not looks_like(path):
        raise BadInputError(path, f"{what} names an existing file that is not a {kind}; refusing to replace it: "
                                  "remove it first or choose another path")
    side = sidecar(path)
    if has_sidecar and os.path.isfile(side):
        try:
            with open(side, encoding="utf-8") as f:
                ok = isinstance(json.load(f), dict)
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise BadInputError(side, f"{what}'s sidecar path names an existing file that is not a JSON sidecar; "
                                      "refusing to replace it: remove it first or choose another path")

"""A loop workdir's state, without torch: its configuration and fingerprint, the round folders and their
completion markers, temp files a killed run left, adopting another workdir's round 0, and the settings checked
before any of it is touched (pool names, --train-shards, --round0-frac, --round, --scale, --budget, --stop) and
the final training a run's FLOPs are weighed against. Inspecting a workdir costs
no model, no cache and no process group.

Layout (see `sfcomp.loop` for what each file holds):
    W/config.json                  pool + preset + loop settings and their fingerprint
    W/round_{k:02d}/mix.npy, budget_cap.json (--budget lowered the cap), model_f{f}.pt, stop_f{f}.json
                   (--stop heldout), snapshots_f{f}.rank{r}.npy,
                   emb_sample.npz, scores.npy(.json),
                   next_mix.npy(.json), report.json, report.png, done.json (the completion marker, written last)
    W/final_scores.npy (+.json)    the last finished round's score file
    W/.sfcomp.lock                 held while a run writes the workdir (`WorkdirLock`)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from .atomic import atomic_open, remove_stale_temps, write_json
from .errors import BadInputError, json_kind
from .guard import refuse_foreign_folder

ROUND_DIR = "round_{:02d}"
# loop settings that do not change round 0's models or scores: a sweep over them can share one round 0
# (warm_shrink and warm_lr act from round 1 on; warm_start is not free: it changes how round 0 scores rows outside
# its mix)
ROUND0_FREE = ("score", "top_frac", "random_frac", "kmeans_k", "warm_shrink", "warm_lr")


# ------------------------------------------------------------------------------------------ JSON and pools
def read_json_object(path: str | os.PathLike, what: str, fix: str) -> dict:
    """A JSON file that must hold an object, with one-line errors naming it (`fix`: what the user can do)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, f"{what} does not exist") from None
    except OSError as e:
        raise BadInputError(path, f"unreadable {what} ({e.strerror or e})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise BadInputError(path, f"{what} is not JSON ({e}); {fix}") from None
    if not isinstance(obj, dict):
        raise BadInputError(path, f"{what} is not a JSON object (got {json_kind(obj)}); {fix}")
    return obj


def read_pools_config(path: str | os.PathLike, what: str = "pools config") -> dict[str, str]:
    """A user's pool-name table (SFCOMP_POOLS_CONFIG or ~/.config/sfcomp/pools.json): {name: path}."""
    table = read_json_object(path, what, 'it must map names to paths, e.g. {"small": "/data/small"}')
    for name, value in table.items():
        if not name.startswith("_") and not isinstance(value, str):
            raise BadInputError(path, f"pools config maps {name!r} to {value!r}, expected a path string")
    return table


def resolve_pool(name_or_path: str) -> str:
    """A pool path from a path or a name in sfcomp/configs/pools.json (overridable: see that file's _doc)."""
    if Path(name_or_path).expanduser().exists() or "/" in name_or_path or "://" in name_or_path:
        return str(Path(name_or_path).expanduser()) if "://" not in name_or_path else name_or_path
    table = json.loads((Path(__file__).parent / "configs" / "pools.json").read_text())
    named = os.environ.get("SFCOMP_POOLS_CONFIG")
    user_cfg = named or os.path.expanduser("~/.config/sfcomp/pools.json")
    if named or os.path.exists(user_cfg):
        table.update(read_pools_config(user_cfg, "pools config (SFCOMP_POOLS_CONFIG)" if named else "pools config"))
    env = os.environ.get(f"SFCOMP_POOL_{name_or_path.upper()}")
    if env:
        return os.path.expanduser(env)
    if name_or_path not in table or name_or_path.startswith("_"):
        names = ", ".join(k for k in table if not k.startswith("_"))
        raise BadInputError(None, f"--pool {name_or_path!r} is neither a folder nor a known pool name ({names})")
    path = os.path.expanduser(os.path.expandvars(table[name_or_path]))
    if "$" in path:
        raise BadInputError(None, f"pool {name_or_path!r} -> {table[name_or_path]!r}: set the environment "
                                  f"variable it uses, or SFCOMP_POOL_{name_or_path.upper()}=PATH")
    if not os.path.isabs(path) and not os.path.exists(path):
        project_root = Path(__file__).resolve().parent.parent
        path = str(project_root / path)
    return path


# ------------------------------------------------------------------------------------------ settings checks
def check_train_shards(names: list[str] | None, shard_files: list[str]) -> None:
    """Refuse --train-shards naming a shard the pool does not have (names, stems or paths, as the cache takes)."""
    if not names:
        return
    def stem(s) -> str:
        name = Path(str(s)).name
        return name[: -len(".tar")] if name.endswith(".tar") else name

    have = {stem(f) for f in shard_files}
    missing = sorted({stem(n) for n in names} - have)
    if missing:
        shown = ", ".join(sorted(have)[:5]) + (", ..." if len(have) > 5 else "")
        raise BadInputError(None, f"--train-shards names shards not in the pool: {', '.join(missing)} "
                                  f"(the pool's {len(have)} shards: {shown})")


def check_round0_frac(fraction: float, n_rows: int | None) -> None:
    """Round 0 trains on int(N * --round0-frac) samples: refuse a fraction that leaves none, before any file."""
    if n_rows is not None and int(n_rows * fraction) == 0:
        raise BadInputError(None, f"--round0-frac {fraction} of the pool's {n_rows} samples is int({n_rows} * "
                                  f"{fraction}) = 0 samples: round 0 would train on nothing")


STOP_RULES = ("fixed", "heldout")
# --stop heldout's preset keys and their defaults (a preset without them works); stop_eval_every None means
# max(5, cap // 20) evaluations' spacing for a model trained at most `cap` steps
STOP_DEFAULTS = {"stop_eval_every": None, "stop_patience": 3, "stop_min_delta": 1e-3, "stop_eval_samples": 1024}
# what the held-out evaluation minimises over the fixed batches: `loss`, their mean ClipLoss; `recall`, 1 - their
# mean in-batch recall@1; `rank`, 1 - the mean share of in-batch negatives each pair outscores (both directions).
# A noisy pair adds a loss that grows as the model grows confident, but a constant to recall (0) and to rank
# (about 0.5), so under heavy noise those follow the clean pairs; rank is the finer-grained of the two
STOP_METRICS = ("loss", "recall", "rank")
# rank, from the step sweep (docs/bench/sweep_steps.md): on two 20k pools with 60-70% noise the held-out loss rose
# or stalled while the ranking still improved, and stopped 0.10-0.14 clean share below the best fixed step count
STOP_METRIC_DEFAULT = "rank"
# stop_ema (optional, a decay per step in (0, 1)): evaluate, keep and stop on an exponential moving average of the
# weights instead of the weights themselves. Under a cosine schedule to a far cap the raw weights are evaluated
# at a learning rate that has not decayed, and their held-out curve bumps where an annealed model's would not;
# an average of the recent iterates stands in for the annealing


def resolve_stop(stop: str | None, steps: int | None, folds: int, snapshots: list[float]) -> str:
    """--stop's default (None): `heldout`, the loop setting its own steps, unless the run fixes or rules that out:
    --steps N (an explicit step count), --folds 1 (no held-out fold) or --snapshots (fractions of a fixed training
    length); then `fixed`. An explicit --stop is kept as given."""
    if stop is not None:
        return stop
    return "heldout" if steps is None and folds >= 2 and not snapshots else "fixed"


def check_stop(stop: str, folds: int, snapshots: list[float]) -> None:
    """--stop: `fixed` (the preset's / --steps' steps) or `heldout` (early stopping on the held-out fold),
    which needs a held-out fold and fixes no training length for snapshots to be fractions of."""
    if stop not in STOP_RULES:
        raise BadInputError(None, f"--stop must be one of {', '.join(STOP_RULES)}, got {stop!r}")
    if stop == "heldout" and folds < 2:
        raise BadInputError(None, f"--stop heldout needs --folds >= 2 (a model's held-out fold is what it is "
                                  f"evaluated on), got --folds {folds}")
    if stop == "heldout" and snapshots:
        raise BadInputError(None, "--stop heldout cannot take --snapshots (fractions of a training length that "
                                  "early stopping does not fix)")


def stop_rule(preset: dict) -> dict:
    """--stop heldout's settings from the preset (STOP_DEFAULTS for keys it lacks), checked; pure."""
    rule = {k: v if preset.get(k) is None else preset[k] for k, v in STOP_DEFAULTS.items()}
    name = preset.get("name", "?")
    for key, low in (("stop_eval_every", 1), ("stop_patience", 1), ("stop_eval_samples", 2)):
        v = rule[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
            raise BadInputError(None, f"preset {name!r}: {key} must be an integer >= {low}, got {v!r}")
    v = rule["stop_min_delta"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
        raise BadInputError(None, f"preset {name!r}: stop_min_delta must be a number >= 0, got {v!r}")
    metric = preset.get("stop_metric", STOP_METRIC_DEFAULT)
    if metric not in STOP_METRICS:
        raise BadInputError(None, f"preset {name!r}: stop_metric must be one of {', '.join(STOP_METRICS)}, "
                                  f"got {metric!r}")
    rule["stop_metric"] = metric
    ema = preset.get("stop_ema")
    if ema is not None:  # only when set: presets without it keep their fingerprints
        if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 < ema < 1:
            raise BadInputError(None, f"preset {name!r}: stop_ema must be a number in (0, 1), got {ema!r}")
        rule["stop_ema"] = float(ema)
    return rule


def eval_every(rule: dict, cap: int) -> int:
    """Steps between two held-out evaluations of a model trained at most `cap` steps."""
    return int(rule["stop_eval_every"]) if rule["stop_eval_every"] is not None else max(5, cap // 20)


# DataComp's pool sizes (= samples seen of the final training); a pool below small is sfcomp's `tiny` scale
SCALE_POOL_SIZES = {"small": 12_800_000, "medium": 128_000_000, "large": 1_280_000_000, "xlarge": 12_800_000_000}
SCALES = ("tiny", *SCALE_POOL_SIZES)


def check_accounting(scale: str | None, final_samples_seen: int | None, budget: float | None = None) -> None:
    """--scale, --final-samples-seen and --budget, before anything is written."""
    if scale is not None and scale not in SCALES:
        raise BadInputError(None, f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if final_samples_seen is not None and final_samples_seen < 1:
        raise BadInputError(None, f"--final-samples-seen must be >= 1, got {final_samples_seen}")
    if final_samples_seen is not None and scale is not None and scale != "tiny":
        raise BadInputError(None, f"--final-samples-seen applies to the tiny scale only (DataComp's {scale} scale "
                                  f"fixes samples seen at {SCALE_POOL_SIZES[scale]})")
    if budget is not None and not (budget > 0 and math.isfinite(budget)):  # `not >` also refuses NaN
        raise BadInputError(None, f"--budget must be > 0 and finite (a multiple of the final training's FLOPs), "
                                  f"got {budget}")


def infer_scale(n_rows: int | None) -> str:
    """The largest DataComp scale whose pool size the metadata reaches; `tiny` below small."""
    reached = [name for name, size in SCALE_POOL_SIZES.items() if n_rows is not None and n_rows >= size]
    return reached[-1] if reached else "tiny"


def final_reference(scale: str | None, n_rows: int | None, final_samples_seen: int | None) -> dict:
    """Which final training the loop's cost is weighed against: the scale (given or inferred from the pool's
    metadata rows), its model, batch and samples seen (eval/configs/scales.json; --final-samples-seen for tiny).
    Pure: no torch. Refuses --final-samples-seen on a pool inferred to be a DataComp scale."""
    from .eval.scales import get_scale

    name = scale if scale is not None else infer_scale(n_rows)
    how = "--scale" if scale is not None else f"inferred from the pool's {n_rows} metadata rows"
    if final_samples_seen is not None and name != "tiny":
        raise BadInputError(None, f"--final-samples-seen applies to the tiny scale only; this pool is DataComp's "
                                  f"{name} scale ({how}), which fixes samples seen at {SCALE_POOL_SIZES[name]}")
    cfg = get_scale(name)
    seen = final_samples_seen if final_samples_seen is not None else int(cfg["train_num_samples"])
    return {"scale": name, "scale_from": how, "model": cfg["model"], "batch_size": int(cfg["batch_size"]),
            "samples_seen": int(seen),
            "samples_seen_from": "--final-samples-seen" if final_samples_seen is not None
            else "eval/configs/scales.json"}


def check_round_index(workdir: str | os.PathLike, k: int | None) -> None:
    """`round --round K`: K >= 0, and round K-1 finished in `workdir` (its mix comes from there)."""
    if k is None:
        return
    if k < 0:
        raise BadInputError(None, f"--round must be >= 0, got {k}")
    def done(i: int) -> bool:
        return (Path(workdir) / ROUND_DIR.format(i) / "done.json").exists()

    if k > 0 and not done(k) and not done(k - 1):
        raise BadInputError(None, f"--round {k}: round {k - 1} is not finished in {workdir}; run it first "
                                  "(or leave out --round to run the next unfinished round)")


def config_fingerprint(pool_fingerprint: str, preset: dict, loop: dict[str, Any]) -> str:
    """The configuration's 16-hex-digit fingerprint: pool (by content), preset (by content), loop settings."""
    return hashlib.sha256(json.dumps({"pool": pool_fingerprint, "preset": preset, "loop": loop},
                                     sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ the lock
LOCK_FILE = ".sfcomp.lock"


class WorkdirLock:
    """W/.sfcomp.lock, held (flock, exclusive, not waited for) while a run writes the workdir: a second run on
    it is refused instead of racing the first, whose in-flight temp files its stale-temp cleanup would delete.
    The kernel drops the lock when its holder ends, killed or not, so a killed run's workdir resumes at once;
    a run that ends normally removes the file. Re-entrant within one holder (`run` takes it around `run_round`)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self.remove_root_on_release = False  # set by a run refused before its first round, which made the root
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder unknown"
                os.close(fd)
                raise BadInputError(self.root, f"workdir in use by another sfcomp run ({holder}, holding "
                                               f"{LOCK_FILE}); wait for it to end, or use another --workdir") from None
            except OSError as e:  # a filesystem without flock (some network mounts): run unguarded, say so
                os.close(fd)
                print(f"warning: {self.root}: cannot lock {LOCK_FILE} ({e.strerror}); make sure no other sfcomp "
                      "run uses this workdir", file=sys.stderr)
                self._depth = 1
                return
            try:  # the previous holder may have removed the file between our open and our lock
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd, self._depth = fd, 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth:
            return
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: a run that opens the old file retries
            os.close(self._fd)
            self._fd = None
        if self.remove_root_on_release:
            try:
                self.root.rmdir()  # only if empty
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self._depth > 0

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------------------ the workdir
class Workdir:
    """One loop workdir as seen by one rank (`rank`: whose temp files are its own; rank 0 writes the shared
    files). `fingerprint` is set by `check_config` and then guards every round marker read."""

    def __init__(self, root: str | os.PathLike, rank: int = 0):
        self.root = Path(root)
        self.rank = rank
        self.fingerprint: str | None = None
        self.lock = WorkdirLock(self.root)  # taken by rank 0 only (`sfcomp.loop.Loop._locked`)

    # ---- paths
    def round_dir(self, k: int) -> Path:
        return self.root / ROUND_DIR.format(k)

    def checkpoint(self, k: int, f: int) -> Path:
        return self.round_dir(k) / f"model_f{f}.pt"

    def budget_cap_file(self, k: int) -> Path:
        """--budget: the steps per model round k was started with when the budget lowered its cap."""
        return self.round_dir(k) / "budget_cap.json"

    def read_budget_cap(self, k: int) -> int | None:
        path = self.budget_cap_file(k)
        if not path.exists():
            return None
        steps = read_json_object(path, "round's budget cap", "delete the round folder to rerun the round").get("steps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise BadInputError(path, f"'steps' must be an integer >= 1, got {steps!r}; delete the round folder "
                                      "to rerun the round")
        return steps

    def stop_file(self, k: int, f: int) -> Path:
        """--stop heldout: how fold f's model stopped (steps, cap, reason, metric, held-out curve)."""
        return self.round_dir(k) / f"stop_f{f}.json"

    def snapshot_file(self, k: int, f: int) -> Path:
        return self.round_dir(k) / f"snapshots_f{f}.rank{self.rank}.npy"

    def scores_path(self, k: int) -> Path:
        return self.round_dir(k) / "scores.npy"

    # ---- configuration
    def check_config(self, pool_root: str, pool_fingerprint: str, preset: dict, loop: dict[str, Any]) -> dict | None:
        """Refuse a workdir made under another configuration; sets `fingerprint`; returns the config.json to write
        when the workdir has none (each round left must then still be this configuration's)."""
        cfg = {"pool": {"path": os.path.abspath(pool_root) if "://" not in pool_root else pool_root,
                        "fingerprint": pool_fingerprint},
               "preset": preset, "loop": loop}  # preset: by content
        fp = config_fingerprint(pool_fingerprint, preset, loop)
        cfg["fingerprint"] = fp
        path = self.root / "config.json"
        if path.exists():
            old = read_json_object(path, "workdir configuration", "delete it (the rounds keep their own "
                                         "fingerprints) or use a new --workdir")
            if old.get("fingerprint") != fp:
                diffs = [k for k in ("preset", "loop") if old.get(k) != cfg[k]]
                if old.get("pool", {}).get("fingerprint") != cfg["pool"]["fingerprint"]:
                    diffs.insert(0, f"pool ({old.get('pool', {}).get('path')})")
                raise BadInputError(path, f"workdir belongs to a different configuration (differs: "
                                          f"{', '.join(diffs) or 'fingerprint'}); use a new --workdir")
        self.fingerprint = fp
        if path.exists():
            return None
        # a run replaces final_scores.npy and removes .tmp-* files in its workdir: a folder with neither
        # config.json nor round_00/ that holds more than a lock or config.json's temp file is someone else's
        refuse_foreign_folder(self.root, markers=("config.json", "round_00"),
                              leftovers=(LOCK_FILE, ".tmp-config.json.*"), what="--workdir", made_by="sfcomp run")
        for k in range(self.finished_rounds()):  # config.json gone: the rounds left must still be this config's
            self.finished(k)
        return cfg

    def write_config(self, cfg: dict) -> None:
        remove_stale_temps(self.root / "config.json")
        write_json(self.root / "config.json", cfg)

    # ---- round markers
    def finished_rounds(self) -> int:
        k = 0
        while (self.round_dir(k) / "done.json").exists():
            k += 1
        return k

    def finished(self, k: int) -> dict | None:
        """Round k's done.json, or None while unfinished; refused when another configuration made it."""
        path = self.round_dir(k) / "done.json"
        if not path.exists():
            return None
        done = read_json_object(path, "round completion marker", "delete it to rerun the round")
        if done.get("fingerprint") != self.fingerprint:
            raise BadInputError(path, f"round made under a different configuration (fingerprint "
                                      f"{done.get('fingerprint')}, this run {self.fingerprint}); use a new --workdir")
        return done

    def require_finished(self, k: int) -> None:
        """Round k's next mix is read: the round must be finished."""
        if not (self.round_dir(k) / "done.json").exists():
            raise BadInputError(self.round_dir(k), f"round {k} is not finished; run it first")

    def scored(self, k: int) -> bool:
        """Round k's score file is complete (a run killed after it has only selection and the report left)."""
        rdir = self.round_dir(k)
        return (rdir / "scores.npy").exists() and (rdir / "emb_sample.npz").exists()

    def write_done(self, k: int, result: dict) -> None:
        write_json(self.round_dir(k) / "done.json", result)  # the completion marker: last

    def read_done(self, k: int) -> dict:
        return json.loads((self.round_dir(k) / "done.json").read_text())

    # ---- temp files and the final score file
    def remove_stale_temps(self, rdir: Path) -> None:
        """Delete the temp files of this rank's writes that a killed earlier run left in a round folder (and, on
        rank 0, beside the workdir's final_scores.npy). Files named *.rank<r>.* are rank r's; the rest rank 0's."""
        for p in rdir.glob(".tmp-*"):
            m = re.search(r"\.rank(\d+)\.", p.name)
            if (int(m.group(1)) if m else 0) == self.rank:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if self.rank == 0:
            for name in ("final_scores.npy", "final_scores.npy.json"):
                remove_stale_temps(self.root / name)

    def publish_final(self, scores_path: Path, extra: dict | None = None) -> None:
        """Copy a round's score file to W/final_scores.npy (sidecar first, .npy last, as scorefile writes them);
        `extra` keys (the run's compute totals) are added to the copied sidecar."""
        from .scorefile import sidecar_path

        dst = self.root / "final_scores.npy"
        dst.unlink(missing_ok=True)
        if extra:
            side = json.loads(sidecar_path(scores_path).read_text())
            write_json(sidecar_path(dst), {**side, **extra})
        else:
            with open(sidecar_path(scores_path), "rb") as a, atomic_open(sidecar_path(dst), "wb") as b:
                shutil.copyfileobj(a, b)
        with open(scores_path, "rb") as a, atomic_open(dst, "wb") as b:
            shutil.copyfileobj(a, b)

    # ---- round 0 from another workdir
    def adopt_round0(self, source: str | os.PathLike, pool_fingerprint: str, preset: dict, loop: dict[str, Any],
                     default_score: str) -> bool:
        """Take round 0's models and scores from another workdir on the same pool whose settings differ only in
        what round 0 does not depend on (ROUND0_FREE); selection and the report are then redone under this
        configuration. False when this workdir already has round 0. Rank 0 copies; the caller then waits in a
        barrier."""
        src = Path(source) / "round_00"
        dst = self.round_dir(0)
        if (dst / "done.json").exists():
            return False
        cfg_path = Path(source) / "config.json"
        if not (src / "done.json").exists() or not cfg_path.exists():
            raise BadInputError(src, "round 0 is not finished there (no done.json / config.json); run it first")
        other = read_json_object(cfg_path, "workdir configuration", "rerun round 0 there, or leave out --round0-from")
        diffs = [k for k in sorted(set(loop) | set(other.get("loop", {})))
                 if k not in ROUND0_FREE and loop.get(k) != other.get("loop", {}).get(k)]
        if other.get("pool", {}).get("fingerprint") != pool_fingerprint:
            diffs.insert(0, "pool")
        if other.get("preset") != preset:
            diffs.insert(0, "preset")
        if diffs:
            raise BadInputError(cfg_path, f"round 0 there was made under other settings ({', '.join(diffs)}); "
                                          "only " + ", ".join(ROUND0_FREE) + " may differ")
        if self.rank == 0:
            from .scorefile import read_scores, read_sidecar, write_scores

            dst.mkdir(parents=True, exist_ok=True)
            self.remove_stale_temps(dst)
            names = ["mix.npy", "emb_sample.npz"] + [p.name for p in sorted(src.glob("model_f*.pt"))] + \
                [p.name for p in sorted(src.glob("snapshots_f*.npy"))] + \
                [p.name for p in sorted(src.glob("stop_f*.json"))]  # --stop heldout's records
            for name in names:
                with open(src / name, "rb") as a, atomic_open(dst / name, "wb") as b:
                    shutil.copyfileobj(a, b)
            # rewritten, not copied: the score file names the configuration (fingerprint) and default field
            arr = read_scores(src / "scores.npy", mmap=False)
            side = read_sidecar(src / "scores.npy")
            meta = {k: v for k, v in side.items() if k not in ("format", "n", "fields", "default")}
            meta.update(fingerprint=self.fingerprint, adopted_from=os.path.abspath(src))
            write_scores(dst / "scores.npy", arr[["f0", "f1"]], {f: arr[f] for f in arr.dtype.names[2:]},
                         meta=meta, default=default_score)
        return True

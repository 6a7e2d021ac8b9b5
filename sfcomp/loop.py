"""Self-filtering rounds: train on the mix, score every pool sample, select the next mix; resume; seeds.

Workdir layout:
    W/config.json            pool + preset + loop settings and their fingerprint (a workdir never mixes two);
                             written once the pool has opened, so a run refused for bad input leaves none
    W/round_{k:02d}/mix.npy  the uids round k trains on (round 0: the whole pool or a uniform sample)
                   model_f{f}.pt       fold f's trained model (state_dict), so a killed round resumes after it
                                       (an unreadable one is retrained: same seeds, same model)
                   scores.npy (+.json) every readable pool sample's scores (sfcomp.scorefile format; streamed
                                       presets leave out samples no model could read)
                   next_mix.npy (+.json) top-scored + random from the whole pool: round k+1's mix
                   report.json, report.png
                   done.json           completion marker, written last; holds the configuration fingerprint,
                                       checked before the round is reused (even without config.json)
    W/final_scores.npy (+.json)        the last finished round's score file

Scores of a round (fields of scores.npy):
    crossfit  (folds >= 2) the mix is split into `folds` folds by a seeded uid hash; model f trains on the mix
              minus fold f; a mix sample is scored by the one model that did not see it, a sample outside the
              mix by the mean of all models.
    cosine    in-sample cosine: a mix sample scored by the models that trained on it (folds == 1: the one
              model trained on the whole mix), others by the mean of all models.
    ckpt_avg  (snapshots given) the in-sample cosine averaged over snapshots taken during training.

Distributed (torchrun): training is DDP; scoring is split across ranks by whole pool shards; each rank writes
scores.rank{r}.npy and rank 0 merges them by uid. Single-process runs take the same path with one rank.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import uids as U
from .atomic import atomic_open, remove_stale_temps, write_json
from .defaults import LOOP_DEFAULTS as DEFAULTS
from .errors import BadInputError
from .pool import Pool, pool_fingerprint  # noqa: F401 - pool_fingerprint: re-exported

FIELDS_BY_METHOD = {"crossfit", "cosine", "ckpt_avg"}


@dataclass
class LoopConfig:
    preset: str | dict = "tiny"
    seed: int = 0
    score: str = DEFAULTS["score"]              # the score field that selects the next mix
    folds: int = DEFAULTS["folds"]              # models per round; >= 2 gives the cross-fitted score
    top_frac: float = DEFAULTS["top_frac"]      # next mix = top fraction of the pool ...
    random_frac: float = DEFAULTS["random_frac"]  # ... union a uniform sample of the whole pool
    round0_frac: float = DEFAULTS["round0_frac"]  # round 0 trains on the whole pool (1.0) or a uniform sample
    train_shards: list[str] | None = None  # train only on rows from these pool shards (scoring covers all)
    steps: int | None = None         # override the preset's steps per model
    snapshots: list[float] = field(default_factory=list)  # fractions of training for ckpt_avg snapshots
    kmeans_k: int = 10               # clusters for the composition-drift report

    def fields(self) -> list[str]:
        out = (["crossfit"] if self.folds >= 2 else []) + ["cosine"] + (["ckpt_avg"] if self.snapshots else [])
        return out

    def check(self) -> None:
        if self.folds < 1:
            raise BadInputError(None, f"folds must be >= 1, got {self.folds}")
        if self.score not in self.fields():
            raise BadInputError(None, f"score {self.score!r} is not computed with folds={self.folds} and "
                                      f"snapshots={self.snapshots} (available: {', '.join(self.fields())})")
        for name in ("top_frac", "round0_frac"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise BadInputError(None, f"{name} must be in (0, 1], got {v}")
        if not 0 <= self.random_frac <= 1:
            raise BadInputError(None, f"random_frac must be in [0, 1], got {self.random_frac}")
        if any(not 0 < s <= 1 for s in self.snapshots):
            raise BadInputError(None, f"snapshots are fractions of training in (0, 1], got {self.snapshots}")


# ------------------------------------------------------------------------------------------ pools and names
def resolve_pool(name_or_path: str) -> str:
    """A pool path from a path or a name in sfcomp/configs/pools.json (overridable: see that file's _doc)."""
    if Path(name_or_path).expanduser().exists() or "/" in name_or_path or "://" in name_or_path:
        return str(Path(name_or_path).expanduser()) if "://" not in name_or_path else name_or_path
    table = json.loads((Path(__file__).parent / "configs" / "pools.json").read_text())
    user_cfg = os.environ.get("SFCOMP_POOLS_CONFIG") or os.path.expanduser("~/.config/sfcomp/pools.json")
    if os.path.exists(user_cfg):
        table.update(json.loads(Path(user_cfg).read_text()))
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


# ------------------------------------------------------------------------------------------ distributed helpers
def maybe_init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (WORLD_SIZE > 1): nccl on GPU, gloo on CPU."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # rank 0 may build the pool cache (hours for a large pool) while the others wait in a barrier
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    from .train import dist_info

    return dist_info()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _all_gather(obj: Any) -> list:
    """Every rank's `obj`, in rank order (a collective: all ranks must call it)."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def derive_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


# ------------------------------------------------------------------------------------------ the loop
class Loop:
    """One workdir, one pool, one configuration. `run_round()` runs the next unfinished round."""

    def __init__(self, pool: str, workdir: str | os.PathLike, config: LoopConfig, cache_dir: str | None = None,
                 device: str | None = None, progress: bool = True, cache_workers: int = 1):
        from .model import load_preset

        config.check()
        self.pool = Pool(resolve_pool(pool))
        self.workdir = Path(workdir)
        self.config = config
        self.preset = load_preset(config.preset)
        self.progress = progress
        self.device = device or default_device()
        self.rank, self.world = maybe_init_distributed()
        config_json = self._check_workdir()
        self.data = self._open_data(cache_dir, cache_workers)
        self.truth = self._load_truth()
        if config_json is not None and self.rank == 0:  # only once the pool has opened: a refused run leaves none
            remove_stale_temps(self.workdir / "config.json")
            write_json(self.workdir / "config.json", config_json)

    # ---- setup
    def _check_workdir(self) -> dict | None:
        """Refuse a workdir made under another configuration; returns the config.json to write when it has none."""
        self.pool.metadata_files()  # clear errors for a missing/empty pool before anything else
        self.pool_fingerprint = pool_fingerprint(self.pool)
        cfg = {"pool": {"path": os.path.abspath(self.pool.root) if "://" not in self.pool.root else self.pool.root,
                        "fingerprint": self.pool_fingerprint},
               "preset": self.preset,
               "loop": {k: v for k, v in asdict(self.config).items() if k != "preset"}}  # preset: by content
        fp = hashlib.sha256(json.dumps({"pool": cfg["pool"]["fingerprint"], "preset": self.preset,
                                        "loop": cfg["loop"]}, sort_keys=True).encode()).hexdigest()[:16]
        cfg["fingerprint"] = fp
        path = self.workdir / "config.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("fingerprint") != fp:
                diffs = [k for k in ("preset", "loop") if old.get(k) != cfg[k]]
                if old.get("pool", {}).get("fingerprint") != cfg["pool"]["fingerprint"]:
                    diffs.insert(0, f"pool ({old.get('pool', {}).get('path')})")
                raise BadInputError(path, f"workdir belongs to a different configuration (differs: "
                                          f"{', '.join(diffs) or 'fingerprint'}); use a new --workdir")
        self.fingerprint = fp
        if path.exists():
            return None
        for k in range(self.finished_rounds()):  # config.json gone: the rounds left must still be this config's
            self._finished(k)
        return cfg

    def _open_data(self, cache_dir, cache_workers):
        from .cache import build_cache, cache_dir_for
        from .data import CachedPoolData

        if self.preset["cache"]:
            root = Path(cache_dir) if cache_dir else cache_dir_for(self.pool.root, self.preset,
                                                                   fingerprint=self.pool_fingerprint)
            if self.rank == 0:  # one builder; shards decode in parallel worker processes
                build_cache(self.pool, self.preset, root, workers=cache_workers, progress=self.progress)
            _barrier()
            from .cache import PoolCache

            return CachedPoolData(PoolCache.open(root))
        from .stream import StreamedPoolData

        return StreamedPoolData(self.pool, self.preset)

    def _load_truth(self):
        """Row-aligned truth (clean, noise_type, class) when POOL/truth.parquet exists, else None."""
        path = f"{self.pool.root.rstrip('/')}/truth.parquet"
        if "://" in path or not os.path.exists(path):
            return None
        from .pool import read_metadata_file

        t = read_metadata_file(path).to_pandas()
        tu = U.hex_to_uids(t["uid"].to_numpy(), path)
        order = np.lexsort((tu["f1"], tu["f0"]))
        tu = tu[order]
        pos = np.searchsorted(tu["f0"], self.data.uids["f0"])
        pos = np.minimum(pos, len(tu) - 1)
        found = (tu["f0"][pos] == self.data.uids["f0"]) & (tu["f1"][pos] == self.data.uids["f1"])
        if not found.all():
            return None
        rows = order[pos]
        out = {c: t[c].to_numpy()[rows] for c in t.columns if c != "uid"}
        return out

    # ---- round bookkeeping
    def round_dir(self, k: int) -> Path:
        return self.workdir / f"round_{k:02d}"

    def finished_rounds(self) -> int:
        k = 0
        while (self.round_dir(k) / "done.json").exists():
            k += 1
        return k

    def _finished(self, k: int) -> dict | None:
        """Round k's done.json, or None while unfinished; refused when another configuration made it."""
        path = self.round_dir(k) / "done.json"
        if not path.exists():
            return None
        try:
            done = json.loads(path.read_text())
        except ValueError as e:
            raise BadInputError(path, f"unreadable ({e}); delete it to rerun the round") from None
        if done.get("fingerprint") != self.fingerprint:
            raise BadInputError(path, f"round made under a different configuration (fingerprint "
                                      f"{done.get('fingerprint')}, this run {self.fingerprint}); use a new --workdir")
        return done

    # loop settings that do not change round 0's models or scores: a sweep over them can share one round 0
    ROUND0_FREE = ("score", "top_frac", "random_frac", "kmeans_k")

    def adopt_round0(self, source: str | os.PathLike) -> bool:
        """Take round 0's models and scores from another workdir on the same pool whose settings differ only in
        what round 0 does not depend on (ROUND0_FREE); selection and the report are then redone under this
        configuration. False when this workdir already has round 0. Saves a round's training and scoring per
        point of a mix / score-type sweep."""
        src = Path(source) / "round_00"
        dst = self.round_dir(0)
        if (dst / "done.json").exists():
            return False
        cfg_path = Path(source) / "config.json"
        if not (src / "done.json").exists() or not cfg_path.exists():
            raise BadInputError(src, "round 0 is not finished there (no done.json / config.json); run it first")
        other = json.loads(cfg_path.read_text())
        mine = {k: v for k, v in asdict(self.config).items() if k != "preset"}
        diffs = [k for k in sorted(set(mine) | set(other.get("loop", {})))
                 if k not in self.ROUND0_FREE and mine.get(k) != other.get("loop", {}).get(k)]
        if other.get("pool", {}).get("fingerprint") != self.pool_fingerprint:
            diffs.insert(0, "pool")
        if other.get("preset") != self.preset:
            diffs.insert(0, "preset")
        if diffs:
            raise BadInputError(cfg_path, f"round 0 there was made under other settings ({', '.join(diffs)}); "
                                          "only " + ", ".join(self.ROUND0_FREE) + " may differ")
        if self.rank == 0:
            from .scorefile import read_scores, read_sidecar, write_scores

            dst.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps(dst)
            names = ["mix.npy", "emb_sample.npz"] + [p.name for p in sorted(src.glob("model_f*.pt"))] + \
                [p.name for p in sorted(src.glob("snapshots_f*.npy"))]
            for name in names:
                with open(src / name, "rb") as a, atomic_open(dst / name, "wb") as b:
                    shutil.copyfileobj(a, b)
            # rewritten, not copied: the score file names the configuration (fingerprint) and default field
            arr = read_scores(src / "scores.npy", mmap=False)
            side = read_sidecar(src / "scores.npy")
            meta = {k: v for k, v in side.items() if k not in ("format", "n", "fields", "default")}
            meta.update(fingerprint=self.fingerprint, adopted_from=os.path.abspath(src))
            write_scores(dst / "scores.npy", arr[["f0", "f1"]], {f: arr[f] for f in arr.dtype.names[2:]},
                         meta=meta, default=self.config.score)
        _barrier()
        return True

    def run(self, rounds: int) -> list[dict]:
        out = []
        for k in range(rounds):
            done = self._finished(k)
            out.append(done if done is not None else self.run_round(k))
        return out

    def _remove_stale_temps(self, rdir: Path) -> None:
        """Delete the temp files of this rank's writes that a killed earlier run left in a round folder (and, on
        rank 0, beside the workdir's final_scores.npy). Files named *.rank<r>.* are rank r's; the rest rank 0's."""
        import re

        for p in rdir.glob(".tmp-*"):
            m = re.search(r"\.rank(\d+)\.", p.name)
            if (int(m.group(1)) if m else 0) == self.rank:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if self.rank == 0:
            for name in ("final_scores.npy", "final_scores.npy.json"):
                remove_stale_temps(self.workdir / name)

    def _mix_rows(self, k: int) -> np.ndarray:
        """Row indices (into data.uids) of round k's training mix; writes round_k/mix.npy."""
        from .select import make_mix

        uids = self.data.uids
        cfg = self.config
        if k == 0:
            if cfg.round0_frac >= 1:
                mix = uids
            else:
                mix, _ = make_mix(uids, None, random_frac=cfg.round0_frac, seed=derive_seed(cfg.seed, "round0"))
        else:
            prev = self.round_dir(k - 1) / "next_mix.npy"
            if not (self.round_dir(k - 1) / "done.json").exists():
                raise BadInputError(self.round_dir(k - 1), f"round {k - 1} is not finished; run it first")
            mix = U.read_subset(prev, mmap=False)
        mask = U.isin_sorted(uids, U.sort_uids(mix))
        if cfg.train_shards:
            shard_mask = np.zeros(len(uids), bool)
            shard_mask[self.data.rows_of_shards(cfg.train_shards)] = True
            mask &= shard_mask
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            raise BadInputError(self.round_dir(k), "round's training mix is empty (check --train-shards)")
        if self.rank == 0:
            U.write_subset(self.round_dir(k) / "mix.npy", uids[rows])
        return rows

    def _score_rows(self) -> np.ndarray:
        """This rank's rows to score: whole pool shards, shard i to rank i % world."""
        if self.world == 1:
            return np.arange(len(self.data.uids))
        return np.flatnonzero(self.data.shard % self.world == self.rank)

    def _fold_of(self, k: int, rows: np.ndarray) -> np.ndarray:
        from .select import uid_hash

        u = self.data.uids[rows]
        return (uid_hash(u["f0"], u["f1"], derive_seed(self.config.seed, "folds", k)) %
                np.uint64(max(1, self.config.folds))).astype(np.int64)

    # ---- one round
    def run_round(self, k: int | None = None) -> dict:
        k = self.finished_rounds() if k is None else k
        rdir = self.round_dir(k)
        done = self._finished(k)
        if done is not None:
            return done
        if k > 0:
            self._finished(k - 1)  # the mix comes from round k-1: it must be this configuration's
        rdir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps(rdir)
        cfg = self.config
        t_start = time.time()
        timings = {"train_s": 0.0, "score_s": 0.0, "select_s": 0.0, "report_s": 0.0}

        mix_rows = self._mix_rows(k)
        scores_path = rdir / "scores.npy"
        if scores_path.exists() and (rdir / "emb_sample.npz").exists():
            # killed after its score file was complete: only selection and the report are left to do
            with np.load(rdir / "emb_sample.npz") as z:
                img_emb_sample = (z["rows"], z["emb"])
            counts = {"steps_per_model": None, "models": max(1, cfg.folds), "trained": 0, "scored": 0,
                      "resumed_after_scoring": True}
        else:
            img_emb_sample, counts = self._train_and_score(k, rdir, mix_rows, scores_path, timings)

        unread = getattr(self.data, "unread", None)
        if unread is not None and self.world > 1:  # the report counts what every rank could not read
            for rows in _all_gather(np.flatnonzero(unread)):
                unread[rows] = True
        result: dict = {}
        if self.rank == 0:
            result = self._select_and_report(k, rdir, scores_path, mix_rows, img_emb_sample, timings)
            result.update({"round": k, "fingerprint": self.fingerprint, "world_size": self.world,
                           **{c: v for c, v in counts.items() if c not in ("trained", "scored")},
                           "train_samples_per_s": counts["trained"] / timings["train_s"] if timings["train_s"] else None,
                           "score_samples_per_s": counts["scored"] * self.world / timings["score_s"]
                           if timings["score_s"] else None,
                           "wall_s": time.time() - t_start, **timings})
            write_json(rdir / "done.json", result)  # the completion marker: last
        _barrier()
        if self.rank != 0:
            result = json.loads((rdir / "done.json").read_text())
        return result

    def _train_and_score(self, k, rdir, mix_rows, scores_path, timings):
        """Train the round's models on the mix, score this rank's rows, write the (merged) score file."""
        import torch

        from .model import create_model
        from .train import steps_for

        cfg, preset = self.config, self.preset
        folds = cfg.folds
        fold_of_mix = self._fold_of(k, mix_rows) if folds >= 2 else np.zeros(len(mix_rows), np.int64)
        steps = cfg.steps if cfg.steps is not None else steps_for(preset, len(mix_rows) * (folds - 1) // max(1, folds)
                                                                 if folds >= 2 else len(mix_rows))
        score_rows = self._score_rows()
        n_models = max(1, folds)
        cos = np.zeros((len(score_rows), n_models), np.float32)
        snaps: list[list[np.ndarray]] = [[] for _ in range(n_models)]
        img_emb_sample = None
        trained_samples = 0
        scored_samples = 0
        for f in range(n_models):
            train_rows = mix_rows[fold_of_mix != f] if folds >= 2 else mix_rows
            model, _ = create_model(preset, seed=derive_seed(cfg.seed, "model", k, f))
            ckpt = rdir / f"model_f{f}.pt"
            snap_path = rdir / f"snapshots_f{f}.rank{self.rank}.npy"
            loaded = False
            if ckpt.exists() and (not cfg.snapshots or snap_path.exists()):
                try:
                    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
                    if cfg.snapshots:
                        snaps[f] = list(np.load(snap_path))
                    loaded = True
                except Exception as e:  # noqa: BLE001 - truncated/corrupt: retrain the fold (same seeds, same model)
                    print(f"warning: {ckpt}: unreadable checkpoint ({type(e).__name__}); retraining fold {f}",
                          file=sys.stderr)
                    model, _ = create_model(preset, seed=derive_seed(cfg.seed, "model", k, f))
                    snaps[f] = []
            if not loaded:
                snap_steps = sorted({max(1, min(steps, round(s * steps))) for s in cfg.snapshots} - {steps})
                on_step = None
                if snap_steps:
                    def on_step(step, m, f=f, snap_steps=snap_steps):
                        if step in snap_steps:
                            t0 = time.time()
                            a, b = self.data.embed(m, score_rows, preset, self.device, progress=False)
                            snaps[f].append(np.einsum("ij,ij->i", a, b).astype(np.float32))
                            m.train()
                            timings["snapshot_s"] = timings.get("snapshot_s", 0.0) + time.time() - t0
                t0, snap0 = time.time(), timings.get("snapshot_s", 0.0)
                self.data.train(model, train_rows, preset, steps, seed=derive_seed(cfg.seed, "batches", k, f),
                                device=self.device, progress=self.progress, on_step=on_step,
                                desc=f"round {k} train {f + 1}/{n_models}")
                timings["train_s"] += time.time() - t0 - (timings.get("snapshot_s", 0.0) - snap0)
                trained_samples += steps * min(preset["batch_size"], len(train_rows))
                if cfg.snapshots:
                    with atomic_open(snap_path, "wb") as fh:
                        np.save(fh, np.stack(snaps[f]) if snaps[f] else np.zeros((0, len(score_rows)), np.float32))
                if self.rank == 0:
                    with atomic_open(ckpt, "wb") as fh:
                        torch.save({k2: v.cpu() for k2, v in model.state_dict().items()}, fh)
            t0 = time.time()
            img, txt = self.data.embed(model, score_rows, preset, self.device, progress=self.progress)
            timings["score_s"] += time.time() - t0
            scored_samples += len(score_rows)
            cos[:, f] = np.einsum("ij,ij->i", img, txt)
            if f == 0:  # k-means sample for the drift report: the same pool rows whatever the world size
                take = np.random.default_rng(derive_seed(cfg.seed, "emb", k)).permutation(len(self.data.uids))[:20000]
                mine = np.isin(score_rows, take)
                img_emb_sample = (score_rows[mine], img[mine])
            del model
            _barrier()

        fields = self._combine(k, score_rows, mix_rows, fold_of_mix, cos, snaps)
        unread = getattr(self.data, "unread", None)  # streamed data: samples no model could read are skipped
        if unread is not None and unread[score_rows].any():
            keep = ~unread[score_rows]
            fields = {name: v[keep] for name, v in fields.items()}
            score_rows = score_rows[keep]
            sel = ~unread[img_emb_sample[0]]
            img_emb_sample = (img_emb_sample[0][sel], img_emb_sample[1][sel])
        if self.world > 1:  # every rank's part of the sample, in row order
            parts = _all_gather(img_emb_sample)
            rows = np.concatenate([p[0] for p in parts])
            order = np.argsort(rows, kind="stable")
            img_emb_sample = (rows[order], np.concatenate([p[1] for p in parts])[order])
        t0 = time.time()
        if self.rank == 0:  # before the score file, whose presence marks training + scoring as done
            with atomic_open(rdir / "emb_sample.npz", "wb") as fh:
                np.savez(fh, rows=img_emb_sample[0], emb=img_emb_sample[1])
        meta = {"round": k, "pool": self.pool.root, "fingerprint": self.fingerprint, "preset": preset["name"],
                "seed": cfg.seed, "folds": folds}
        from .scorefile import merge_score_files, write_scores

        if self.world == 1:
            write_scores(scores_path, self.data.uids[score_rows], fields, meta=meta, default=cfg.score)
        else:
            part = rdir / f"scores.rank{self.rank}.npy"
            write_scores(part, self.data.uids[score_rows], fields,
                         meta={**meta, "rank": self.rank, "world_size": self.world}, default=cfg.score)
            _barrier()
            if self.rank == 0:
                merge_score_files([rdir / f"scores.rank{r}.npy" for r in range(self.world)], scores_path, meta=meta)
        timings["score_s"] += time.time() - t0
        return img_emb_sample, {"steps_per_model": steps, "models": n_models, "trained": trained_samples,
                                "scored": scored_samples}

    def _combine(self, k, score_rows, mix_rows, fold_of_mix, cos, snaps) -> dict[str, np.ndarray]:
        """Per-row fields from the models' cosines (see the module docstring)."""
        folds = self.config.folds
        n_models = cos.shape[1]
        # fold of each scored row: -1 outside the mix
        fold = np.full(len(score_rows), -1, np.int64)
        pos = np.searchsorted(mix_rows, score_rows)
        pos = np.minimum(pos, max(0, len(mix_rows) - 1))
        in_mix = (mix_rows[pos] == score_rows) if len(mix_rows) else np.zeros(len(score_rows), bool)
        fold[in_mix] = fold_of_mix[pos[in_mix]]

        def insample(c: np.ndarray) -> np.ndarray:
            if folds < 2:
                return c[:, 0].copy()
            trained = np.ones_like(c, dtype=bool)  # which models trained on each row
            trained[in_mix, fold[in_mix]] = False
            trained[~in_mix] = True  # outside the mix: mean of all models
            return (c * trained).sum(1) / trained.sum(1)

        out: dict[str, np.ndarray] = {}
        if folds >= 2:
            cf = cos.mean(1)
            cf[in_mix] = cos[in_mix, fold[in_mix]]
            out["crossfit"] = cf.astype(np.float32)
        out["cosine"] = insample(cos).astype(np.float32)
        if self.config.snapshots:
            per_snap = [insample(np.stack([snaps[f][s] for f in range(n_models)], 1))
                        for s in range(min(len(x) for x in snaps))] + [out["cosine"]]
            out["ckpt_avg"] = np.mean(per_snap, 0).astype(np.float32)
        return out

    def _select_and_report(self, k, rdir, scores_path, mix_rows, img_emb_sample, timings) -> dict:
        from .export import export_subset
        from .report import write_round_report

        cfg = self.config
        t0 = time.time()
        side = export_subset(scores_path, rdir / "next_mix.npy", field=cfg.score, top_frac=cfg.top_frac,
                             random_frac=cfg.random_frac or None, seed=derive_seed(cfg.seed, "select", k),
                             hash_inputs=False, meta={"round": k})
        info = side["counts"]
        mix = U.read_subset(rdir / "next_mix.npy", mmap=False)
        arr = np.load(scores_path, mmap_mode="r")
        uids = np.asarray(arr[["f0", "f1"]]).astype(U.UID_DTYPE)
        timings["select_s"] = time.time() - t0

        t0 = time.time()
        fields = {name: np.asarray(arr[name]) for name in arr.dtype.names[2:]}
        truth = self.truth
        if truth is not None and len(uids) != len(self.data.uids):  # rows skipped as unreadable (both uid-sorted)
            present = U.isin_sorted(self.data.uids, uids)
            truth = {c: v[present] for c, v in truth.items()}
        report = write_round_report(
            rdir, k, uids, fields, cfg.score, mix_uids=self.data.uids[mix_rows], next_mix=mix,
            img_emb_sample=(self.data.uids[img_emb_sample[0]], img_emb_sample[1]) if img_emb_sample else None,
            truth=truth, top_frac=cfg.top_frac, kmeans_k=cfg.kmeans_k, seed=derive_seed(cfg.seed, "kmeans", k),
            errors=self.data.errors, timings=timings)
        _copy_scores(scores_path, self.workdir / "final_scores.npy")
        timings["report_s"] = time.time() - t0
        return {"mix_size": int(len(mix_rows)), "next_mix": info, "report": report.get("summary", {})}


def _copy_scores(src: Path, dst: Path) -> None:
    """Copy a score file and its sidecar atomically (sidecar first, .npy last, as scorefile writes them)."""
    from .scorefile import sidecar_path

    dst.unlink(missing_ok=True)
    with open(sidecar_path(src), "rb") as a, atomic_open(sidecar_path(dst), "wb") as b:
        shutil.copyfileobj(a, b)
    with open(src, "rb") as a, atomic_open(dst, "wb") as b:
        shutil.copyfileobj(a, b)

"""`make bench`: self-filtering against DataComp's baselines and the oracle, at equal samples seen.

    python bench/experiments/run_all.py --pool POOL --eval EVAL [--out bench/out/bench] [--seeds 0,1,2] [--jobs 2] [--dry-run]

Arms (each a subset of POOL, trained with `sfcomp train-eval` at the same scale and samples seen, one run per
seed; a method whose input the pool lacks is skipped with a note, checked up front; any other failure is
listed and makes the bench exit 1 once the other arms are done):
    no_filter            every uid (`sfcomp baseline no_filter`)
    random_30            `sfcomp baseline random --fraction F --seed S` (a new draw per seed)
    clip_l14_30          reference CLIP score, `sfcomp baseline clip_score --arch l14 --fraction F`
    clip_b32_30          the same with the B/32 score (needs clip_b32_similarity_score)
    laion2b              more `sfcomp baseline` names (--extra-baselines)
    sf_r1                self-filtering after 1 round: the top F of round 0's scores (round 0 trains on the whole
                         pool, so it is one run shared by every mix: `sfcomp run --round0-from`)
    sf_<mix>_r<k>        after k rounds of `sfcomp run` with mix <top>+<random>: `sfcomp export-subset --scores
                         round_{k-1}/scores.npy --top-frac F`, k = 2..R
    oracle_clean         every uid truth.parquet marks clean (needs truth.parquet)
    no_filter_eqc_r<R>   equal total compute: no filter, its samples seen raised by the loop's FLOPs (the first
                         mix's rounds 0..R-1, training, held-out evaluation and scoring) over the final model's
                         training FLOPs a sample (both from the loop's done.json): what the compute the loop
                         spent would have bought as plain training (--no-equal-compute leaves it out)
`--jobs` processes at once (torch `--threads` each), loop rounds first since every self-filtering arm waits on
them. Everything is resumable: finished subsets, loop rounds and runs are skipped. Results: OUT/results.md (the
table, then each method against no filter, random, reference CLIP score and the oracle), OUT/results.png,
OUT/bench.json (command, date, machine, timings, skipped arms, failures).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
import queue
import itertools
from datetime import datetime, timezone
from pathlib import Path

from arguments import OneLineParser, fraction_problem, minimum_problem, mixes_problem, out_problem, refuse
from sfcomp.atomic import atomic_open, write_json
from sfcomp.defaults import LOOP_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]


def sfcomp(*args: str, log) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "import sys; from sfcomp.cli import main; sys.argv[0] = 'sfcomp'; main()", *args]
    log("$ sfcomp " + " ".join(args))
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.stdout.strip():
        log("  " + r.stdout.strip().splitlines()[-1])
    return r


def append_log(path: Path, msg: str) -> None:
    """Print a timestamped line and append it to `path` (a driver's log in its output folder)."""
    line = f"[{datetime.now().strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def write_results(out: Path, stem: str, md: str, fields: dict, t0: float) -> None:
    """OUT/STEM.md, and OUT/STEM.json with the command, date, machine and total time before `fields`."""
    with atomic_open(out / f"{stem}.md", "w") as f:
        f.write(md)
    write_json(out / f"{stem}.json", {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, **fields,
        "total_s": round(time.time() - t0, 1)})


def command_available(name: str) -> str | None:
    """None if `sfcomp NAME` can be imported, else the reason."""
    from sfcomp.cli import COMMANDS
    import importlib

    if name not in COMMANDS:
        return f"no `sfcomp {name}` command"
    mod, fn = COMMANDS[name][0].split(":")
    try:
        getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        return f"`sfcomp {name}` is not available yet ({e})"
    return None


def pool_columns(pool: Path) -> set[str]:
    import pyarrow.parquet as pq

    files = sorted((pool / "metadata").glob("*.parquet"))
    return set(pq.ParquetFile(files[0]).schema_arrow.names) if files else set()


def oracle_subset(pool: Path, out: Path) -> int:
    """Every uid truth.parquet marks clean that the pool's metadata has: the oracle arm's subset."""
    from sfcomp import uids as U
    from sfcomp.pool import Pool
    from sfcomp.truth import read_truth, truth_path

    clean = read_truth(truth_path(pool), ["clean"]).clean_uids()
    meta = U.sort_uids(Pool(str(pool)).metadata_uids())
    return len(U.write_subset(out, clean[U.isin_sorted(clean, meta)]))


class Scheduler:
    """`workers` threads running queued tasks lowest priority number first (FIFO within one); tasks may queue
    more tasks. `wait()` returns when all are done and re-raises the first error."""

    def __init__(self, workers: int):
        self.q: queue.PriorityQueue = queue.PriorityQueue()
        self.seq = itertools.count()
        self.pending = 0
        self.cv = threading.Condition()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, priority: int, fn, *args) -> None:
        with self.cv:
            self.pending += 1
        self.q.put((priority, next(self.seq), fn, args))

    def _work(self) -> None:
        while True:
            _, _, fn, args = self.q.get()
            if fn is None:
                return
            try:
                fn(*args)
            except BaseException as e:  # reported by wait()
                with self.cv:
                    self.errors.append(e)
            with self.cv:
                self.pending -= 1
                self.cv.notify_all()

    def wait(self) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.pending == 0 or self.errors)
            if self.errors:
                raise self.errors[0]

    def close(self) -> None:
        for _ in self.threads:
            self.q.put((float("inf"), next(self.seq), None, ()))


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.pool, self.eval = Path(a.pool).resolve(), Path(a.eval).resolve()
        self.out = Path(a.out).resolve()
        self.subsets = self.out / "subsets"
        self.notes: list[str] = []
        self.failures: list[str] = []
        self.timings: dict[str, float] = {}
        self.arms: list[tuple[str, dict[int, Path]]] = []  # (method, {seed: subset})
        self.arm_samples: dict[str, int] = {}  # an arm's own samples seen (the equal-compute arm)
        self.order: list[str] = []  # table order: baselines, self-filtering, oracle
        self.loops: list[tuple[str, list[str], list[tuple[str, Path]]]] = []
        self.executor: Scheduler | None = None
        self.lock = threading.Lock()
        self.data_locks: dict[Path, threading.Lock] = {}
        self.log_file = self.out / "bench.log"

    def log(self, msg: str) -> None:
        line = f"[{datetime.now().strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if not self.a.dry_run:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "a") as f:
                f.write(line + "\n")

    def skip(self, arm: str, why: str) -> None:
        """An arm left out for a precondition checked up front (a command or a pool column that is missing)."""
        self.notes.append(f"{arm}: skipped: {why}")
        self.log(f"skip {arm}: {why}")

    def fail(self, arm: str, r: subprocess.CompletedProcess, what: str) -> None:
        """A command that should have worked did not: the bench goes on with the other arms, then exits 1."""
        why = (r.stderr.strip().splitlines() or [f"{what} failed"])[-1]
        with self.lock:
            self.failures.append(f"{arm}: {what} exited {r.returncode}: {why}")
        self.log(f"FAILED {arm}: {what} exited {r.returncode}: {why}")

    def timed(self, key: str, fn):
        t0 = time.time()
        r = fn()
        with self.lock:
            self.timings[key] = round(self.timings.get(key, 0.0) + time.time() - t0, 1)
        return r

    # ---- subsets -------------------------------------------------------------------------------------
    def baseline(self, arm: str, name: str, *extra: str, seed: int | None = None) -> Path | None:
        path = self.subsets / (f"{arm}_s{seed}.npy" if seed is not None else f"{arm}.npy")
        if path.exists():
            return path
        if self.a.dry_run:
            self.log(f"would run: sfcomp baseline {name} {' '.join(extra)}")
            return path
        why = command_available("baseline")
        if why:
            self.skip(arm, why)
            return None
        args = ["baseline", name, "--metadata-dir", str(self.pool / "metadata"), "--save-path", str(path), *extra]
        if seed is not None:
            args += ["--seed", str(seed)]
        r = self.timed(f"subset {arm}", lambda: sfcomp(*args, log=self.log))
        if r.returncode != 0:
            self.fail(arm, r, f"sfcomp baseline {name}")
            return None
        return path

    def self_filtering(self) -> None:
        """Loop runs (one per score type x mix, all sharing the first run's round 0) and the exported subsets
        after 1..R rounds. Round 0 does not depend on the mix, so `sf_r1` is one arm for every mix."""
        for why in filter(None, (command_available("run"), command_available("export-subset"))):
            self.skip("self-filtering", why)
            return
        for tag, args, arms in self.planned_loops():
            self.loops.append((tag, args, arms))
            self.order += [arm for arm, _ in arms]

    def planned_loops(self) -> list[tuple[str, list[str], list[tuple[str, Path]]]]:
        """(tag, `sfcomp run` arguments, [(arm, the round's score file)]) for each loop run; nothing is run."""
        from sfcomp.scoretypes import SCORE_TYPES

        score_types = [x.strip() for x in self.a.score_types.split(",") if x.strip()]  # checked in run()
        bases: dict[tuple[str, ...], Path] = {}  # one round 0 per set of a score type's own run options
        loops = []
        for score, mix in ((sc, m) for sc in score_types for m in self.a.mixes.split(",")):
            top, rnd = (float(x) for x in mix.split(":"))
            suffix = f"_{score}" if len(score_types) > 1 else ""
            tag = f"sf_t{int(round(top * 100))}r{int(round(rnd * 100))}" + suffix
            work = self.out / "loop" / tag
            args = ["run", "--pool", str(self.pool), "--workdir", str(work), "--rounds", str(self.a.rounds),
                    "--top-frac", str(top), "--random-frac", str(rnd), "--seed", str(self.a.loop_seed), "--quiet",
                    "--score", score, *SCORE_TYPES[score].run_args]
            base = bases.get(SCORE_TYPES[score].run_args)
            if self.a.loop_steps:
                args += ["--steps", str(self.a.loop_steps)]
            if self.a.threads:
                args += ["--threads", str(self.a.threads)]
            if base is not None:
                args += ["--round0-from", str(base)]
            arms = []
            for k in range(1, self.a.rounds + 1):
                if k == 1 and base is not None and not suffix:
                    continue  # round 0's scores are shared: the same subset as the first mix's sf_r1
                arms.append((f"sf{suffix}_r1" if k == 1 else f"{tag}_r{k}", work / f"round_{k - 1:02d}" / "scores.npy"))
            loops.append((tag, args, arms))
            bases.setdefault(SCORE_TYPES[score].run_args, work)
        return loops

    def arm_names(self) -> list[str]:
        """Every arm this bench can train, whether or not the pool has what it needs (then it is skipped)."""
        pct = int(round(self.a.fraction * 100))
        names = ["no_filter", f"random_{pct}", f"clip_l14_{pct}", f"clip_b32_{pct}",
                 *[x.strip() for x in self.a.extra_baselines.split(",") if x.strip()],
                 *[arm for _, _, arms in self.planned_loops() for arm, _ in arms]]
        if self.a.equal_compute:
            names.append(f"no_filter_eqc_r{self.a.rounds}")
        return names + ["oracle_clean"]

    def only_problem(self) -> str | None:
        """An --only prefix that names no arm (a typo would train nothing and say nothing), else None."""
        names = self.arm_names()
        for k in (x.strip() for x in (self.a.only or "").split(",") if x.strip()):
            if not any(n.startswith(k) for n in names):
                return f"--only: {k!r} is the start of no arm's name (arms: {', '.join(names)})"
        return None

    def run_loop(self, tag: str, args: list[str], arms: list[tuple[str, Path]]) -> None:
        """One `sfcomp run`, then each round's export; queues the arms' train-evals."""
        if self.a.dry_run:
            self.log("would run: sfcomp " + " ".join(args))
        else:
            r = self.timed(f"loop {tag}", lambda: sfcomp(*args, log=self.log))
            if r.returncode != 0:
                self.fail(tag, r, "sfcomp run")
                return
        for arm, scores in arms:
            path = self.subsets / f"{arm}.npy"
            if not path.exists() and not self.a.dry_run:
                r = self.timed(f"subset {arm}", lambda scores=scores, path=path: sfcomp(
                    "export-subset", "--scores", str(scores), "--top-frac", str(self.a.fraction),
                    "--random-frac", "0", "-o", str(path), log=self.log))
                if r.returncode != 0:
                    self.fail(arm, r, "sfcomp export-subset")
                    continue
            self.add_arm(arm, {s: path for s in self.seeds})
        if tag == self.loops[0][0] and self.a.equal_compute:
            self.equal_compute_arm(Path(args[args.index("--workdir") + 1]), self.a.rounds)

    def equal_compute_arm(self, work: Path, rounds: int) -> None:
        """No filter trained for the bench's samples seen plus what the loop's compute (rounds 0..rounds-1, the
        last self-filtering arm of the first mix) buys of the final model's training."""
        import json

        arm = f"no_filter_eqc_r{rounds}"
        no_filter = self.subsets / "no_filter.npy"
        base = self.a.samples_seen
        if not base:
            self.skip(arm, "needs --samples-seen (the bench's equal samples seen) to add the loop's compute to")
            return
        if self.a.dry_run:
            self.log(f"would train {arm}: no_filter with samples seen {base} + loop FLOPs / final FLOPs a sample")
            extra = 0
        else:
            done = json.loads((work / f"round_{rounds - 1:02d}" / "done.json").read_text())
            final = done["compute"]["final_training"]
            extra = int(round(done["compute"]["run_so_far"]["total_flops"] / (final["flops"] / final["samples_seen"])))
            self.log(f"{arm}: loop FLOPs through round {rounds - 1} buy {extra:,} samples of the final model's "
                     f"training: samples seen {base:,} + {extra:,}")
        self.arm_samples[arm] = base + extra
        self.add_arm(arm, {s: no_filter for s in self.seeds})

    def build_subsets(self) -> None:
        cols = pool_columns(self.pool)
        pct = int(round(self.a.fraction * 100))
        p = self.baseline("no_filter", "no_filter")
        if p:
            self.add_arm("no_filter", {s: p for s in self.seeds})
        rand = {s: self.baseline(f"random_{pct}", "random", "--fraction", str(self.a.fraction), seed=s)
                for s in self.seeds}
        if all(rand.values()):
            self.add_arm(f"random_{pct}", rand)
        for arch in ("l14", "b32"):
            col = f"clip_{arch}_similarity_score"
            if col not in cols:
                self.skip(f"clip_{arch}_{pct}", f"pool metadata has no {col} column")
                continue
            p = self.baseline(f"clip_{arch}_{pct}", "clip_score", "--arch", arch, "--fraction", str(self.a.fraction))
            if p:
                self.add_arm(f"clip_{arch}_{pct}", {s: p for s in self.seeds})
        for name in self.a.extra_baselines.split(","):
            if name.strip():
                p = self.baseline(name.strip(), name.strip())
                if p:
                    self.add_arm(name.strip(), {s: p for s in self.seeds})
        self.self_filtering()
        if (self.pool / "truth.parquet").exists():
            path = self.subsets / "oracle_clean.npy"
            if not path.exists() and not self.a.dry_run:
                self.subsets.mkdir(parents=True, exist_ok=True)
                n = oracle_subset(self.pool, path)
                self.log(f"oracle_clean: {n} clean uids from truth.parquet")
            self.add_arm("oracle_clean", {s: path for s in self.seeds})
        else:
            self.skip("oracle_clean", "pool has no truth.parquet")

    # ---- training + evaluation ---------------------------------------------------------------------------
    def add_arm(self, arm: str, by_seed: dict[int, Path]) -> None:
        """Record an arm; once the runs have started (a loop finished), queue its train-evals at once."""
        self.arms.append((arm, by_seed))
        if arm not in self.order:
            self.order.append(arm)
        if self.executor is not None:
            for s in self.seeds:
                self.submit(arm, s, by_seed[s])

    def wanted(self, arm: str) -> bool:
        keep = [x.strip() for x in (self.a.only or "").split(",") if x.strip()]
        return not keep or any(arm.startswith(k) for k in keep)

    def submit(self, arm: str, seed: int, subset: Path) -> None:
        if self.wanted(arm):
            self.executor.submit(1 if arm.startswith("sf") else 2, self.train_eval, arm, seed, subset)

    def train_eval(self, arm: str, s: int, subset: Path) -> None:
        run_dir = self.out / "runs" / arm / f"seed{s}"
        data_dir = self.out / "data" / (subset.stem)
        args = ["train-eval", "--subset", str(subset), "--pool", str(self.pool), "--eval", str(self.eval),
                "--out", str(run_dir), "--method", arm, "--seed", str(s), "--scale", self.a.scale,
                "--reshard-dir", str(data_dir), "--eval-cache", str(self.out / "eval_cache")]
        samples = self.arm_samples.get(arm, self.a.samples_seen)
        if samples:
            args += ["--samples-seen", str(samples)]
        if self.a.threads:
            args += ["--threads", str(self.a.threads)]
        if self.a.dry_run:
            self.log("would run: sfcomp " + " ".join(args))
            return
        if (run_dir / "run.json").exists():
            return
        with self.lock:
            data_lock = self.data_locks.setdefault(data_dir, threading.Lock())
        # two seeds of one subset share its resharded folder: the first run writes it, the others wait
        first = data_lock.acquire() and not (data_dir / "meta.json").exists()
        if not first:
            data_lock.release()
        try:
            r = self.timed(f"train-eval {arm}", lambda: sfcomp(*args, log=self.log))
        finally:
            if first:
                data_lock.release()
        if r.returncode != 0:
            self.fail(f"{arm} seed {s}", r, "sfcomp train-eval")

    def execute(self) -> None:
        """`--jobs` processes at once, by priority: loop runs (the critical path: round 0, then every mix's
        later rounds in parallel, sharing it), then self-filtering arms (queued as each loop finishes), then the
        other arms seed-major (a bench stopped early has every baseline at the same number of seeds)."""
        self.executor = Scheduler(1 if self.a.dry_run else self.a.jobs)
        try:
            if self.loops and self.loops_wanted():
                self.executor.submit(0, self.start_loops)
            elif self.loops:
                self.log(f"--only {self.a.only}: no selected arm needs the self-filtering loop; not run")
            for s in self.seeds:
                for arm, by_seed in list(self.arms):
                    self.submit(arm, s, by_seed[s])
            self.executor.wait()
        finally:
            self.executor.close()

    def loops_wanted(self) -> bool:
        """Whether a selected arm (--only) needs the loop: a self-filtering arm, or the equal-compute arm."""
        arms = [arm for _, _, loop_arms in self.loops for arm, _ in loop_arms]
        if self.a.equal_compute:
            arms.append(f"no_filter_eqc_r{self.a.rounds}")
        return any(self.wanted(arm) for arm in arms)

    def start_loops(self) -> None:
        tag, args, arms = self.loops[0]
        if len(self.loops) > 1 and not self.a.dry_run:  # round 0 first: the other mixes adopt it
            i = args.index("--rounds")
            self.timed(f"loop {tag}", lambda: sfcomp(*args[:i + 1], "1", *args[i + 2:], log=self.log))
        for tag, args, arms in self.loops:
            self.executor.submit(0, self.run_loop, tag, args, arms)

    def overrides_line(self) -> str:
        loop = [f"--steps {self.a.loop_steps}"] if self.a.loop_steps else []
        if self.a.rounds != LOOP_DEFAULTS["rounds"]:
            loop.append(f"--rounds {self.a.rounds}")
        return ("- self-filtering runs `sfcomp run` with the library's defaults" +
                (f", overriding {' '.join(loop)} (sfcomp/presets/, sfcomp/configs/loop_defaults.json)" if loop else "") +
                f"; mixes {self.a.mixes}; every arm trains {self.a.samples_seen or 'the scale default'} samples seen")

    def run(self) -> int:
        t0 = time.time()
        if refuse(argument_problem(self.a)):
            return 2
        self.seeds = [int(s) for s in self.a.seeds.split(",")]
        if not (self.pool / "metadata").is_dir():
            print(f"error: {self.pool}: not a pool (no metadata/ folder); build one with `sfcomp make-pool`",
                  file=sys.stderr)
            return 2
        if not self.eval.is_dir():
            print(f"error: {self.eval}: eval folder does not exist", file=sys.stderr)
            return 2
        from sfcomp.scoretypes import SCORE_TYPES

        unknown = [x.strip() for x in self.a.score_types.split(",") if x.strip() and x.strip() not in SCORE_TYPES]
        if unknown:
            print(f"error: --score-types: unknown score type {unknown[0]!r} (registered: {', '.join(SCORE_TYPES)})",
                  file=sys.stderr)
            return 2
        if refuse(self.only_problem()):
            return 2
        self.log(f"bench: pool {self.pool}, eval {self.eval}, seeds {self.seeds}, scale {self.a.scale}, "
                 f"samples seen {self.a.samples_seen or 'scale default'}")
        self.log(self.overrides_line().removeprefix("- "))
        self.build_subsets()
        self.execute()
        self.arms.sort(key=lambda arm: self.order.index(arm[0]))
        if self.a.dry_run:
            self.log(f"{len(self.arms)} arms x {len(self.seeds)} seeds planned; notes: {self.notes}")
            return 0
        from sfcomp.eval.compare import compare

        runs = [self.out / "runs" / arm for arm, _ in self.arms if (self.out / "runs" / arm).exists()]
        md = compare(runs, self.out / "results.md", self.out / "results.png", order=[a for a, _ in self.arms]) \
            if runs else "no finished runs\n"
        if runs:  # what differs from the library's defaults, named where the numbers are read
            md += "\n" + self.overrides_line() + "\n"
            with atomic_open(self.out / "results.md", "w") as f:
                f.write(md)
        print(md)
        write_json(self.out / "bench.json", {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": _cpu_model()},
            "pool": str(self.pool), "eval": str(self.eval), "seeds": self.seeds, "scale": self.a.scale,
            "samples_seen": self.a.samples_seen, "arm_samples_seen": self.arm_samples, "fraction": self.a.fraction, "mixes": self.a.mixes, "score_types": self.a.score_types,
            "rounds": self.a.rounds, "loop_steps": self.a.loop_steps, "only": self.a.only, "jobs": self.a.jobs, "threads": self.a.threads, "arms": [a for a, _ in self.arms], "notes": self.notes,
            "failures": self.failures, "timings_s": self.timings, "total_s": round(time.time() - t0, 1),
        })
        if self.failures:
            print(f"error: {len(self.failures)} bench command(s) failed:", *self.failures, sep="\n  ", file=sys.stderr)
            return 1
        return 0


def argument_problem(a: argparse.Namespace) -> str | None:
    """What is wrong with the bench's arguments (one line), before anything runs; None when nothing is."""
    seeds = [x.strip() for x in a.seeds.split(",")]
    if not all(x.isdigit() for x in seeds) or len(set(map(int, seeds))) != len(seeds):
        return f"--seeds must be distinct integers >= 0, comma-separated (e.g. 0,1,2), got {a.seeds!r}"
    return (fraction_problem("--fraction", a.fraction) or mixes_problem("--mixes", a.mixes)
            or minimum_problem(("--samples-seen", a.samples_seen, 0), ("--rounds", a.rounds, 1),
                               ("--loop-steps", a.loop_steps, 0), ("--loop-seed", a.loop_seed, 0),
                               ("--threads", a.threads, 1), ("--jobs", a.jobs, 1))
            or out_problem(a.out, [a.pool], [a.eval]))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", required=True)
    p.add_argument("--eval", required=True, help="folder of clip_benchmark wds eval sets")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "bench"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--scale", default="tiny")
    p.add_argument("--samples-seen", type=int, default=25600,
                   help="samples seen by every arm's training, equal for all arms (default 100 steps of 256: "
                        "at 32 steps the tiny model stayed at chance on a demo-style pool; 0 = the scale's own)")
    p.add_argument("--fraction", type=float, default=0.3, help="subset fraction of random / CLIP score / sf arms")
    p.add_argument("--mixes", default="0.3:0.1,0.3:0.0",
                   help="self-filtering mixes, top:random[,top:random]: sfcomp run's default first, then the sweep's runner-up")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--score-types", default=LOOP_DEFAULTS["score"],
                   help="comma-separated `sfcomp run --score` types to sweep (sfcomp/scoretypes.py: crossfit_z, "
                        "crossfit, cosine, ckpt_avg, ...; default: the library's)")
    p.add_argument("--loop-seed", type=int, default=0)
    p.add_argument("--loop-steps", type=int, default=0,
                   help="training steps per in-loop model, fixed (default 0: the library's default, the held-out "
                        "stopping rule capped at the preset's steps)")
    p.add_argument("--no-equal-compute", dest="equal_compute", action="store_false",
                   help="leave out the equal-total-compute arm (no filter with the loop's compute as more training)")
    p.add_argument("--extra-baselines", default="laion2b",
                   help="more `sfcomp baseline` names without options (one that fails fails the bench)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (1: with --jobs 2 each core runs one process)")
    p.add_argument("--jobs", type=int, default=2, help="loop runs / train-evals at once")
    p.add_argument("--only", default=None, help="comma-separated arm name prefixes to train (a reduced bench)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(Bench(parse_args()).run())

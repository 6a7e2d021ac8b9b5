"""The bench scripts' own logic: run_all's scheduler, the sweep's metrics and its choice of defaults."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "experiments"


def _bench_module(name: str):
    """A bench script as a module, loaded by path (bench/ is not a package: its scripts import their siblings
    by plain name, as `python bench/experiments/NAME.py` finds them)."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


_arguments = _bench_module("arguments")  # before the scripts that import it by plain name
Scheduler = _bench_module("run_all").Scheduler
_sweep = _bench_module("sweep_mix")
Sweep, auroc, parse_args = _sweep.Sweep, _sweep.auroc, _sweep.parse_args


def test_lower_priority_number_runs_first_and_tasks_may_queue_tasks():
    order: list[str] = []
    gate = threading.Event()
    s = Scheduler(1)
    s.submit(0, gate.wait)  # holds the one worker while the queue fills
    s.submit(2, order.append, "baseline")
    s.submit(1, order.append, "sf-arm")

    def loop():
        order.append("loop")
        s.submit(1, order.append, "queued-by-loop")

    s.submit(0, loop)
    gate.set()
    s.wait()
    s.close()
    assert order == ["loop", "sf-arm", "queued-by-loop", "baseline"]


def test_an_error_in_a_task_is_raised_by_wait():
    s = Scheduler(2)

    def boom():
        raise RuntimeError("train-eval crashed")

    s.submit(1, boom)
    with pytest.raises(RuntimeError, match="crashed"):
        s.wait()
    s.close()


def test_auroc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 200).astype(float)  # many ties
    pos = rng.random(200) < 0.4
    p, n = score[pos], score[~pos]
    pairs = ((p[:, None] > n[None, :]) + 0.5 * (p[:, None] == n[None, :])).mean()
    assert auroc(score, pos) == pytest.approx(pairs)


def test_sweep_choice_prefers_more_random_among_ties():
    sweep = Sweep(parse_args(["--pool", "x", "--rounds", "2", "--tie", "0.005"]))
    rows = [{"pool": pool, "score": "crossfit", "mix": mix, "rounds": 2, "precision": p, "class_balance": 1.0}
            for mix, ps in {"0.3:0.0": (0.867, 0.965), "0.3:0.1": (0.859, 0.971), "0.5:0.0": (0.846, 0.964)}.items()
            for pool, p in zip(("a", "b"), ps)]
    rows += [{**r, "rounds": 1, "precision": 0.99} for r in rows]  # earlier rounds do not count
    choice = sweep.choose(rows)
    assert (choice["score"], choice["mix"]) == ("crossfit", "0.3:0.1")  # 0.915 ties 0.916; more random wins
    assert choice["tied"] == ["crossfit 0.3:0.0", "crossfit 0.3:0.1"]
    strict = Sweep(parse_args(["--pool", "x", "--rounds", "2", "--tie", "0"])).choose(rows)
    assert strict["mix"] == "0.3:0.0"


@pytest.mark.parametrize("extra, problem", [
    (["--seeds", "abc"], "--seeds must be distinct integers >= 0"),  # a ValueError traceback before
    (["--seeds", "0,0"], "--seeds must be distinct integers >= 0"),
    (["--fraction", "1.5"], "--fraction must be in (0, 1], got 1.5"),
    (["--mixes", "0.3"], "--mixes: '0.3' is not top:random"),  # a ValueError traceback before
    (["--mixes", "0.3:0.1,2:0.1"], "--mixes: '2:0.1' is not top:random"),
    (["--rounds", "0"], "--rounds must be >= 1, got 0"),
    (["--jobs", "0"], "--jobs must be >= 1, got 0"),
    (["--samples-seen", "-1"], "--samples-seen must be >= 0, got -1"),
    (["--out", "POOL"], "--out is the pool folder"),
    (["--out", "EVAL/x"], "--out lies inside the input"),
    (["--out", "POOL/shards/x"], "--out lies inside the input"),
    ([], None),
])
def test_bench_arguments_are_checked_before_anything_runs(tmp_path, extra, problem):
    run_all = _bench_module("run_all")
    (tmp_path / "pool" / "metadata").mkdir(parents=True)
    (tmp_path / "pool" / "shards").mkdir()
    (tmp_path / "eval").mkdir()
    names = {"POOL": str(tmp_path / "pool"), "EVAL": str(tmp_path / "eval")}
    extra = [next((x.replace(k, v) for k, v in names.items() if x.startswith(k)), x) for x in extra]
    a = run_all.parse_args(["--pool", names["POOL"], "--eval", names["EVAL"], "--out", str(tmp_path / "bench"),
                            *extra])
    got = run_all.argument_problem(a)
    assert (got is None) if problem is None else (problem in (got or "")), got


@pytest.mark.parametrize("script, extra, problem", [
    ("sweep_mix", ["--mixes", "0.3"], "--mixes: '0.3' is not top:random"),
    ("sweep_mix", ["--other-score-mixes", "0.3:2"], "--other-score-mixes: '0.3:2' is not top:random"),
    ("sweep_mix", ["--rounds", "0"], "--rounds must be >= 1, got 0"),
    ("sweep_mix", ["--tie", "nan"], "--tie must be >= 0, got nan"),
    ("sweep_mix", ["--jobs", "0"], "--jobs must be >= 1, got 0"),
    ("sweep_mix", ["--out", "POOL/metadata/x"], "--out lies inside the input"),
    ("sweep_mix", [], None),
    ("sweep_steps", ["--folds", "1"], "--folds must be >= 2, got 1"),
    ("sweep_steps", ["--rule-cap", "0"], "--rule-cap must be >= 1, got 0"),
    ("sweep_steps", ["--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    ("sweep_steps", ["--out", "POOL"], "--out is the pool folder"),
    ("sweep_steps", ["--out", "OTHER"], "--out is the pool folder"),  # the second --pool counts as much
    ("sweep_steps", [], None),
])
def test_sweep_arguments_are_checked_before_anything_runs(tmp_path, script, extra, problem):
    module = _bench_module(script)
    for pool in ("pool", "other"):
        (tmp_path / pool / "metadata").mkdir(parents=True)
    names = {"POOL": str(tmp_path / "pool"), "OTHER": str(tmp_path / "other")}
    extra = [next((x.replace(k, v) for k, v in names.items() if x.startswith(k)), x) for x in extra]
    a = module.parse_args(["--pool", names["POOL"], "--pool", names["OTHER"], "--out", str(tmp_path / "sweep"), *extra])
    got = module.argument_problem(a)
    assert got == problem if problem is None else problem in (got or ""), got


@pytest.mark.parametrize("argv, line", [
    (["--steps", "100,abc"], "error: argument --steps: '100,abc' is not comma-separated integers (see --help)"),
    (["--steps", "0,100"], "error: argument --steps: '0,100': expected distinct integers >= 1 (see --help)"),
    (["--loop-seeds", "1,1"], "error: argument --loop-seeds: '1,1': expected distinct integers >= 0 (see --help)"),
    (["--rounds", "x"], "error: argument --rounds: invalid int value: 'x' (see --help)"),
])
def test_a_malformed_sweep_value_is_one_error_line_and_exit_2(capsys, argv, line):
    with pytest.raises(SystemExit) as e:
        _bench_module("sweep_steps").parse_args(["--pool", "p", *argv])
    assert e.value.code == 2 and capsys.readouterr().err == line + "\n"
    assert _bench_module("sweep_steps").parse_args(["--pool", "p", "--steps", "50,100"]).steps == [50, 100]

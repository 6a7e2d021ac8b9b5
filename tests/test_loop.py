"""The self-filtering loop end to end on a tiny real pool (Fashion-MNIST JPEGs in img2dataset's layout)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sfcomp import uids as U
from sfcomp.cache import PoolCache, build_cache
from sfcomp.cli import main as cli
from sfcomp.crossfit import fold_of
from sfcomp.errors import BadInputError
from sfcomp.export import export_subset
from sfcomp.loop import Loop, LoopConfig, resolve_pool
from sfcomp.model import load_preset
from sfcomp.pool import Pool
from sfcomp.scorefile import read_scores, read_sidecar

from poolfactory import write_tiny_pool

import torch

torch.set_num_threads(1)

N_POOL = 240
FAST = {"batch_size": 48, "warmup": 1}
PRESET_FILE = "fast-tiny.json"
CLI_ARGS = ["--steps", "2", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pool")
    info = write_tiny_pool(root, n=N_POOL, seed=3, samples_per_shard=60)
    preset = load_preset("tiny")
    preset.update(FAST, name="fast-tiny")
    (root.parent / PRESET_FILE).write_text(json.dumps(preset))
    return {"root": str(root), "preset": str(root.parent / PRESET_FILE), **info}


def config(pool, **kw) -> LoopConfig:
    return LoopConfig(preset=pool["preset"], steps=2, **kw)


def test_cache_holds_every_present_sample_sorted(pool):
    cache = build_cache(pool["root"], load_preset(pool["preset"]), progress=False)
    present = U.sort_uids(U.hex_to_uids(sorted(pool["present"])))
    assert np.array_equal(np.asarray(cache.uids), present)
    assert cache.pixels.shape == (len(present), 32, 32, 3) and cache.pixels.dtype == np.uint8
    assert cache.tokens.shape == (len(present), 16) and cache.tokens.dtype == np.int32
    assert cache.pixels[:50].std() > 10  # real images, not zeros
    assert cache.manifest["corrupt_members"] == 0 and len(cache.shards) == 4


def test_one_round_scores_every_sample_and_selects_with_export_subset(pool, tmp_path):
    loop = Loop(pool["root"], tmp_path / "w", config(pool, snapshots=[0.5]), progress=False)
    r = loop.run_round()
    rdir = tmp_path / "w" / "round_00"
    assert (rdir / "done.json").exists() and r["round"] == 0
    scores = read_scores(rdir / "scores.npy")
    assert len(scores) == len(pool["present"])  # every present pool sample, once
    assert scores.dtype.names[2:] == ("crossfit", "cosine", "ckpt_avg", "crossfit_z")
    assert read_sidecar(rdir / "scores.npy")["default"] == "crossfit_z"
    # the next mix is exactly what export-subset makes from the score file (one selection code path)
    export_subset(rdir / "scores.npy", tmp_path / "again.npy", top_frac=0.3, random_frac=0.1,
                  seed=json.loads((rdir / "next_mix.npy.json").read_text())["seed"])
    assert (tmp_path / "again.npy").read_bytes() == (rdir / "next_mix.npy").read_bytes()
    rep = json.loads((rdir / "report.json").read_text())
    assert rep["mix"] == len(pool["present"]) and rep["next_mix"] == len(U.read_subset(rdir / "next_mix.npy"))
    for name in ("crossfit", "cosine", "ckpt_avg", "crossfit_z"):
        assert 0 <= rep["top_k"][name]["precision"] <= 1
    assert 0 < rep["cluster_drift"]["coverage"] <= 1 and 0 < rep["class_drift"]["coverage"] <= 1
    assert (rdir / "report.png").stat().st_size > 1000
    assert (tmp_path / "w" / "final_scores.npy").read_bytes() == (rdir / "scores.npy").read_bytes()
    # crossfit_z: within each fold the same order as crossfit, standardised on the fold (round 0: the whole pool)
    fold = fold_of(np.asarray(scores[["f0", "f1"]]).astype(U.UID_DTYPE), 2, 0, 0)
    for f in (0, 1):
        cf, z = scores["crossfit"][fold == f], scores["crossfit_z"][fold == f].astype(np.float64)
        assert (np.diff(z[np.argsort(cf, kind="stable")]) >= 0).all()
        assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-3
    # the second round trains on that mix
    loop.run_round()
    assert (tmp_path / "w" / "round_01" / "mix.npy").read_bytes() == (rdir / "next_mix.npy").read_bytes()


def test_workdir_refuses_another_configuration(pool, tmp_path):
    Loop(pool["root"], tmp_path / "w", config(pool), progress=False)
    with pytest.raises(BadInputError, match="different configuration"):
        Loop(pool["root"], tmp_path / "w", config(pool, top_frac=0.5), progress=False)


def test_train_shards_limit_training_not_scoring(pool, tmp_path):
    shard = Pool(pool["root"]).shard_files()[1]
    loop = Loop(pool["root"], tmp_path / "w", config(pool, train_shards=[Path(shard).stem], folds=1,
                                                     score="cosine"), progress=False)
    loop.run_round()
    mix = U.read_subset(tmp_path / "w" / "round_00" / "mix.npy")
    cache = loop.data.cache
    shard_idx = cache.shards.index(shard)
    rows = np.flatnonzero(U.isin_sorted(np.asarray(cache.uids), mix))
    assert len(mix) > 0 and (cache.shard[rows] == shard_idx).all()
    assert len(read_scores(tmp_path / "w" / "round_00" / "scores.npy")) == len(pool["present"])
    with pytest.raises(BadInputError, match="not in the pool"):
        Loop(pool["root"], tmp_path / "w2", config(pool, train_shards=["99999999"]), progress=False).run_round()


def _sfcomp(*args) -> list[str]:
    return [sys.executable, "-c", "from sfcomp.cli import main; main()", *map(str, args)]


def test_resume_after_kill_matches_uninterrupted_run(pool, tmp_path):
    args = ["--pool", pool["root"], "--preset", pool["preset"], *CLI_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_sfcomp("run", "--workdir", tmp_path / "a", "--rounds", 2, *args), check=True, env=env,
                   capture_output=True)
    # interrupted: kill -9 once round 1 has trained its first model, then rerun
    proc = subprocess.Popen(_sfcomp("run", "--workdir", tmp_path / "b", "--rounds", 2, *args), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "b" / "round_01" / "model_f0.pt"
    deadline = time.time() + 600
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be killed"
    assert not (tmp_path / "b" / "round_01" / "done.json").exists()
    subprocess.run(_sfcomp("run", "--workdir", tmp_path / "b", "--rounds", 2, *args), check=True, env=env,
                   capture_output=True)
    for name in ("round_00/next_mix.npy", "round_01/mix.npy", "round_01/next_mix.npy", "final_scores.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_cli_export_subset_passes_validation(pool, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["round", "--pool", pool["root"], "--workdir", str(tmp_path / "w"), "--preset",
                            pool["preset"], "--folds", "1", "--score", "cosine", *CLI_ARGS])
    assert r.exit_code == 0, r.output
    scores = tmp_path / "w" / "final_scores.npy"
    out = tmp_path / "subset.npy"
    r = runner.invoke(cli, ["export-subset", "--scores", str(scores), "--top-frac", "0.3", "--random-frac", "0.1",
                            "--seed", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["validate-subset", str(out), "--pool", pool["root"]])
    assert r.exit_code == 0 and r.output.startswith("ok:"), r.output
    assert json.loads(Path(f"{out}.json").read_text())["counts"]["union"] == len(U.read_subset(out))
    r = runner.invoke(cli, ["scores-to-parquet", str(scores), str(tmp_path / "s.parquet")])
    assert r.exit_code == 0, r.output
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "s.parquet")) == len(pool["present"])


def test_corrupt_and_missing_shards_are_counted_not_fatal(tmp_path):
    root = tmp_path / "p"
    write_tiny_pool(root, n=120, seed=5, samples_per_shard=40)
    tars = sorted((root / "shards").glob("*.tar"))
    data = tars[0].read_bytes()
    tars[0].write_bytes(data[: len(data) // 2])  # truncated mid-member
    cache = build_cache(str(root), load_preset("tiny"), tmp_path / "cache", progress=False)
    assert cache.manifest["corrupt_members"] >= 1
    assert 0 < cache.manifest["rows"] < 120


def test_pool_names_resolve_through_config_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv("SFCOMP_POOL_SMALL", str(tmp_path))
    assert resolve_pool("small") == str(tmp_path)
    monkeypatch.delenv("SFCOMP_POOL_SMALL")
    monkeypatch.delenv("SFCOMP_DATA", raising=False)
    with pytest.raises(BadInputError, match="SFCOMP_POOL_SMALL"):
        resolve_pool("small")
    with pytest.raises(BadInputError, match="neither a folder nor a known pool name"):
        resolve_pool("nosuchpool")
    assert resolve_pool("demo").endswith("data/demo")


def test_streamed_shards_give_the_cached_embeddings(pool):
    """Full-resolution presets stream shards (decoding in DataLoader workers); same pixels, same embeddings."""
    from sfcomp.data import CachedPoolData
    from sfcomp.model import create_model
    from sfcomp.stream import StreamedPoolData

    preset = load_preset(pool["preset"])
    cached = CachedPoolData(build_cache(pool["root"], preset, progress=False))
    streamed = StreamedPoolData(Pool(pool["root"]), {**preset, "cache": False, "num_workers": 2})
    assert np.array_equal(cached.uids, streamed.uids) and np.array_equal(cached.shard, streamed.shard)
    model, _ = create_model(preset, seed=0)
    rows = np.arange(0, len(cached.uids), 3)
    a = cached.embed(model, rows, preset, progress=False)
    b = streamed.embed(model, rows, preset, progress=False)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)
    np.testing.assert_allclose(a[1], b[1], atol=1e-5)
    streamed.train(model, rows, preset, steps=2, seed=0, progress=False)  # cycles its shards, filter before decode


def test_round_killed_after_its_score_file_resumes_at_selection(pool, tmp_path):
    Loop(pool["root"], tmp_path / "w", config(pool), progress=False).run_round()
    rdir = tmp_path / "w" / "round_00"
    want = (rdir / "next_mix.npy").read_bytes()
    for name in ("done.json", "next_mix.npy", "next_mix.npy.json", "report.json"):
        (rdir / name).unlink()
    for model in rdir.glob("model_f*.pt"):
        model.unlink()  # no longer needed: the score file is complete
    r = Loop(pool["root"], tmp_path / "w", config(pool), progress=False).run_round()
    assert r["resumed_after_scoring"] and (rdir / "next_mix.npy").read_bytes() == want
    assert not list(rdir.glob("model_f*.pt"))


def test_round0_adopted_by_another_mix_matches_training_it(pool, tmp_path):
    """A sweep shares round 0: adopting it gives the same scores and next mix as training it under the new mix."""
    Loop(pool["root"], tmp_path / "a", config(pool, top_frac=0.3, random_frac=0.1), progress=False).run(1)
    own = Loop(pool["root"], tmp_path / "own", config(pool, top_frac=0.5, random_frac=0.0, score="cosine"),
               progress=False)
    own.run(1)
    b = Loop(pool["root"], tmp_path / "b", config(pool, top_frac=0.5, random_frac=0.0, score="cosine"),
             progress=False)
    assert b.adopt_round0(tmp_path / "a") is True
    b.run(2)
    for name in ("next_mix.npy", "mix.npy"):
        assert (tmp_path / "b" / "round_00" / name).read_bytes() == (tmp_path / "own" / "round_00" / name).read_bytes()
    assert np.array_equal(read_scores(tmp_path / "b" / "round_00" / "scores.npy"),
                          read_scores(tmp_path / "own" / "round_00" / "scores.npy"))
    side = read_sidecar(tmp_path / "b" / "round_00" / "scores.npy")
    assert side["default"] == "cosine" and side["fingerprint"] == b.fingerprint
    assert (tmp_path / "b" / "round_00" / "next_mix.npy").read_bytes() != \
        (tmp_path / "a" / "round_00" / "next_mix.npy").read_bytes()
    assert b.adopt_round0(tmp_path / "a") is False  # already has its round 0
    other_seed = Loop(pool["root"], tmp_path / "c", config(pool, seed=1), progress=False)
    with pytest.raises(BadInputError, match=r"other settings \(seed\)"):
        other_seed.adopt_round0(tmp_path / "a")
    assert not (tmp_path / "c").exists()  # the refused run takes back its config.json and the folder it made


def _build_in_child(root: str, preset: str, cache_dir: str) -> str:
    torch.set_num_threads(1)
    return json.dumps(build_cache(root, load_preset(preset), cache_dir, progress=False).manifest, sort_keys=True)


def test_two_runs_building_one_cache_at_once_both_get_it(pool, tmp_path):
    """A sweep starts several runs on one pool: the second builder waits for the first instead of deleting its
    temp files."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(2) as workers:
        a, b = workers.starmap(_build_in_child, [(pool["root"], pool["preset"], str(tmp_path / "c"))] * 2)
    assert a == b and json.loads(a)["corrupt_members"] == 0
    assert np.array_equal(np.asarray(PoolCache.open(tmp_path / "c").uids),
                          U.sort_uids(U.hex_to_uids(sorted(pool["present"]))))


def test_run_defaults_come_from_the_sweep_file_for_library_and_cli():
    from sfcomp.cli.loop_cmds import run_cmd

    data = json.loads((Path(__file__).resolve().parent.parent / "sfcomp" / "configs" / "loop_defaults.json").read_text())
    cfg = LoopConfig()
    cli = {p.name: p.default for p in run_cmd.params}
    for key in ("score", "folds", "top_frac", "random_frac", "round0_frac"):
        assert getattr(cfg, key) == data[key] == cli[key], key
    assert cli["rounds"] == data["rounds"]


def test_the_loop_sets_its_own_steps_unless_the_run_fixes_them():
    # the default is the held-out stopping rule; --steps, --folds 1 and --snapshots each fix the steps
    assert LoopConfig().stop == "heldout"
    assert [LoopConfig(**kw).stop for kw in ({"steps": 5}, {"folds": 1, "score": "cosine"}, {"snapshots": [0.5]})] == \
        ["fixed"] * 3
    assert LoopConfig(steps=5, stop="heldout").stop == "heldout" and LoopConfig(stop="fixed").stop == "fixed"
    assert LoopConfig().loop_settings()["stop"] == "heldout" and "stop" not in LoopConfig(steps=5).loop_settings()


def test_warm_start_continues_each_fold_model_and_scores_every_row_by_its_own_fold(pool, tmp_path):
    """--warm-start: round 0 is the cold run's; round 1's fold models start from round 0's (at lr 0 they stay
    them, so every row's crossfit score repeats round 0's: folds kept, rows outside the mix scored by their own
    fold's model, not the mean)."""
    still = load_preset(pool["preset"])
    still.update(lr=0.0, name="fast-tiny-lr0")
    (tmp_path / "lr0.json").write_text(json.dumps(still))
    lr0 = str(tmp_path / "lr0.json")
    cold = Loop(pool["root"], tmp_path / "cold", LoopConfig(preset=lr0, steps=2), progress=False)
    cold.run(2)
    warm = Loop(pool["root"], tmp_path / "warm", LoopConfig(preset=lr0, steps=2, warm_start=True), progress=False)
    warm.run(2)
    r0, r1 = (read_scores(tmp_path / "warm" / f"round_0{k}" / "scores.npy") for k in (0, 1))
    assert np.array_equal(r0, read_scores(tmp_path / "cold" / "round_00" / "scores.npy"))
    assert np.array_equal(r0["crossfit"], r1["crossfit"]) and np.array_equal(r0["crossfit_z"], r1["crossfit_z"])
    for f in (0, 1):
        a, b = (torch.load(tmp_path / "warm" / f"round_0{k}" / f"model_f{f}.pt", weights_only=True) for k in (0, 1))
        assert all(torch.equal(a[n], b[n]) for n in a)
    # without it, round 1 draws new folds and new models: its scores differ from round 0's
    c1 = read_scores(tmp_path / "cold" / "round_01" / "scores.npy")
    assert not np.array_equal(c1["crossfit"], r0["crossfit"])
    # a setting of the workdir: resuming without it is another configuration; off, the fingerprint is the old one
    with pytest.raises(BadInputError, match="different configuration"):
        Loop(pool["root"], tmp_path / "warm", LoopConfig(preset=lr0, steps=2), progress=False)
    assert "warm_start" not in LoopConfig().loop_settings() and LoopConfig(warm_start=True).loop_settings()["warm_start"]


def test_warm_shrink_starts_each_continued_model_between_the_last_round_and_a_new_one(pool, tmp_path):
    """--warm-shrink L: round 1's fold model starts at L x round 0's weights + (1 - L) x the new model a cold run
    would start from (at lr 0 the models stay where they start, so both are read back from the checkpoints); round 0
    is shared with the plain warm run (--round0-from), which warm_shrink does not change."""
    still = load_preset(pool["preset"])
    still.update(lr=0.0, name="fast-tiny-lr0")
    (tmp_path / "lr0.json").write_text(json.dumps(still))
    lr0 = str(tmp_path / "lr0.json")
    Loop(pool["root"], tmp_path / "cold", LoopConfig(preset=lr0, steps=2), progress=False).run(2)
    Loop(pool["root"], tmp_path / "warm", LoopConfig(preset=lr0, steps=2, warm_start=True), progress=False).run(1)
    shrunk = Loop(pool["root"], tmp_path / "shrunk", LoopConfig(preset=lr0, steps=2, warm_start=True, warm_shrink=0.25),
                  progress=False)
    assert shrunk.adopt_round0(tmp_path / "warm") is True
    shrunk.run(2)
    for f in (0, 1):
        prev, fresh, start = (torch.load(tmp_path / w / f"round_0{k}" / f"model_f{f}.pt", weights_only=True)
                              for w, k in (("warm", 0), ("cold", 1), ("shrunk", 1)))
        assert all(torch.allclose(start[n], 0.25 * prev[n] + 0.75 * fresh[n]) for n in start
                   if start[n].is_floating_point())
        assert any(not torch.equal(start[n], prev[n]) for n in start)
    assert "warm_shrink" not in LoopConfig(warm_start=True).loop_settings()
    assert LoopConfig(warm_start=True, warm_shrink=0.5).loop_settings()["warm_shrink"] == 0.5


def test_warm_lr_trains_the_continued_models_at_a_fraction_of_the_rate_without_warmup(pool, tmp_path):
    """--warm-lr F: from round 1 on, each continued model's training gets F x the preset's lr at its first step (a
    warmup of 1); round 0's models, new ones, keep the preset's schedule, and without --warm-lr so do later rounds."""
    slow = load_preset(pool["preset"])
    slow.update(warmup=3, lr=1e-3, name="fast-tiny-warmup3")
    (tmp_path / "w3.json").write_text(json.dumps(slow))
    seen = {}
    for name, kw in (("plain", {}), ("low", {"warm_lr": 0.3})):
        loop = Loop(pool["root"], tmp_path / name, LoopConfig(preset=str(tmp_path / "w3.json"), steps=2,
                                                              warm_start=True, **kw), progress=False)
        real_train, calls = loop.data.train, []

        def train(model, rows, preset, steps, *args, real_train=real_train, calls=calls, **kwargs):
            calls.append((preset["lr"], preset["warmup"]))
            return real_train(model, rows, preset, steps, *args, **kwargs)

        loop.data.train = train
        loop.run(2)
        seen[name] = calls
    assert seen["plain"] == [(1e-3, 3)] * 4  # 2 rounds x 2 folds
    assert seen["low"][:2] == [(1e-3, 3)] * 2 and seen["low"][2:] == [(pytest.approx(3e-4), 1)] * 2
    assert LoopConfig(warm_start=True, warm_lr=0.3).loop_settings()["warm_lr"] == 0.3
    assert "warm_lr" not in LoopConfig(warm_start=True).loop_settings()


@pytest.mark.parametrize("args, message", [
    (["--warm-shrink", "0.5"], "--warm-shrink needs --warm-start (it shrinks the continued weights)"),
    (["--warm-start", "--warm-shrink", "1.5"], "--warm-shrink must be in [0, 1], got 1.5"),
    (["--warm-start", "--warm-shrink", "nan"], "--warm-shrink must be in [0, 1], got nan"),
    (["--warm-lr", "0.3"], "--warm-lr needs --warm-start (it sets the continued models' rate)"),
    (["--warm-start", "--warm-lr", "0"], "--warm-lr must be in (0, 1] (a fraction of the preset's lr), got 0.0"),
    (["--warm-start", "--warm-lr", "nan"], "--warm-lr must be in (0, 1] (a fraction of the preset's lr), got nan"),
])
def test_a_warm_setting_out_of_range_or_without_warm_start_is_refused_before_any_workdir(pool, tmp_path, args, message):
    r = CliRunner().invoke(cli, ["run", "--pool", pool["root"], "--workdir", str(tmp_path / "w"), "--preset",
                                 pool["preset"], "--rounds", "2", *args, *CLI_ARGS])
    assert (r.exit_code, r.output.strip()) == (2, f"error: {message}") and not (tmp_path / "w").exists()


def test_warm_start_refuses_a_round_whose_previous_models_are_gone(pool, tmp_path):
    Loop(pool["root"], tmp_path / "w", config(pool, warm_start=True), progress=False).run(1)
    (tmp_path / "w" / "round_00" / "model_f1.pt").unlink()
    loop = Loop(pool["root"], tmp_path / "w", config(pool, warm_start=True), progress=False)
    with pytest.raises(BadInputError, match="warm start needs round 0's fold 1 model"):
        loop.run_round()
    assert not (tmp_path / "w" / "round_01").exists()
    r = CliRunner().invoke(cli, ["run", "--pool", pool["root"], "--workdir", str(tmp_path / "w"), "--preset",
                                 pool["preset"], "--rounds", "2", "--warm-start", *CLI_ARGS])
    assert r.exit_code == 2 and not (tmp_path / "w" / "round_01").exists()
    assert r.output.strip() == f"error: {tmp_path / 'w' / 'round_00' / 'model_f1.pt'}: warm start needs round 0's " \
                               "fold 1 model; rerun round 0"


def test_a_run_on_a_workdir_another_run_holds_is_refused_and_deletes_none_of_its_files(pool, tmp_path):
    from sfcomp.workdir import LOCK_FILE

    w = tmp_path / "w"
    args = ["run", "--pool", pool["root"], "--workdir", str(w), "--preset", pool["preset"], *CLI_ARGS]
    assert CliRunner().invoke(cli, [*args, "--rounds", "1"]).exit_code == 0
    assert not (w / LOCK_FILE).exists()  # a run that ended removes its lock file
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sfcomp.workdir import WorkdirLock; "
                               "WorkdirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
                               str(w)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        in_flight = w / "round_01" / ".tmp-scores.npy.abc123"  # the holder's temp file, mid-write
        in_flight.parent.mkdir()
        in_flight.write_bytes(b"partial")
        before = sorted(p.relative_to(w) for p in w.rglob("*"))
        r = CliRunner().invoke(cli, [*args, "--rounds", "2"])
        assert r.exit_code == 2
        assert r.output.strip().startswith(f"error: {w}: workdir in use by another sfcomp run (pid {holder.pid} on ")
        assert len(r.output.strip().splitlines()) == 1
        assert sorted(p.relative_to(w) for p in w.rglob("*")) == before and in_flight.read_bytes() == b"partial"
        with pytest.raises(BadInputError, match="in use by another sfcomp run"):  # the library refuses the same
            Loop(pool["root"], w, config(pool), progress=False).run_round()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock file is left, and the next run takes over, cleans up and finishes
    assert (w / LOCK_FILE).exists()
    assert CliRunner().invoke(cli, [*args, "--rounds", "2"]).exit_code == 0
    assert (w / "round_01" / "done.json").exists() and not in_flight.exists() and not (w / LOCK_FILE).exists()


def test_a_new_workdir_another_run_is_creating_gets_no_config_from_a_refused_run(pool, tmp_path):
    from sfcomp.workdir import LOCK_FILE, WorkdirLock

    w = tmp_path / "w"
    with WorkdirLock(w):  # another run, between making the folder and writing config.json
        with pytest.raises(BadInputError, match="in use by another sfcomp run"):
            Loop(pool["root"], w, config(pool), progress=False)
        assert [p.name for p in w.iterdir()] == [LOCK_FILE]

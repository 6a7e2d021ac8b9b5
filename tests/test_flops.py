"""Compute accounting (sfcomp.flops): FLOPs counted by torch's FlopCounterMode, the report/done/sidecar fields of
a real round, `sfcomp run --budget` and the accounting options' checks."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import _e_harness as H

pytestmark = H.requires_fashion_mnist

STEPS = 2
FINAL_SEEN = 5000


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("flops")
    pool = H.make_pool(root / "pool", n=120, seed=5, samples_per_shard=60)
    preset = H.write_micro_preset(root / "micro.json")
    return {"root": root, "pool": pool, "preset": preset}


def _args(base, work, *extra):
    return ["--pool", base["pool"], "--workdir", work, "--preset", base["preset"], "--cache-dir",
            base["root"] / "cache", "--steps", str(STEPS), "--threads", "1", "--quiet", *extra]


@pytest.fixture(scope="module")
def one_round(base):
    work = base["root"] / "work1"
    code, out, err = H.cli("round", *_args(base, work, "--final-samples-seen", str(FINAL_SEEN)))
    assert code == 0, err
    rd = work / "round_00"
    return {"report": json.loads((rd / "report.json").read_text())["compute"],
            "done": json.loads((rd / "done.json").read_text())["compute"],
            "sidecar": json.loads((work / "final_scores.npy.json").read_text())["compute"], "out": out}


# ---------------------------------------------------------------- the counter
def test_counter_gives_linear_models_analytic_flops_exactly():
    import torch

    from sfcomp.flops import count_flops

    b, n_in, n_out = 3, 8, 4
    lin = torch.nn.Linear(n_in, n_out)
    x = torch.randn(b, n_in)
    # forward x @ W.T (2 b i o) + backward dW (2 b i o); x needs no gradient, so no dX
    assert count_flops(lambda: lin(x).sum().backward()) == 4 * b * n_in * n_out


def test_train_flops_per_sample_is_about_3x_scoring_for_micro():
    from sfcomp.flops import score_flops_per_sample, train_flops_per_sample
    from sfcomp.model import load_preset

    p = load_preset(H.MICRO_PRESET)
    ratio = train_flops_per_sample(p, p["batch_size"]) / score_flops_per_sample(p)
    # backward = 2x forward except the patch embedding (no gradient for the pixels): a little under 3
    assert 2.8 <= ratio <= 3.05, ratio


# ---------------------------------------------------------------- a real round
def test_round_train_flops_are_steps_x_batch_x_per_sample(one_round):
    from sfcomp.flops import train_flops_per_sample
    from sfcomp.model import load_preset

    c = one_round["report"]
    p = load_preset(H.MICRO_PRESET)
    expected = sum(s * b * train_flops_per_sample(p, b) for s, b in zip(c["steps_per_model"], c["batch_per_model"]))
    assert (c["steps_per_model"], c["train_flops"]) == ([STEPS, STEPS], expected)


def test_round_score_flops_are_pool_x_models_x_per_sample(one_round):
    from sfcomp.flops import score_flops_per_sample
    from sfcomp.model import load_preset

    c = one_round["report"]
    assert c["score_flops"] == c["samples_scored"] * score_flops_per_sample(load_preset(H.MICRO_PRESET))


def test_round_cost_ratio_is_loop_flops_over_final_training(one_round):
    from sfcomp.flops import named_model_preset, train_flops_per_sample

    c = one_round["report"]
    final = FINAL_SEEN * train_flops_per_sample(named_model_preset("sfcomp-ViT-tiny", 256), 256)
    assert c["cost_ratio"] == (c["train_flops"] + c["score_flops"]) / final


def test_round_names_the_scale_and_samples_seen(one_round):
    f = one_round["report"]["final_training"]
    assert (f["scale"], f["model"], f["samples_seen"], f["samples_seen_from"]) == \
        ("tiny", "sfcomp-ViT-tiny", FINAL_SEEN, "--final-samples-seen")


def test_done_json_carries_the_reports_compute(one_round):
    assert one_round["done"] == one_round["report"]


def test_final_scores_sidecar_carries_the_run_totals(one_round):
    assert one_round["sidecar"]["run"]["total_flops"] == one_round["report"]["run_so_far"]["total_flops"]


# ---------------------------------------------------------------- --budget
def test_budget_too_small_stops_before_round_1(base, one_round):
    ratio0 = one_round["report"]["cost_ratio"]  # round 0's cost: fits 1.1x of it, round 1 would not even at half
    work = base["root"] / "work_budget"
    code, out, err = H.cli("run", *_args(base, work, "--final-samples-seen", str(FINAL_SEEN), "--rounds", "3",
                                         "--budget", str(1.1 * ratio0)))
    assert (code, "budget: stopped before round 1: even at 1 of its 2 steps a model" in out,
            (work / "round_01").exists()) == (0, True, False), (code, out, err)


BUDGET_STEPS = 8  # room to lower a cap: down to 4


def _budget_args(base, work, stop, *extra):
    return ["--pool", base["pool"], "--workdir", work, "--preset", base["preset"], "--cache-dir",
            base["root"] / "cache", "--steps", str(BUDGET_STEPS), "--stop", stop, "--threads", "1", "--quiet",
            "--final-samples-seen", str(FINAL_SEEN), *extra]


def _open_loop(base, work, stop):
    from sfcomp.loop import Loop, LoopConfig

    cfg = LoopConfig(preset=str(base["preset"]), steps=BUDGET_STEPS, stop=stop, final_samples_seen=FINAL_SEEN)
    return Loop(str(base["pool"]), work, cfg, cache_dir=base["root"] / "cache", progress=False)


@pytest.fixture(scope="module", params=["fixed", "heldout"])
def budget_round0(base, request):
    """Round 0 at 8 steps a model, and the loop's worst-case estimates of round 1 at 4..8 steps."""
    work = base["root"] / f"work_b_{request.param}"
    code, out, err = H.cli("round", *_budget_args(base, work, request.param))
    assert code == 0, err
    loop = _open_loop(base, work, request.param)
    total0 = loop.wd.finished(0)["compute"]["total_flops"]
    est = {s: loop.round_estimate(1, s)["total_flops"] for s in range(4, BUDGET_STEPS + 1)}
    return {"work": work, "stop": request.param, "total0": total0, "est1": est,
            "final": loop.final_training()["flops"]}


def test_budget_lowers_a_rounds_cap_to_fit_and_the_run_stays_within_it(base, budget_round0, tmp_path):
    b = budget_round0
    est = b["est1"]
    assert all(est[s] < est[s + 1] for s in range(4, BUDGET_STEPS)), est  # more steps, more FLOPs at most
    budget = (b["total0"] + (est[6] + est[7]) / 2) / b["final"]  # round 1 fits at 6 steps, not at 7
    work = tmp_path / "w"
    code, out, err = H.cli("run", *_budget_args(base, work, b["stop"], "--rounds", "3", "--budget", str(budget),
                                                "--round0-from", b["work"]))
    assert code == 0, err
    done1 = json.loads((work / "round_01" / "done.json").read_text())
    assert done1["budget_cap"] == {"steps": 6, "cap": BUDGET_STEPS}
    assert json.loads((work / "round_01" / "budget_cap.json").read_text()) == {"steps": 6, "cap": BUDGET_STEPS}
    assert max(done1["compute"]["steps_per_model"]) <= 6 and done1["compute"]["total_flops"] <= est[6]
    if b["stop"] == "heldout":
        assert {s["cap"] for s in done1["stopping"]} == {6}
    assert "budget: round 1's cap lowered from 8 to 6 steps a model to fit --budget" in out
    assert "budget: stopped before round 2" in out and not (work / "round_02").exists()
    assert done1["compute"]["run_so_far"]["total_flops"] <= budget * b["final"]


@pytest.mark.parametrize("share", [0.3, 0.7, 1.0, 1.5])
def test_budget_is_never_exceeded(base, budget_round0, tmp_path, share):
    """Whatever the budget, the finished rounds' FLOPs stay within it (the estimate is a worst case)."""
    b = budget_round0
    budget = (b["total0"] + share * b["est1"][BUDGET_STEPS]) / b["final"]
    work = tmp_path / "w"
    code, out, err = H.cli("run", *_budget_args(base, work, b["stop"], "--rounds", "4", "--budget", str(budget),
                                                "--round0-from", b["work"]))
    assert code == 0, err
    rounds = sorted(work.glob("round_*/done.json"))
    last = json.loads(rounds[-1].read_text())["compute"]["run_so_far"]
    assert last["total_flops"] <= budget * b["final"]
    assert (len(rounds) < 4) == ("budget: stopped before round" in out)


def test_a_resumed_round_keeps_the_cap_the_budget_set(base, budget_round0, tmp_path):
    b = budget_round0
    budget = (b["total0"] + (b["est1"][5] + b["est1"][6]) / 2) / b["final"]  # round 1 at 5 steps
    work = tmp_path / "w"
    args = _budget_args(base, work, b["stop"], "--rounds", "2", "--round0-from", b["work"])
    assert H.cli("run", *args, "--budget", str(budget))[0] == 0
    first = json.loads((work / "round_01" / "done.json").read_text())
    # as if killed before its completion marker: resumed with a looser budget, the round keeps its 5 steps
    (work / "round_01" / "done.json").unlink()
    for ckpt in (work / "round_01").glob("model_f1.pt"):
        ckpt.unlink()
    (work / "round_01" / "scores.npy").unlink()
    code, out, err = H.cli("run", *args, "--budget", str(10 * budget))
    assert code == 0, err
    again = json.loads((work / "round_01" / "done.json").read_text())
    assert again["budget_cap"] == first["budget_cap"] == {"steps": 5, "cap": BUDGET_STEPS}
    assert again["compute"]["steps_per_model"] == first["compute"]["steps_per_model"]


def test_budget_below_round_0_is_refused_and_leaves_nothing(base, one_round, tmp_path):
    ratio0 = one_round["report"]["cost_ratio"]
    work = tmp_path / "work"
    res = H.cli("run", *_args(base, work, "--final-samples-seen", str(FINAL_SEEN), "--budget", str(0.5 * ratio0)))
    H.assert_one_line_error(res, None, "does not fit round 0")
    assert not work.exists()
    # a workdir that existed (a user's folder) is kept, empty as it was
    work.mkdir()
    res = H.cli("run", *_args(base, work, "--final-samples-seen", str(FINAL_SEEN), "--budget", str(0.5 * ratio0)))
    H.assert_one_line_error(res, None, "does not fit round 0")
    assert work.is_dir() and not any(work.iterdir())


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_budget_not_positive_is_refused_before_anything_is_written(base, tmp_path, value):
    res = H.cli("run", *_args(base, tmp_path / "work", "--budget", value))
    H.assert_one_line_error(res, None, "--budget must be > 0")
    assert not (tmp_path / "work").exists()


def test_unknown_scale_is_refused(base, tmp_path):
    res = H.cli("round", *_args(base, tmp_path / "work", "--scale", "huge"))
    H.assert_one_line_error(res, None, "--scale must be one of tiny, small, medium, large, xlarge")


def test_final_samples_seen_with_a_datacomp_scale_is_refused(base, tmp_path):
    res = H.cli("round", *_args(base, tmp_path / "work", "--scale", "small", "--final-samples-seen", "100"))
    H.assert_one_line_error(res, None, "--final-samples-seen applies to the tiny scale only")


def test_run_help_imports_no_torch():
    code = ("import sys; from click.testing import CliRunner; from sfcomp.cli import main; "
            "r = CliRunner().invoke(main, ['run', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_round_started_at_its_full_cap_is_not_lowered_on_resume(base, budget_round0, tmp_path):
    """Killed after fold 0 trained at the full cap, then resumed with a tighter budget: lowering the cap now would
    mix models of two schedules and undercount fold 0, so the loop stops before the round instead."""
    b = budget_round0
    work = tmp_path / "w"
    args = _budget_args(base, work, b["stop"], "--rounds", "2", "--round0-from", b["work"])
    assert H.cli("run", *args)[0] == 0
    for name in ("done.json", "model_f1.pt", "scores.npy"):
        (work / "round_01" / name).unlink()
    budget = (b["total0"] + (b["est1"][6] + b["est1"][7]) / 2) / b["final"]  # would lower a fresh round to 6
    code, out, err = H.cli("run", *args, "--budget", str(budget))
    assert code == 0, err
    assert "budget: stopped before round 1: a killed earlier run started it at 8 of its 8 steps a model" in out
    assert not (work / "round_01" / "done.json").exists() and not (work / "round_01" / "budget_cap.json").exists()
    assert (work / "round_01" / "model_f0.pt").exists()  # kept for a resume with a budget it fits

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
    ratio0 = one_round["report"]["cost_ratio"]  # round 0's cost: fits 1.5x of it, round 1 would not
    work = base["root"] / "work_budget"
    code, out, err = H.cli("run", *_args(base, work, "--final-samples-seen", str(FINAL_SEEN), "--rounds", "3",
                                         "--budget", str(1.5 * ratio0)))
    assert (code, "budget: stopped before round 1" in out, (work / "round_01").exists()) == (0, True, False), \
        (code, out, err)


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


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
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

"""`--stop heldout`: each fold model trains at most the preset's (or --steps) steps and stops when its contrastive
loss on a fixed sample of its held-out fold stops improving (sfcomp.stopping.HeldOutStopping). The decision rule is
tested as a pure function on hand-made curves; the rest drives `sfcomp round` on a 120-sample pool with the
micro preset, a cap of 40 steps and an evaluation every 5 steps.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import _e_harness as H
from sfcomp.train import best_evaluation, clip_loss_of_embeddings, should_stop

CAP, EVERY = 40, 5


# ------------------------------------------------------------------------------------------ the pure rule
def test_stops_after_patience_evaluations_without_improvement():
    assert should_stop([3.0, 2.5, 2.6, 2.7, 2.8], patience=3, min_delta=0.0)


def test_does_not_stop_one_evaluation_short_of_patience():
    assert not should_stop([3.0, 2.5, 2.6, 2.7], patience=3, min_delta=0.0)


def test_an_improvement_resets_the_count():
    assert not should_stop([3.0, 2.9, 2.95, 2.8, 2.85, 2.9], patience=3, min_delta=0.0)


def test_improvements_below_min_delta_do_not_count():
    assert should_stop([3.0, 2.99, 2.98, 2.97], patience=3, min_delta=0.05)


def test_steadily_falling_curve_never_stops():
    assert not should_stop([5.0 - 0.1 * i for i in range(30)], patience=3, min_delta=0.01)


def test_no_evaluation_no_stop():
    assert not should_stop([], patience=1, min_delta=0.0)


def test_best_evaluation_is_the_last_that_improved_by_more_than_min_delta():
    assert best_evaluation([3.0, 2.5, 2.49, 2.7], min_delta=0.05) == 1


def test_clip_loss_of_orthogonal_perfect_pairs_is_near_zero():
    import numpy as np

    e = np.eye(4, dtype=np.float32)
    assert clip_loss_of_embeddings(e, e, 100.0) < 1e-6


# ------------------------------------------------------------------------------------------ real rounds
needs_pool = H.requires_fashion_mnist


def _preset(root: Path, name: str, **keys) -> Path:
    p = json.loads(H.write_micro_preset(root / f"{name}.json").read_text())
    p.update(name=name, stop_eval_every=EVERY, **keys)
    (root / f"{name}.json").write_text(json.dumps(p))
    return root / f"{name}.json"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("stopping")
    pool = H.make_pool(root / "pool", n=120, seed=6, samples_per_shard=60)
    return {"root": root, "pool": pool, "cache": root / "cache"}


def _round(base, workdir: Path, preset: Path, *extra: str):
    return H.cli("round", "--pool", base["pool"], "--workdir", workdir, "--preset", preset, "--cache-dir",
                 base["cache"], "--folds", "2", "--seed", "3", "--threads", "1", "--quiet", *extra)


@pytest.fixture(scope="module")
def heldout(base):
    """One round with the default rule (patience 3, min_delta 1e-3) under a 40-step cap."""
    w = base["root"] / "heldout"
    r = _round(base, w, _preset(base["root"], "micro-stop"), "--steps", str(CAP), "--stop", "heldout")
    assert r[0] == 0, r
    return {"work": w, "done": json.loads((w / "round_00" / "done.json").read_text()),
            "report": json.loads((w / "round_00" / "report.json").read_text())}


def _models(done: dict) -> list[dict]:
    return done["stopping"]


@needs_pool
def test_report_records_each_models_heldout_loss_curve(heldout):
    curves = [m["heldout_curve"] for m in heldout["report"]["stopping"]]
    assert len(curves) == 2 and all(c and all(step % EVERY == 0 for step, _ in c) for c in curves)


@needs_pool
def test_steps_taken_are_within_the_cap(heldout):
    assert all(1 <= m["steps"] <= m["cap"] == CAP for m in _models(heldout["done"]))


@needs_pool
def test_every_model_says_why_it_stopped(heldout):
    assert {m["stop_reason"] for m in _models(heldout["done"])} <= {"cap", "no improvement for 3 evaluations"}


@needs_pool
def test_compute_counts_the_evaluations_at_scoring_flops_per_sample(heldout):
    c = heldout["done"]["compute"]
    evaluated = sum(m["samples_evaluated"] for m in _models(heldout["done"]))
    assert (c["samples_evaluated"], c["eval_flops"]) == (evaluated, evaluated * c["score_flops_per_sample"]) \
        and evaluated > 0


@needs_pool
def test_compute_total_adds_eval_flops(heldout):
    c = heldout["done"]["compute"]
    assert c["total_flops"] == pytest.approx(c["train_flops"] + c["score_flops"] + c["eval_flops"], rel=1e-12)


@needs_pool
def test_train_flops_use_the_steps_taken(heldout):
    c = heldout["done"]["compute"]
    per = c["train_flops_per_sample"]
    expected = sum(m["steps"] * b * per[str(b)] for m, b in zip(_models(heldout["done"]), c["batch_per_model"]))
    assert c["steps_per_model"] == [m["steps"] for m in _models(heldout["done"])] and \
        c["train_flops"] == pytest.approx(expected, rel=1e-12)


@needs_pool
def test_final_scores_sidecar_carries_the_stop_records(heldout):
    side = json.loads((heldout["work"] / "final_scores.npy.json").read_text())
    assert [m["steps"] for m in side["stopping"]["models"]] == [m["steps"] for m in _models(heldout["done"])]


@needs_pool
def test_resume_after_scoring_keeps_the_stop_records(base, heldout, tmp_path):
    import shutil

    w = tmp_path / "w"
    shutil.copytree(heldout["work"], w)
    (w / "round_00" / "done.json").unlink()  # killed after the score file: only selection and report are redone
    r = _round(base, w, base["root"] / "micro-stop.json", "--steps", str(CAP), "--stop", "heldout")
    assert r[0] == 0 and json.loads((w / "round_00" / "done.json").read_text())["stopping"] == \
        _models(heldout["done"])


@needs_pool
def test_stops_before_the_cap_when_nothing_can_improve(base):
    # min_delta 1e9: no loss improves on the first evaluation by more than that, whatever the training does, so
    # the rule fires at the (1 + patience)-th evaluation: step 5 x 3 = 15 of 40, for every model
    w = base["root"] / "early"
    preset = _preset(base["root"], "micro-early", stop_patience=2, stop_min_delta=1e9)
    assert _round(base, w, preset, "--steps", str(CAP), "--stop", "heldout")[0] == 0
    done = json.loads((w / "round_00" / "done.json").read_text())
    assert [(m["steps"], m["stop_reason"]) for m in done["stopping"]] == \
        [(15, "no improvement for 2 evaluations")] * 2


@needs_pool
def test_runs_to_the_cap_when_patience_exceeds_the_evaluations(base):
    # 40 / 5 = 8 evaluations per model: patience 9 can never be reached
    w = base["root"] / "cap"
    preset = _preset(base["root"], "micro-cap", stop_patience=9)
    assert _round(base, w, preset, "--steps", str(CAP), "--stop", "heldout")[0] == 0
    done = json.loads((w / "round_00" / "done.json").read_text())
    assert [(m["steps"], m["stop_reason"], len(m["heldout_curve"])) for m in done["stopping"]] == [(40, "cap", 8)] * 2


@needs_pool
def test_heldout_with_one_fold_is_refused_with_one_line_and_no_files(base, tmp_path):
    r = H.cli("round", "--pool", base["pool"], "--workdir", tmp_path / "w", "--preset",
              _preset(base["root"], "micro-stop"), "--cache-dir", tmp_path / "cache", "--folds", "1", "--stop",
              "heldout", "--quiet")
    H.assert_one_line_error(r, None, "--stop heldout needs --folds >= 2")
    assert H.all_files(tmp_path) == []


@needs_pool
def test_unknown_stop_rule_is_refused_with_one_line(base, tmp_path):
    r = H.cli("round", "--pool", base["pool"], "--workdir", tmp_path / "w", "--preset",
              _preset(base["root"], "micro-stop"), "--cache-dir", tmp_path / "cache", "--stop", "never", "--quiet")
    H.assert_one_line_error(r, None, "--stop must be one of fixed, heldout")


@needs_pool
def test_a_fixed_workdir_refuses_a_heldout_round(base, tmp_path):
    preset = _preset(base["root"], "micro-stop")
    assert _round(base, tmp_path / "w", preset, "--steps", "2")[0] == 0
    r = _round(base, tmp_path / "w", preset, "--steps", "2", "--stop", "heldout", "--round", "0")
    H.assert_one_line_error(r, tmp_path / "w" / "config.json", "different configuration")


@needs_pool
def test_explicit_stop_fixed_writes_the_same_bytes(base, tmp_path):
    preset = _preset(base["root"], "micro-stop")
    a, b = tmp_path / "a", tmp_path / "b"
    assert _round(base, a, preset, "--steps", "3")[0] == 0
    assert _round(base, b, preset, "--steps", "3", "--stop", "fixed")[0] == 0
    same = [(a / n).read_bytes() == (b / n).read_bytes() for n in ("config.json", "round_00/model_f0.pt",
                                                                   "round_00/model_f1.pt")]
    assert H.round_files(a, 1) == H.round_files(b, 1) and all(same)


@needs_pool
def test_two_ranks_take_the_single_process_decisions(base):
    # batch 16: the held-out sample (~50 rows per fold) is 3 batches, split over the ranks (batch i on rank
    # i % 2) and all-gathered; a rank that decided otherwise would leave the other waiting in a collective
    import os
    import subprocess
    import sys

    preset = _preset(base["root"], "micro-ddp", batch_size=16, stop_patience=2, stop_min_delta=1e9)
    one, two = base["root"] / "ddp1", base["root"] / "ddp2"
    args = ["round", "--pool", str(base["pool"]), "--preset", str(preset), "--cache-dir", str(base["cache"]),
            "--folds", "2", "--seed", "3", "--threads", "1", "--quiet", "--steps", str(CAP), "--stop", "heldout"]
    assert H.cli(*args, "--workdir", one)[0] == 0
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(H.free_port()), "-m", "sfcomp", *args,
                        "--workdir", str(two)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = (json.loads((w / "round_00" / "done.json").read_text()) for w in (one, two))
    summary = [[(m["steps"], m["stop_reason"], m["eval_samples"]) for m in d["stopping"]] for d in (a, b)]
    curves = [[loss for m in d["stopping"] for _, loss in m["heldout_curve"]] for d in (a, b)]
    assert b["world_size"] == 2 and summary[0] == summary[1] and summary[0][0][2] == 48 and \
        curves[1] == pytest.approx(curves[0], rel=1e-4)


@needs_pool
def test_bad_stop_key_in_the_preset_is_refused_with_one_line_and_no_files(base, tmp_path):
    preset = _preset(tmp_path, "micro-bad", stop_patience=0)
    r = H.cli("round", "--pool", base["pool"], "--workdir", tmp_path / "w", "--preset", preset, "--cache-dir",
              tmp_path / "cache", "--stop", "heldout", "--quiet")
    H.assert_one_line_error(r, None, "stop_patience must be an integer >= 1, got 0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["micro-bad.json"]


@needs_pool
def test_heldout_with_snapshots_is_refused_with_one_line(base, tmp_path):
    r = H.cli("round", "--pool", base["pool"], "--workdir", tmp_path / "w", "--preset",
              _preset(base["root"], "micro-stop"), "--cache-dir", tmp_path / "cache", "--stop", "heldout",
              "--snapshots", "0.5", "--quiet")
    H.assert_one_line_error(r, None, "--stop heldout cannot take --snapshots")


@needs_pool
def test_round0_from_a_heldout_workdir_keeps_its_stop_records(base, heldout, tmp_path):
    r = H.cli("round", "--pool", base["pool"], "--workdir", tmp_path / "w", "--preset",
              base["root"] / "micro-stop.json", "--cache-dir", base["cache"], "--folds", "2", "--seed", "3",
              "--threads", "1", "--quiet", "--steps", str(CAP), "--stop", "heldout", "--top-frac", "0.5",
              "--round0-from", heldout["work"])
    assert r[0] == 0 and json.loads((tmp_path / "w" / "round_00" / "done.json").read_text())["stopping"] == \
        _models(heldout["done"])


# ------------------------------------------------------------------------------------------ stop_metric: recall
def test_recall_miss_of_perfect_pairs_is_zero():
    import numpy as np

    from sfcomp.train import recall_miss_of_embeddings

    e = np.eye(4)
    assert recall_miss_of_embeddings(e, e) == 0.0


def test_recall_miss_counts_each_direction():
    """Rows 0 and 1 have swapped texts: both directions miss 2 of 4 rows, a miss of 0.5."""
    import numpy as np

    from sfcomp.train import recall_miss_of_embeddings

    img = np.eye(4)
    assert recall_miss_of_embeddings(img, img[[1, 0, 2, 3]]) == 0.5


def test_recall_miss_is_not_fooled_by_a_tie():
    """A text equally close to two images is retrieved by neither."""
    import numpy as np

    from sfcomp.train import recall_miss_of_embeddings

    assert recall_miss_of_embeddings(np.ones((2, 2)) / np.sqrt(2), np.ones((2, 2)) / np.sqrt(2)) == 1.0


def test_the_rule_records_its_metric_rank_by_default():
    from sfcomp.workdir import stop_rule

    assert (stop_rule({"name": "p"})["stop_metric"], stop_rule({"name": "p", "stop_metric": "loss"})["stop_metric"]) \
        == ("rank", "loss")


@needs_pool
def test_unknown_stop_metric_is_one_line_error_and_leaves_nothing(base):
    w = base["root"] / "badmetric"
    p = _preset(base["root"], "micro-badmetric", stop_metric="accuracy")
    r = _round(base, w, p, "--steps", str(CAP), "--stop", "heldout")
    H.assert_one_line_error(r, None, "stop_metric must be one of loss, recall", "'accuracy'")
    assert not w.exists()


@needs_pool
def test_recall_metric_records_its_curve(base):
    w = base["root"] / "recall"
    r = _round(base, w, _preset(base["root"], "micro-recall", stop_metric="recall"), "--steps", str(CAP),
               "--stop", "heldout")
    assert r[0] == 0, r
    models = json.loads((w / "round_00" / "stop_f0.json").read_text())
    curve = models["heldout_curve"]
    assert (models["metric"], all(0.0 <= v <= 1.0 for _, v in curve), len(curve) > 0) == ("recall", True, True)


def test_rank_miss_of_perfect_pairs_is_zero_and_of_ties_one_half():
    import numpy as np

    from sfcomp.train import rank_miss_of_embeddings

    e = np.eye(4)
    assert (rank_miss_of_embeddings(e, e), rank_miss_of_embeddings(np.ones((3, 2)), np.ones((3, 2)))) == (0.0, 0.5)


def test_rank_miss_counts_the_negatives_a_pair_loses_to():
    """Rows 0 and 1 of 4 orthogonal rows have swapped texts: each of them loses to 1 negative and ties 2 (a tie
    counts half: 1 of 3), rows 2 and 3 beat all 3."""
    import numpy as np

    from sfcomp.train import rank_miss_of_embeddings

    img = np.eye(4)
    txt = img[[1, 0, 2, 3]]
    # image->text, row 0: own pair sim 0; negatives: txt1 (=e0) sim 1 (loses), txt2, txt3 sim 0 (ties): 1/3 share
    # rows 2, 3: own sim 1 beats all 3. share = (1 + 1 + 3 + 3) / 12 = 2/3, the same text->image: miss 1/3
    assert abs(rank_miss_of_embeddings(img, txt) - 1 / 3) < 1e-12


def test_stop_ema_is_checked_and_absent_by_default():
    from sfcomp.errors import BadInputError
    from sfcomp.workdir import stop_rule

    assert "stop_ema" not in stop_rule({"name": "p"})  # old presets keep their fingerprints
    assert stop_rule({"name": "p", "stop_ema": 0.9})["stop_ema"] == 0.9
    for bad in (0, 1, 1.5, True, "0.9"):
        with pytest.raises(BadInputError, match="stop_ema must be a number in"):
            stop_rule({"name": "p", "stop_ema": bad})


def test_ema_update_is_the_decayed_average_and_starts_at_the_weights():
    import torch

    from sfcomp.stopping import HeldOutStopping

    rule = object.__new__(HeldOutStopping)  # update_ema reads only these two
    rule.ema, rule.ema_decay = None, 0.75
    model = torch.nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    rule.update_ema(model)
    assert torch.equal(rule.ema.weight, w0) and not rule.ema.weight.requires_grad
    with torch.no_grad():
        model.weight.add_(4.0)
    rule.update_ema(model)
    assert torch.allclose(rule.ema.weight, 0.75 * w0 + 0.25 * (w0 + 4.0))
    assert torch.equal(model.weight, w0 + 4.0)  # the model itself is untouched


@needs_pool
def test_ema_rule_records_its_decay_and_keeps_the_best_evaluation(base):
    w = base["root"] / "ema"
    r = _round(base, w, _preset(base["root"], "micro-ema", stop_ema=0.8), "--steps", str(CAP), "--stop", "heldout")
    assert r[0] == 0, r
    for f in (0, 1):
        rec = json.loads((w / "round_00" / f"stop_f{f}.json").read_text())
        assert (rec["ema"], rec["kept"], rec["steps"] <= CAP) == (0.8, "best evaluation", True)
        assert rec["best_step"] in [s for s, _ in rec["heldout_curve"]]
    assert json.loads((w / "config.json").read_text())["loop"]["stop_rule"]["stop_ema"] == 0.8

"""A score type is one function plus one registry line (sfcomp/scoretypes.py): a toy type defined here, registered,
and run end to end through the CLI (`sfcomp round --score negcos`, in this process so the registration is seen).
The registry is what LoopConfig, the `--score` choices and the sweep read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import _e_harness as H
from sfcomp.crossfit import crossfit_score, derive_seed
from sfcomp.scoretypes import SCORE_TYPES, ModelCosines, ScoreType

pytestmark = H.requires_fashion_mnist


def negcos(c: ModelCosines) -> np.ndarray:
    """The toy: minus the cross-fitted score (selects the pairs the models find least aligned)."""
    return -crossfit_score(c.cos, c.fold)


NEGCOS = ScoreType("negcos", "minus the cross-fitted cosine (a test's toy)", negcos, min_folds=2)


@pytest.fixture(scope="module")
def toy():
    """negcos registered for this module's tests only (the registry is process-wide)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(SCORE_TYPES, "negcos", NEGCOS)
        yield NEGCOS


@pytest.fixture(scope="module")
def toy_round(toy, tmp_path_factory):
    root = tmp_path_factory.mktemp("toyscore")
    pool = H.make_pool(root / "pool", n=120, seed=5, samples_per_shard=60)
    preset = H.write_micro_preset(root / "micro.json")
    work = root / "work"
    code, out, err = H.cli(*H.loop_cmd("round", pool, work, preset, root / "cache", "--score", "negcos"))
    assert code == 0, err
    return {"root": root, "work": work, "round": work / "round_00"}


def test_the_score_file_holds_the_toy_field_after_the_built_in_ones(toy_round):
    from sfcomp.scorefile import score_fields

    assert score_fields(toy_round["round"] / "scores.npy") == ["crossfit", "cosine", "crossfit_z", "negcos"]


def test_the_toy_field_is_its_function_of_the_models_cosines(toy_round):
    from sfcomp.scorefile import read_scores

    arr = read_scores(toy_round["round"] / "scores.npy", mmap=False)
    assert (arr["negcos"] == -arr["crossfit"]).all()


def test_the_toy_field_is_the_score_files_default(toy_round):
    from sfcomp.scorefile import default_field

    assert default_field(toy_round["round"] / "scores.npy") == "negcos"


def _export(scores: Path, field: str, out: Path) -> bytes:
    # the round's own selection rule: top 0.5 + random 0.1 (H.LOOP_ARGS), seed of round 0's selection
    code, _, err = H.cli("export-subset", "--scores", scores, "--field", field, "--top-frac", "0.5",
                         "--random-frac", "0.1", "--seed", derive_seed(3, "select", 0), "-o", out)
    assert code == 0, err
    return out.read_bytes()


def test_the_next_mix_follows_the_toy_score(toy_round, tmp_path):
    expected = _export(toy_round["round"] / "scores.npy", "negcos", tmp_path / "by_negcos.npy")
    assert (toy_round["round"] / "next_mix.npy").read_bytes() == expected


def test_the_toy_selects_another_mix_than_crossfit(toy_round, tmp_path):
    by_crossfit = _export(toy_round["round"] / "scores.npy", "crossfit", tmp_path / "by_crossfit.npy")
    assert (toy_round["round"] / "next_mix.npy").read_bytes() != by_crossfit


def test_the_score_option_lists_the_registered_toy(toy):
    code, out, _ = H.cli("run", "--help")
    assert "[crossfit|cosine|ckpt_avg|crossfit_z|negcos]" in out


def test_the_toy_is_refused_where_it_is_not_available(toy, tmp_path):
    # min_folds=2: with one model there is no cross-fitted score to negate
    H.assert_one_line_error(H.cli("round", "--pool", tmp_path / "pool", "--workdir", tmp_path / "work",
                                  "--score", "negcos", "--folds", "1"), None,
                            "score 'negcos' is not computed with folds=1", "available: cosine")


def test_an_unregistered_score_is_not_a_choice(tmp_path, monkeypatch):
    monkeypatch.delitem(SCORE_TYPES, "negcos", raising=False)
    code, _, err = H.cli("round", "--pool", tmp_path / "pool", "--workdir", tmp_path / "work", "--score", "negcos")
    assert code == 2 and "'negcos' is not one of 'crossfit', 'cosine', 'ckpt_avg'" in err


def test_the_sweep_runs_every_registered_score_type_by_default(toy):
    from test_bench_tools import parse_args

    assert parse_args(["--pool", "x"]).scores == "crossfit,cosine,ckpt_avg,crossfit_z,negcos"


# ------------------------------------------------------------------------------------------ one top-fraction rule
def _top_count(scores: Path, field: str, tmp_path: Path) -> int:
    import json

    code, _, err = H.cli("export-subset", "--scores", scores, "--field", field, "--top-frac", "0.5", "-o",
                         tmp_path / "top.npy")
    assert code == 0, err
    return json.loads((tmp_path / "top.npy.json").read_text())["counts"]["top"]


def test_the_reports_top_fraction_is_the_exports(toy_round, tmp_path):
    import json

    report = json.loads((toy_round["round"] / "report.json").read_text())
    assert report["top_k"]["crossfit"]["selected"] == _top_count(toy_round["round"] / "scores.npy", "crossfit",
                                                                 tmp_path)


def test_the_sweeps_top_fraction_is_the_exports(toy_round, tmp_path):
    from test_bench_tools import _sweep

    scores = toy_round["round"] / "scores.npy"
    m = _sweep.measure(scores, "crossfit", _sweep.load_truth(toy_round["root"] / "pool"), 0.5)
    assert m["k"] == _top_count(scores, "crossfit", tmp_path)

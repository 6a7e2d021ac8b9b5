"""Arguments and small inputs checked before anything is written (issue 11, items 4, 5, 6, 11 and part of 12).

Every refused command: exit 2, one line `error: FILE: problem` (or `error: problem` naming the option), and no
workdir, cache folder or output left behind, so the corrected rerun just works.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import _e_harness as H
from sfcomp import uids as U

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("args")
    pool = H.make_pool(root / "pool", n=120, seed=5, samples_per_shard=60)
    preset = H.write_micro_preset(root / "micro.json")
    from sfcomp.pool import Pool

    uids = U.sort_uids(Pool(pool).metadata_uids())
    return {"root": root, "pool": pool, "preset": preset, "uids": uids}


def _loop(base, tmp_path, command, *extra, workdir=None):
    return H.cli(command, "--pool", base["pool"], "--workdir", workdir or tmp_path / "work", "--preset",
                 base["preset"], "--cache-dir", tmp_path / "cache", "--threads", "1", "--quiet", *extra)


def _nothing_written(tmp_path) -> None:
    for name in ("work", "cache"):
        assert not (tmp_path / name).exists(), f"{name} exists after a refused run: {H.all_files(tmp_path / name)}"


def _scores(base, tmp_path) -> Path:
    u = base["uids"]
    return H.write_score_file(tmp_path / "scores.npy", u, np.linspace(0, 1, len(u)).astype(np.float32))


# ------------------------------------------------------------------------------------------ item 4: empty selections
@pytest.mark.parametrize("path_opt", ["--in-memory", "--streaming"])
@pytest.mark.parametrize("rule,why", [(["--threshold", "9.0"], "threshold 9.0 is above every score"),
                                      (["--top-k", "0"], "top-k is 0")])
def test_export_of_an_empty_selection_is_refused(base, tmp_path, path_opt, rule, why):
    scores = _scores(base, tmp_path)
    out = tmp_path / "out" / "s.npy"
    r = H.cli("export-subset", "--scores", scores, *rule, path_opt, "-o", out)
    H.assert_one_line_error(r, scores, f"selection is empty ({why})", "--allow-empty")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path_opt", ["--in-memory", "--streaming"])
def test_export_of_a_random_part_that_rounds_to_zero_is_an_empty_selection(base, tmp_path, path_opt):
    scores = _scores(base, tmp_path)
    r = H.cli("export-subset", "--scores", scores, "--random-frac", "0.001", path_opt, "-o", tmp_path / "s.npy")
    H.assert_one_line_error(r, scores, "selection is empty (random fraction 0.001 of 120 samples", "--allow-empty")


@pytest.mark.parametrize("path_opt", ["--in-memory", "--streaming"])
def test_export_allow_empty_writes_an_empty_subset(base, tmp_path, path_opt):
    scores = _scores(base, tmp_path)
    out = tmp_path / "s.npy"
    code, _, err = H.cli("export-subset", "--scores", scores, "--threshold", "9.0", path_opt, "--allow-empty",
                         "-o", out)
    assert (code, len(np.load(out)) if out.exists() else None) == (0, 0), err


def test_baseline_empty_selection_is_refused_with_the_shared_rule(base, tmp_path):
    out = tmp_path / "b.npy"
    r = H.cli("baseline", "clip_score", "--metadata-dir", base["pool"] / "metadata", "--save-path", out,
              "--arch", "b32", "--threshold", "9.0", "--num-workers", "1")
    H.assert_one_line_error(r, out, "selection is empty (clip_score kept 0 of 120 rows)", "--allow-empty")
    assert not out.exists()


def test_baseline_allow_empty_writes_an_empty_subset(base, tmp_path):
    out = tmp_path / "b.npy"
    code, _, err = H.cli("baseline", "clip_score", "--metadata-dir", base["pool"] / "metadata", "--save-path", out,
                         "--arch", "b32", "--threshold", "9.0", "--num-workers", "1", "--allow-empty")
    assert (code, len(np.load(out)) if out.exists() else None) == (0, 0), err


def _empty_subset(tmp_path) -> Path:
    path = tmp_path / "empty.npy"
    np.save(path, np.empty(0, U.UID_DTYPE))
    return path


def test_validate_subset_refuses_an_empty_subset(tmp_path):
    path = _empty_subset(tmp_path)
    H.assert_one_line_error(H.cli("validate-subset", path), path, "subset is empty", "--allow-empty")


def test_validate_subset_allow_empty_accepts_it(tmp_path):
    path = _empty_subset(tmp_path)
    code, out, err = H.cli("validate-subset", path, "--allow-empty")
    assert (code, out.startswith(f"ok: {path}: requested 0")) == (0, True), err


def test_reshard_refuses_an_empty_subset(base, tmp_path):
    path = _empty_subset(tmp_path)
    out = tmp_path / "resharded"
    r = H.cli("reshard", "-i", base["pool"], "-s", path, "-o", out)
    H.assert_one_line_error(r, path, "subset is empty", "--allow-empty")
    assert not out.exists()


def test_reshard_allow_empty_reshards_nothing(base, tmp_path):
    path = _empty_subset(tmp_path)
    out = tmp_path / "resharded"
    code, _, err = H.cli("reshard", "-i", base["pool"], "-s", path, "-o", out, "--allow-empty", "--json")
    assert code == 0, err


# ------------------------------------------------------------------------------------------ item 5: counts >= 1
@pytest.mark.parametrize("option,value", [("--steps", "0"), ("--steps", "-3"), ("--rounds", "0"),
                                          ("--rounds", "-1"), ("--folds", "0"), ("--folds", "-2")])
def test_run_with_a_count_below_one_is_refused_up_front(base, tmp_path, option, value):
    extra = [option, value] if option == "--steps" else ["--steps", "1", option, value]
    H.assert_one_line_error(_loop(base, tmp_path, "run", *extra), None, f"{option} must be ", f", got {value}")
    _nothing_written(tmp_path)


def test_more_folds_than_the_cap_is_refused_up_front(base, tmp_path):
    # each fold trains and saves a model: 100000 folds used to run, writing 32 MB a fold until the disk filled
    r = _loop(base, tmp_path, "run", "--steps", "1", "--folds", "100000")
    H.assert_one_line_error(r, None, "--folds must be between 1 and 32, got 100000")
    _nothing_written(tmp_path)


def test_more_rounds_than_the_cap_is_refused_up_front(base, tmp_path):
    # each round saves its models and a score file of the pool: 100000 rounds ran until the budget or the disk
    r = _loop(base, tmp_path, "run", "--steps", "1", "--rounds", "100000")
    H.assert_one_line_error(r, None, "--rounds must be between 1 and 100, got 100000")
    _nothing_written(tmp_path)


def test_run_refused_for_steps_then_corrected_rerun_works(base, tmp_path):
    assert _loop(base, tmp_path, "run", "--steps", "0", "--rounds", "1")[0] == 2
    code, _, err = _loop(base, tmp_path, "run", "--steps", "1", "--rounds", "1")
    assert (code, (tmp_path / "work" / "final_scores.npy").exists()) == (0, True), err


# ------------------------------------------------------------------------------------------ item 6 / 11: every argument
@pytest.mark.parametrize("extra,fragments", [
    (["--snapshots", "abc"], ["--snapshots", "'abc' is not a number"]),
    (["--threads", "-1"], ["'--threads': -1 is not in the range 1<=x<="]),
    (["--threads", "0"], ["'--threads': 0 is not in the range 1<=x<="]),
    (["--threads", "100000"], ["'--threads': 100000 is not in the range 1<=x<="]),  # used to segfault
    (["--cache-workers", "0"], ["'--cache-workers': 0 is not in the range 1<=x<="]),
    (["--top-frac", "1.5"], ["--top-frac must be in (0, 1], got 1.5"]),
    (["--device", "bogus"], ["--device 'bogus'"]),
    (["--device", "cuda:99"], ["--device 'cuda:99'"]),
    (["--round", "-1"], ["--round must be >= 0, got -1"]),
    (["--round", "3"], ["--round 3", "round 2 is not finished"]),
    (["--train-shards", "99999999"], ["--train-shards", "99999999", "00000000"]),
    (["--train-shards", ""], ["--train-shards '' names no shard"]),
    (["--train-shards", "00000000,00000000"], ["--train-shards names 00000000 more than once"]),
    (["--round0-frac", "0.001"], ["--round0-frac 0.001", "= 0 samples"]),
])
def test_round_argument_is_refused_before_anything_is_written(base, tmp_path, extra, fragments):
    H.assert_one_line_error(_loop(base, tmp_path, "round", "--steps", "1", *extra), None, *fragments)
    _nothing_written(tmp_path)


def test_refused_train_shards_then_corrected_rerun_works(base, tmp_path):
    assert _loop(base, tmp_path, "run", "--steps", "1", "--rounds", "1", "--train-shards", "99999999")[0] == 2
    code, _, err = _loop(base, tmp_path, "run", "--steps", "1", "--rounds", "1", "--train-shards", "00000000")
    assert code == 0, err


@pytest.mark.parametrize("command", ["round", "run"])
def test_train_shards_naming_only_an_empty_shard_is_refused_and_the_rerun_works(base, tmp_path, command):
    # an audit (2026-12-04) found such a run left config.json and an empty round_00/, which then refused the
    # corrected rerun as "a different configuration"; the cache it built (the pool's, valid) is kept for the rerun
    import shutil
    import tarfile

    pool = tmp_path / "pool"
    shutil.copytree(base["pool"], pool)
    tarfile.open(pool / "shards" / "00000002.tar", "w").close()
    args = ("--pool", pool, "--workdir", tmp_path / "work", "--preset", base["preset"], "--cache-dir",
            tmp_path / "cache", "--threads", "1", "--quiet", "--steps", "1")
    more = ("--rounds", "1") if command == "run" else ()
    r = H.cli(command, *args, *more, "--train-shards", "00000002")
    H.assert_one_line_error(r, None, "--train-shards 00000002 hold none of the pool's samples")
    assert not (tmp_path / "work").exists()
    code, _, err = H.cli(command, *args, *more, "--train-shards", "00000000")
    assert code == 0, err


@pytest.mark.parametrize("seed,fragment", [
    (3, "round's training mix is empty: none of its 1 samples is in --train-shards 00000000"),
    (0, "round's training mix of 1 sample lies in one fold: that fold's model would train on nothing (--folds 2"),
])
def test_a_round_0_mix_no_model_can_train_on_is_refused_and_leaves_no_workdir(base, tmp_path, seed, fragment):
    # --round0-frac 0.01 draws one sample of the whole pool: with seed 3 it is not in shard 00000000; with seed 0
    # it is, and it lies in one of the two folds (the other fold's model used to stop with a ValueError traceback)
    r = _loop(base, tmp_path, "round", "--steps", "1", "--round0-frac", "0.01", "--seed", str(seed),
              "--train-shards", "00000000")
    H.assert_one_line_error(r, tmp_path / "work" / "round_00", fragment)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("content,problem", [("{not json", "not JSON"), ("[1, 2]", "not a JSON object")])
def test_corrupt_config_json_in_the_workdir_is_one_line(base, tmp_path, content, problem):
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.json").write_text(content)
    r = _loop(base, tmp_path, "round", "--steps", "1")
    H.assert_one_line_error(r, work / "config.json", problem)
    assert (H.all_files(work), (tmp_path / "cache").exists()) == (["config.json"], False)


@pytest.mark.parametrize("content,problem", [("{oops", "not JSON"), ('["demo"]', "not a JSON object"),
                                             ('{"demo": 3}', "expected a path string"),
                                             (None, "unreadable"), ("missing", "does not exist")])
def test_malformed_pools_config_is_one_line(tmp_path, monkeypatch, content, problem):
    cfg = tmp_path / "pools.json"
    if content is None:
        cfg.mkdir()  # a folder: unreadable as a file
    elif content != "missing":
        cfg.write_text(content)
    monkeypatch.setenv("SFCOMP_POOLS_CONFIG", str(cfg))
    r = H.cli("round", "--pool", "demo", "--workdir", tmp_path / "work", "--cache-dir", tmp_path / "cache",
              "--steps", "1", "--quiet")
    H.assert_one_line_error(r, cfg, problem)
    _nothing_written(tmp_path)


@pytest.mark.parametrize("content,problem", [("[1, 2, 3]", "not a JSON object (got an array)"),
                                             ("null", "not a JSON object (got null)")])
def test_score_sidecar_that_is_not_a_json_object_is_one_line(base, tmp_path, content, problem):
    scores = _scores(base, tmp_path)
    side = Path(f"{scores}.json")
    side.write_text(content)
    r = H.cli("export-subset", "--scores", scores, "--top-frac", "0.3", "-o", tmp_path / "out" / "s.npy")
    H.assert_one_line_error(r, side, problem)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ item 12: readers
def test_subset_npy_with_trailing_bytes_is_refused(base, tmp_path):
    path = tmp_path / "sub.npy"
    np.save(path, base["uids"][:10])
    with open(path, "ab") as f:
        f.write(b"garbage!")
    H.assert_one_line_error(H.cli("validate-subset", path), path, "8 trailing bytes after the array")


def test_score_npy_with_trailing_bytes_is_refused(base, tmp_path):
    scores = _scores(base, tmp_path)
    with open(scores, "ab") as f:
        f.write(b"x" * 5)
    r = H.cli("export-subset", "--scores", scores, "--top-frac", "0.3", "-o", tmp_path / "out" / "s.npy")
    H.assert_one_line_error(r, scores, "5 trailing bytes after the array")
    assert not (tmp_path / "out").exists()


def test_a_pickled_object_array_is_not_a_score_file(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"uid": "a"}, None], dtype=object), allow_pickle=True)
    r = H.cli("export-subset", "--scores", path, "--top-k", "1", "-o", tmp_path / "out" / "s.npy")
    H.assert_one_line_error(r, path, "holds Python objects")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lines", [16, 10])  # 16 lines of 33 bytes: a multiple of 16, read as a raw memmap before
def test_text_file_of_hex_uids_is_named_for_what_it_is(base, tmp_path, lines):
    path = tmp_path / "uids.txt"
    path.write_text("".join(f"{u}\n" for u in U.uids_to_hex(base["uids"][:lines])))
    H.assert_one_line_error(H.cli("validate-subset", path), path, "looks like a text file of hex uids",
                            "not a .npy subset", "convert it")


def test_round_index_minus_one_leaves_no_round_folder(base, tmp_path):
    _loop(base, tmp_path, "round", "--steps", "1", "--round", "-1")
    assert not (tmp_path / "work" / "round_-1").exists()


def test_library_round_index_minus_one_is_refused_before_the_round_folder(base, tmp_path):
    """The library path too (Loop.run_round), not only the CLI's pre-check."""
    from sfcomp.errors import BadInputError
    from sfcomp.loop import Loop, LoopConfig

    loop = Loop(str(base["pool"]), tmp_path / "work", LoopConfig(preset=str(base["preset"]), steps=1),
                cache_dir=str(tmp_path / "cache"), device="cpu", progress=False)
    with pytest.raises(BadInputError, match=r"--round must be >= 0, got -1"):
        loop.run_round(-1)
    assert not (tmp_path / "work" / "round_-1").exists()

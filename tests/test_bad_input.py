"""Bad input through the CLI, where a user meets it: exit code 2, exactly one line on stderr
`error: <file>: <problem>`, and no output (nor temp file) left behind.

The library-level checks are tested beside their code (test_uids, test_pool, test_validate, test_select,
test_scorefile, test_streaming_select); this file drives the commands: `sfcomp round`/`run` on broken pools and
workdirs, `export-subset` on broken score files and rules, `reshard` on broken subsets, `baseline` on a broken npz.
Table of results: docs/RELIABILITY.md.
"""
from __future__ import annotations

import glob
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import _e_harness as H
from sfcomp import uids as U

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("badin")
    pool = H.make_pool(root / "pool", n=120, seed=4, samples_per_shard=60)
    preset = H.write_micro_preset(root / "micro.json")
    return {"root": root, "pool": pool, "preset": preset}


def _copy_pool(base, tmp_path) -> Path:
    dst = tmp_path / "pool"
    shutil.copytree(base["pool"], dst)
    return dst


def _parquets(pool: Path) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(str(pool / "metadata" / "*.parquet")))]


def _set_uid(parquet: Path, row: int, value: str) -> None:
    t = pq.read_table(parquet)
    uids = t.column("uid").to_pylist()
    uids[row] = value
    pq.write_table(t.set_column(t.schema.get_field_index("uid"), "uid", pa.array(uids, pa.string())), parquet)


def _round(base, pool, tmp_path, *extra):
    return H.cli("round", "--pool", pool, "--workdir", tmp_path / "work", "--preset", base["preset"],
                 "--cache-dir", tmp_path / "cache", "--steps", "1", "--quiet", *extra)


def _no_files(*dirs: Path) -> None:
    for d in dirs:
        assert H.all_files(d) == [], f"{d} holds {H.all_files(d)} after a refused run"


# ------------------------------------------------------------------------------------------ pools
@pytest.mark.parametrize("value,problem", [
    ("abc", "malformed uid at row 3"),  # short
    ("0123456789abcdef0123456789abcdef0", "malformed uid at row 3"),  # long
    ("0123456789ABCDEF0123456789ABCDEF", "lower-case hex"),  # upper-case
    ("0123456789abcdefg123456789abcdef", "lower-case hex"),  # not hex
])
def test_round_on_metadata_with_a_bad_uid(base, tmp_path, value, problem):
    pool = _copy_pool(base, tmp_path)
    bad = _parquets(pool)[1]
    _set_uid(bad, 3, value)
    H.assert_one_line_error(_round(base, pool, tmp_path), bad, problem)
    assert H.all_files(tmp_path / "cache") == []


def test_round_on_a_truncated_parquet(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    bad = _parquets(pool)[0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    H.assert_one_line_error(_round(base, pool, tmp_path), bad, "unreadable parquet")
    assert H.all_files(tmp_path / "cache") == []


def test_round_on_metadata_with_a_duplicate_uid(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    first, second = _parquets(pool)
    dup = pq.read_table(first).column("uid")[3].as_py()
    _set_uid(second, 5, dup)
    # refused when the pool is opened, before any training (--train-shards naming no shard used to stop the round
    # there; it is now refused before the pool is read, see tests/test_arguments.py)
    r = _round(base, pool, tmp_path)
    H.assert_one_line_error(r, None, "duplicate uid", dup)


def test_refused_round_leaves_no_workdir_behind(base, tmp_path):
    pool = _copy_pool(base, tmp_path)
    bad = _parquets(pool)[1]
    good = bad.read_bytes()
    _set_uid(bad, 3, "abc")
    assert _round(base, pool, tmp_path)[0] == 2
    _no_files(tmp_path / "work")
    bad.write_bytes(good)  # the user repairs the pool and runs again in the same workdir
    code, out, err = _round(base, pool, tmp_path)
    assert code == 0, err


def test_empty_pools(base, tmp_path):
    # no metadata at all
    empty = tmp_path / "empty"
    (empty / "metadata").mkdir(parents=True)
    (empty / "shards").mkdir()
    H.assert_one_line_error(_round(base, empty, tmp_path), empty / "metadata", "no .parquet files (empty pool)")
    # metadata but no shards downloaded
    noshards = tmp_path / "noshards"
    shutil.copytree(base["pool"] / "metadata", noshards / "metadata")
    (noshards / "shards").mkdir()
    H.assert_one_line_error(_round(base, noshards, tmp_path), noshards / "shards", "no .tar shards (empty pool)")
    # metadata files that hold a schema and no rows (found by an audit, 2026-12-04: the run wrote config.json and
    # an empty round_00/, and that workdir then refused the repaired pool's rerun as "a different configuration")
    zero = tmp_path / "zero"
    shutil.copytree(base["pool"], zero)
    for p in _parquets(zero):
        pq.write_table(pq.read_table(p).slice(0, 0), p)
    for command in ("round", "run"):
        r = H.cli(command, "--pool", zero, "--workdir", tmp_path / "work", "--preset", base["preset"],
                  "--cache-dir", tmp_path / "cache", "--steps", "1", "--quiet")
        H.assert_one_line_error(r, zero / "metadata", f"the pool has no rows (its {len(_parquets(zero))} metadata "
                                                      "files are empty)")
        assert not (tmp_path / "work").exists()
    # a pool folder that does not exist
    H.assert_one_line_error(_round(base, tmp_path / "nowhere" / "pool", tmp_path),
                            tmp_path / "nowhere" / "pool" / "metadata", "does not exist")
    _no_files(tmp_path / "cache")


def test_pool_name_that_is_not_configured(base, tmp_path):
    H.assert_one_line_error(_round(base, "nosuchpool", tmp_path), None, "--pool 'nosuchpool'",
                            "known pool name")
    _no_files(tmp_path / "work", tmp_path / "cache")


@pytest.mark.parametrize("option,value", [("--top-frac", "0"), ("--top-frac", "1.5"), ("--round0-frac", "0"),
                                          ("--round0-frac", "-0.2"), ("--random-frac", "1.5")])
def test_round_fraction_outside_unit_interval(base, tmp_path, option, value):
    H.assert_one_line_error(_round(base, base["pool"], tmp_path, option, value), None, f"{option} must be in",
                            value)
    _no_files(tmp_path / "work", tmp_path / "cache")


def test_npz_with_the_wrong_row_count(base, tmp_path):
    """`sfcomp baseline image_based` reads the L/14 image embeddings from the npz beside each parquet."""
    pool = _copy_pool(base, tmp_path)
    npz = _parquets(pool)[0].with_suffix(".npz")
    arrays = dict(np.load(npz))
    np.savez(npz, **{k: v[:-1] for k, v in arrays.items()})
    rng = np.random.default_rng(0)
    np.save(tmp_path / "targets.npy", rng.standard_normal((5, 768)).astype(np.float32))
    np.save(tmp_path / "centroids.npy", rng.standard_normal((4, 768)).astype(np.float32))
    out = tmp_path / "out" / "image_based.npy"
    n = len(arrays["l14_img"])
    r = H.cli("baseline", "image_based", "--metadata-dir", pool / "metadata", "--save-path", out,
              "--image-based-targets", tmp_path / "targets.npy", "--centroids", tmp_path / "centroids.npy",
              "--num-workers", "1")
    H.assert_one_line_error(r, npz, f"npz array 'l14_img' has {n - 1} rows but its parquet has {n}")
    _no_files(tmp_path / "out")


def test_round_whose_model_diverges_refuses_nan_scores(base, tmp_path):
    """A learning rate of 1e12 drives the in-loop model to NaN: the round stops at its score file with one line,
    and writes neither scores nor a mix nor a completion marker."""
    preset = tmp_path / "diverge.json"
    preset.write_text(json.dumps({**H.MICRO_PRESET, "name": "diverge", "lr": 1e12}))
    work = tmp_path / "work"
    r = H.run_cli(["round", "--pool", base["pool"], "--workdir", work, "--preset", preset, "--cache-dir",
                   tmp_path / "cache", "--steps", "3", "--threads", "1", "--quiet"], tmp_path / "logs")
    H.assert_one_line_error((r.code, r.out, r.err), work / "round_00" / "scores.npy", "non-finite (NaN/inf)")
    left = H.all_files(work / "round_00")
    assert not {"scores.npy", "scores.npy.json", "next_mix.npy", "done.json"} & set(left), left
    assert H.stray_files(work) == []


def test_one_cache_root_for_two_pools_never_mixes_them(base, tmp_path):
    other = H.make_pool(tmp_path / "other", n=90, seed=9, samples_per_shard=45)
    env = {"SFCOMP_CACHE_DIR": str(tmp_path / "caches")}
    for pool, work in ((base["pool"], tmp_path / "wa"), (other, tmp_path / "wb")):
        r = H.run_cli(["round", "--pool", pool, "--workdir", work, "--preset", base["preset"], "--steps", "1",
                       "--threads", "1", "--quiet"], tmp_path / "logs", env=env)
        assert r.code == 0, r  # each pool gets its own folder under the shared root
    from sfcomp.pool import Pool

    scored = np.load(tmp_path / "wb" / "round_00" / "scores.npy")[["f0", "f1"]].astype(U.UID_DTYPE)
    present = U.sort_uids(Pool(other).present_uids())
    assert np.array_equal(U.sort_uids(scored), present), "pool B's round scored other samples than pool B's"


# ------------------------------------------------------------------------------------------ workdirs
@pytest.fixture(scope="module")
def finished(base):
    """A workdir with one finished round (real run, in a child process)."""
    root = base["root"]
    cmd = ["round", "--pool", base["pool"], "--workdir", root / "work", "--preset", base["preset"],
           "--cache-dir", root / "cache", "--steps", "1", "--threads", "1", "--quiet"]
    r = H.run_cli(cmd, root / "logs")
    assert r.code == 0, r
    return root / "work"


def _snapshot(d: Path) -> dict:
    return {p: (d / p).read_bytes() for p in H.all_files(d)}


@pytest.mark.parametrize("change,differs", [
    (["--seed", "1"], "differs: loop"),
    (["--top-frac", "0.5"], "differs: loop"),
    (["--folds", "3"], "differs: loop"),
    (["--preset", "tiny"], "differs: preset"),
    (["--pool", "OTHER"], "differs: pool"),
])
def test_workdir_of_another_configuration_is_refused(base, finished, tmp_path, change, differs):
    before = _snapshot(finished)
    args = {"--pool": str(base["pool"]), "--preset": str(base["preset"]), "--seed": "0", "--top-frac": "0.3",
            "--folds": "2"}
    if change[0] == "--pool":
        other = H.make_pool(tmp_path / "other", n=120, seed=5, samples_per_shard=60)
        change = ["--pool", str(other)]
    args[change[0]] = change[1]
    flat = [x for kv in args.items() for x in kv]
    r = H.cli("round", "--workdir", finished, "--cache-dir", tmp_path / "cache", "--steps", "1", "--quiet", *flat)
    H.assert_one_line_error(r, finished / "config.json", "workdir belongs to a different configuration", differs,
                            "use a new --workdir")
    assert _snapshot(finished) == before, "a refused run changed the workdir"


def test_rounds_of_another_configuration_are_refused_without_config_json(base, finished, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    (work / "config.json").unlink()  # e.g. deleted by a user to get past the refusal above
    r = H.cli("round", "--pool", base["pool"], "--workdir", work, "--preset", base["preset"], "--seed", "1",
              "--cache-dir", base["root"] / "cache", "--steps", "1", "--quiet", "--round", "0")
    H.assert_one_line_error(r, work / "round_00" / "done.json", "configuration")


def test_same_configuration_reuses_the_finished_round(base, finished):
    before = _snapshot(finished)
    r = H.cli("round", "--pool", base["pool"], "--workdir", finished, "--preset", base["preset"],
              "--cache-dir", base["root"] / "cache", "--steps", "1", "--quiet", "--round", "0")
    assert r[0] == 0, r
    assert _snapshot(finished) == before


# ------------------------------------------------------------------------------------------ score files
@pytest.fixture(scope="module")
def uids(base):
    from sfcomp.pool import Pool

    return U.sort_uids(Pool(base["pool"]).metadata_uids())


def _export(scores, out, *rule):
    return H.cli("export-subset", "--scores", scores, *rule, "-o", out)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_export_non_finite_scores(uids, tmp_path, bad):
    s = np.linspace(0, 1, len(uids)).astype(np.float32)
    s[7] = bad
    path = H.write_score_file(tmp_path / "scores.npy", uids, s)
    out = tmp_path / "out" / "subset.npy"
    H.assert_one_line_error(_export(path, out, "--top-frac", "0.3"), path, "non-finite (NaN/inf)", "row 7")
    _no_files(tmp_path / "out")


@pytest.mark.parametrize("case,problem", [
    ("unsorted", "uids not sorted"), ("duplicate", "duplicate uid"), ("dtype", "not a score file"),
    ("truncated", "truncated"), ("empty", "empty pool"),
])
def test_export_broken_score_file(uids, tmp_path, case, problem):
    path = tmp_path / "scores.npy"
    s = np.linspace(0, 1, len(uids)).astype(np.float32)
    if case == "unsorted":
        H.write_score_file(path, uids[::-1], s)
    elif case == "duplicate":
        u = uids.copy()
        u[5] = u[4]
        H.write_score_file(path, u, s)
    elif case == "dtype":
        np.save(path, s)
    elif case == "truncated":
        H.write_score_file(path, uids, s)
        data = path.read_bytes()
        path.write_bytes(data[:-50])
    else:
        H.write_score_file(path, uids[:0], s[:0])
    out = tmp_path / "out" / "subset.npy"
    H.assert_one_line_error(_export(path, out, "--top-frac", "0.3"), path, problem)
    _no_files(tmp_path / "out")


@pytest.mark.parametrize("rule,problem", [
    (["--top-frac", "0"], "top fraction must be in (0, 1], got 0.0"),
    (["--top-frac", "1.01"], "top fraction must be in (0, 1], got 1.01"),
    (["--top-frac", "-0.3"], "top fraction must be in (0, 1]"),
    (["--top-frac", "0.3", "--random-frac", "1.5"], "random fraction must be in (0, 1]"),
    (["--top-frac", "0.3", "--random-frac", "-0.1"], "random fraction must be in (0, 1]"),
    (["--top-k", "121"], "top-k 121 is larger than the pool (120 samples)"),
    (["--top-frac", "0.3", "--top-k", "5"], "at most one of top_frac / top_k / threshold"),
    (["--threshold", "nan"], "threshold must be a finite number"),
])
def test_export_bad_rules(uids, tmp_path, rule, problem):
    path = H.write_score_file(tmp_path / "scores.npy", uids, np.linspace(0, 1, len(uids)).astype(np.float32))
    out = tmp_path / "out" / "subset.npy"
    H.assert_one_line_error(_export(path, out, *rule), path, problem)
    _no_files(tmp_path / "out")


def test_export_top_plus_random_larger_than_the_pool_is_their_union(uids, tmp_path):
    """top 80% + random 50% of 120 > 120: not an error, the union (documented in sfcomp.select.mix_counts)."""
    path = H.write_score_file(tmp_path / "scores.npy", uids, np.linspace(0, 1, len(uids)).astype(np.float32))
    out = tmp_path / "subset.npy"
    code, stdout, err = _export(path, out, "--top-frac", "0.8", "--random-frac", "0.5")
    assert code == 0, err
    side = json.loads(Path(f"{out}.json").read_text())
    c = side["counts"]
    assert c["top"] == 97 and c["random"] == 60 and c["union"] == c["top"] + c["random"] - c["overlap"] <= 120
    sub = np.load(out)
    assert len(sub) == c["union"] and U.first_unsorted(sub) is None and U.count_duplicates(sub) == 0


# ------------------------------------------------------------------------------------------ subsets
@pytest.mark.parametrize("case,problem", [("dtype", "wrong dtype"), ("unsorted", "not sorted")])
def test_reshard_refuses_a_bad_subset(base, uids, tmp_path, case, problem):
    path = tmp_path / f"{case}.npy"
    if case == "dtype":
        np.save(path, np.arange(10, dtype=np.int64))
    else:
        np.save(path, uids[:20][::-1])
    out = tmp_path / "resharded"
    H.assert_one_line_error(H.cli("reshard", "-i", base["pool"], "-s", path, "-o", out), path, problem)
    _no_files(out)


def test_cache_dir_made_by_another_pool_is_refused(base, tmp_path):
    from sfcomp.cache import build_cache
    from sfcomp.errors import BadInputError
    from sfcomp.model import load_preset

    other = H.make_pool(tmp_path / "other", n=90, seed=9, samples_per_shard=45)
    preset = load_preset(str(base["preset"]))
    build_cache(str(base["pool"]), preset, tmp_path / "c", progress=False)
    with pytest.raises(BadInputError, match="cache was built from another pool") as e:
        build_cache(str(other), preset, tmp_path / "c", progress=False)
    assert str(tmp_path / "c" / "manifest.json") in str(e.value)
    (tmp_path / "c" / "manifest.json").unlink()  # an unfinished cache of pool A: refused by its pool.json
    with pytest.raises(BadInputError, match="cache was built from another pool"):
        build_cache(str(other), preset, tmp_path / "c", progress=False)

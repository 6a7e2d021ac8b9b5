"""A baseline is one module plus one registry line: a toy baseline defined here runs end to end through the CLI,
and the runner does the generic work (flags, required columns, sidecar) from its declaration alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import _e_harness as H
from sfcomp import uids as U
from sfcomp.baselines import reader as R
from sfcomp.baselines import registry
from sfcomp.baselines.spec import Baseline, Option, Run, at_least

# ---- the toy: keep rows whose caption has more than --min-chars characters -----------------------------------
MIN_CHARS = Option("--min-chars", "Keep captions longer than N characters (caption_len).", type=int,
                   check=at_least("--min-chars", 0))


def _long_captions(path: str, min_chars: int) -> tuple:
    t = R.read_columns(path, ["uid", "text"])
    keep = np.array([len(x or "") > min_chars for x in R.column_texts(t)], dtype=bool)
    return R.uids_of(t, path, keep), {"rows": t.num_rows, "long_captions": int(keep.sum())}


def _select(run: Run) -> list:
    return run.map(_long_captions, run.args.value("min_chars"))


CAPTION_LEN = Baseline("caption_len", "captions longer than --min-chars characters", _select, columns=("text",),
                       options=(MIN_CHARS,), required=(MIN_CHARS,))

# ---- a hand-made metadata folder: two parquet files, captions of known lengths --------------------------------
CAPTIONS = [["a dog", "a photo of a brown dog on the beach", None, "x" * 21],
            ["twenty characters!!!", "a red rose in a glass vase", "cat"]]


def _uid(i: int) -> str:
    return f"{(i * 0x9E3779B97F4A7C15F39CC0605CEDC835 + 7) % 2**128:032x}"


def _metadata(root: Path, drop_text_in: int | None = None) -> Path:
    meta = root / "metadata"
    meta.mkdir(parents=True)
    i = 0
    for f, caps in enumerate(CAPTIONS):
        cols = {"uid": [_uid(i + k) for k in range(len(caps))], "text": pa.array(caps, pa.string())}
        if f == drop_text_in:
            del cols["text"]
        pq.write_table(pa.table(cols), meta / f"{f:032x}.parquet")
        i += len(caps)
    return meta


def _expected(min_chars: int) -> list[str]:
    caps = [c for file in CAPTIONS for c in file]
    return sorted(_uid(i) for i, c in enumerate(caps) if len(c or "") > min_chars)


@pytest.fixture()
def toy():
    registry.register(CAPTION_LEN)
    yield CAPTION_LEN
    registry.unregister(CAPTION_LEN.name)


def _run(meta: Path, out: Path, name: str = "caption_len", *flags: str):
    return H.cli("baseline", name, "--metadata-dir", meta, "--save-path", out, "--num-workers", "1", *flags)


# ---- tests -----------------------------------------------------------------------------------------------------
def test_toy_baseline_writes_the_expected_sorted_subset(toy, tmp_path):
    meta, out = _metadata(tmp_path), tmp_path / "out" / "long.npy"
    code, _, err = _run(meta, out, "caption_len", "--min-chars", "20")
    assert code == 0, err
    got = np.load(out)  # the expected list is sorted, unique and drawn from the metadata's uids
    assert (got.dtype, U.uids_to_hex(got).tolist()) == (np.dtype("u8,u8"), _expected(20))


def test_toy_baseline_sidecar_records_its_flag_and_counts(toy, tmp_path):
    meta, out = _metadata(tmp_path), tmp_path / "long.npy"
    _run(meta, out, "caption_len", "--min-chars", "20")
    side = json.loads(Path(f"{out}.json").read_text())
    assert (side["baseline"], side["params"]["min_chars"], side["stage_counts"], side["kept"]) == \
        ("caption_len", 20, {"long_captions": 3}, 3)


def test_missing_required_column_is_refused_with_one_line_naming_it(toy, tmp_path):
    meta, out = _metadata(tmp_path, drop_text_in=1), tmp_path / "out" / "long.npy"
    victim = sorted(meta.glob("*.parquet"))[1]
    H.assert_one_line_error(_run(meta, out, "caption_len", "--min-chars", "3"), victim,
                            "parquet has no column 'text'", "needed by caption_len")
    assert not (tmp_path / "out").exists()


def test_toy_flag_is_required(toy, tmp_path):
    r = _run(_metadata(tmp_path), tmp_path / "long.npy")
    H.assert_one_line_error(r, None, "caption_len: --min-chars must be given for caption_len")


def test_toy_flag_value_is_checked_by_its_own_rule(toy, tmp_path):
    r = _run(_metadata(tmp_path), tmp_path / "long.npy", "caption_len", "--min-chars", "-1")
    H.assert_one_line_error(r, None, "caption_len: --min-chars must be >= 0, got -1")


def test_other_baselines_refuse_the_toy_flag(toy, tmp_path):
    r = _run(_metadata(tmp_path), tmp_path / "all.npy", "no_filter", "--min-chars", "3")
    H.assert_one_line_error(r, None, "no_filter does not take --min-chars", "only used by caption_len")


def test_registered_toy_is_listed_by_help(toy):
    _, out, _ = H.cli("baseline", "--help")
    assert ("caption_len" in out, "--min-chars" in out) == (True, True)


def test_a_taken_name_cannot_be_registered_twice(toy):
    with pytest.raises(ValueError, match="'caption_len' is already registered"):
        registry.register(CAPTION_LEN)


def test_builtin_baselines_are_datacomps_in_order():
    assert list(registry.BASELINES) == ["no_filter", "basic_filter", "clip_score", "laion2b", "text_based",
                                        "image_based", "image_based_intersect_clip_score", "random"]


def test_negative_seed_is_refused_with_one_line(tmp_path):
    """Was a numpy traceback (exit 1): default_rng(-1) raises ValueError."""
    r = _run(_metadata(tmp_path), tmp_path / "r.npy", "random", "--fraction", "0.5", "--seed", "-1")
    H.assert_one_line_error(r, None, "random: --seed must be >= 0, got -1")


def test_registry_and_baseline_help_import_nothing_heavy():
    code = ("import sys; from click.testing import CliRunner; from sfcomp.cli import main; "
            "import sfcomp.baselines.registry; "
            "r = CliRunner().invoke(main, ['baseline', '--help']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'open_clip', 'faiss', 'pyarrow', 'fasttext') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"

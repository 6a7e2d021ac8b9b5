"""DataComp's baselines on small metadata made by hand: each rule's uid set, exactly."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sfcomp.baselines import rules
from sfcomp.baselines.apply import BaselineArgs, BaselineArgsError, run_baseline
from sfcomp import uids as U
from sfcomp.errors import BadInputError, SfcompError

EN = [
    "a photo of a brown dog running on the beach at sunset",
    "beautiful red roses in a glass vase on the kitchen table",
    "geese flying over the lake in the early morning",
    "my new guitar is leaning against the wall",
    "the cat\nsleeps on the sofa all day long",
]
DE = "Das ist ein schöner Hund im Garten hinter dem Haus"
FR = "Une belle maison blanche avec un grand jardin fleuri"
DIM = 768


def uid(i: int) -> str:
    return f"{(i * 0x9E3779B97F4A7C15F39CC0605CEDC835 + 12345) % 2**128:032x}"


def row(i, text=EN[0], w=640, h=480, b32=0.3, l14=0.3, emb=None):
    return dict(uid=uid(i), text=text, original_width=w, original_height=h, b32=b32, l14=l14, emb=emb)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def write_pool(root: Path, rows: list[dict], n_files: int = 2, npz: bool = True) -> Path:
    """DataComp-format metadata: <stem>.parquet with DataComp's columns and a row-aligned float16 <stem>.npz."""
    meta = root / "metadata"
    meta.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f, part in enumerate(np.array_split(np.arange(len(rows)), n_files)):
        rs = [rows[i] for i in part]
        stem = meta / f"{f:032x}"
        pq.write_table(pa.table({
            "uid": [r["uid"] for r in rs],
            "url": [f"http://127.0.0.1/{r['uid']}.jpg" for r in rs],
            "text": [r["text"] for r in rs],
            "original_width": pa.array([r["original_width"] for r in rs], pa.int64()),
            "original_height": pa.array([r["original_height"] for r in rs], pa.int64()),
            "clip_b32_similarity_score": pa.array([r["b32"] for r in rs], pa.float32()),
            "clip_l14_similarity_score": pa.array([r["l14"] for r in rs], pa.float32()),
            "face_bboxes": pa.array([[] for _ in rs], pa.list_(pa.list_(pa.float64()))),
            "sha256": ["0" * 64 for _ in rs],
        }), f"{stem}.parquet")
        if npz:
            l14 = np.stack([r["emb"] if r["emb"] is not None else unit(rng.normal(size=DIM)) for r in rs])
            def other(d):
                return np.stack([unit(rng.normal(size=d)) for _ in rs]).astype(np.float16)
            np.savez(f"{stem}.npz", b32_img=other(512), b32_txt=other(512), l14_img=l14.astype(np.float16),
                     l14_txt=other(DIM))
    return meta


def run(meta: Path, name: str, out: Path | None = None, **kw) -> tuple[set[str], dict]:
    out = out or meta.parent / f"{name}.npy"
    side = run_baseline(BaselineArgs(name=name, metadata_dir=str(meta), save_path=str(out),
                                     num_workers=kw.pop("num_workers", 1), **kw), log=lambda m: None)
    arr = np.load(out)
    assert arr.dtype == np.dtype("u8,u8")
    assert U.first_unsorted(arr) is None and U.count_duplicates(arr) == 0
    return set(U.uids_to_hex(arr).tolist()), side


def uids_of(*ids: int) -> set[str]:
    return {uid(i) for i in ids}


# ---- pure rules ------------------------------------------------------------------------------------------------
def test_fraction_threshold_is_datacomps_order_statistic_with_ties():
    s = np.array([0.5, 0.3, 0.3, 0.3, 0.9, 0.1, 0.3, 0.7, 0.2, 0.6], np.float32)
    for f in (0.01, 0.1, 0.25, 0.3, 0.35, 0.5, 0.55, 0.6, 0.99):
        assert rules.threshold_for_fraction(s, f) == -np.sort(-s)[int(len(s) * f)]
    # sorted: 0.9 0.7 0.6 0.5 0.3 0.3 0.3 0.3 0.2 0.1; int(10 * 0.45) = 4 -> 5th largest = 0.3, tied 4 times:
    # 8 rows kept instead of 4
    assert rules.threshold_for_fraction(s, 0.45) == np.float32(0.3)
    assert rules.at_least(s, rules.threshold_for_fraction(s, 0.45)).sum() == 8
    # tiny f: n = 0 -> the maximum only
    assert rules.at_least(s, rules.threshold_for_fraction(s, 1e-6)).sum() == 1
    # f = 1.0 (n == N, where DataComp's indexing fails): everything with a numeric score
    t = rules.threshold_for_fraction(s, 1.0)
    assert rules.at_least(s, t).all()
    with_nan = np.array([0.2, np.nan, 0.4], np.float32)
    assert rules.at_least(with_nan, rules.threshold_for_fraction(with_nan, 1.0)).tolist() == [True, False, True]
    # NaN ranks last, as in DataComp's np.sort: n=1 -> 0.2; n=2 lands on NaN -> nothing passes
    assert rules.threshold_for_fraction(with_nan, 0.4) == -np.sort(-with_nan)[1] == np.float32(0.2)
    assert np.isnan(rules.threshold_for_fraction(with_nan, 0.7))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            rules.threshold_for_fraction(s, bad)


def test_threshold_compares_in_float32_like_pandas():
    # float32(0.7) = 0.69999999 < 0.7: DataComp (pandas, float32 column) keeps it; a float64 compare would not
    s = np.array([np.float32(0.7), np.float32(0.6999), np.float32(0.71)], np.float32)
    assert rules.at_least(s, 0.7).tolist() == [True, False, True]


def test_image_size_rule_edges():
    w = np.array([200, 199, 200, 600, 601, 200, 0, 300])
    h = np.array([600, 400, 601, 200, 200, 200, 0, 300])
    assert rules.image_size_mask(w, h).tolist() == [True, False, False, True, False, True, False, True]


def test_basic_caption_rule_uses_str_split_and_len():
    texts = ["a b c", "ab cd ef", "two words", "dog\u00a0cat\u00a0bird", "x\ty\nz w", "", None, "  a  b  c  "]
    assert rules.basic_caption_mask(texts).tolist() == [False, True, False, True, True, False, False, True]


def test_fasttext_tokenizer_is_stricter_than_split():
    assert rules.fasttext_tokens("a\nb") == ["a", "</s>", "b"]
    assert rules.fasttext_tokens("a \n b") == ["a", "</s>", "b"]
    assert rules.fasttext_tokens("dog\u00a0cat") == ["dog\u00a0cat"]  # U+00A0 is not a fastText separator
    assert rules.fasttext_tokens("a\x00b\rc\vd\fe\tf  g") == list("abcdefg")
    assert rules.fasttext_tokens("") == [] and rules.fasttext_tokens("\n") == ["</s>"]
    texts = ["dog\u00a0cat", "dog cat", "dogcat\n", "cat", "a b", None]
    en = np.ones(len(texts), bool)
    assert rules.image_caption_mask(texts, en).tolist() == [False, True, True, False, False, False]
    assert rules.image_caption_mask(["dog cat"], np.array([False])).tolist() == [False]


def test_wordnet_first_synset_matches_nltk():
    from sfcomp.baselines.wordnet import WordNet, imagenet21k_offsets

    try:
        wn = WordNet()
    except BadInputError:
        pytest.skip("Debian wordnet-base is not installed")
    # values from NLTK 3.8.1's wordnet.synsets(w)[0].offset() on WordNet 3.0
    expect = {"dogs": 2084071, "Dog": 2084071, "geese": 1855672, "quickly": 85811, "ran": 1926329,
              "photo": 3925226, "running": 558883, "leaves": 13152742, "the": None, "xyzzy": None}
    assert {w: wn.first_synset_offset(w) for w in expect} == expect
    ids, source = imagenet21k_offsets()
    assert len(ids) == 21843 and 2084071 in ids and 3925226 not in ids and "imagenet21k_goog" in source
    mask = rules.text_entity_mask(["quickly ran photo", "geese by the lake", "Dogs!", None], wn.first_synset_offset, ids)
    assert mask.tolist() == [False, True, False, False]


# ---- whole baselines on a hand-made pool -------------------------------------------------------------------
@pytest.fixture()
def pool(tmp_path):
    rows = [
        row(0, EN[0], 640, 480, b32=0.30, l14=0.35),  # passes basic
        row(1, EN[1], 200, 600, b32=0.28, l14=0.25),  # aspect exactly 3.0, side exactly 200: passes basic
        row(2, EN[2], 199, 400, b32=0.31, l14=0.25),  # side 199: fails basic
        row(3, EN[3], 200, 601, b32=0.27, l14=0.25),  # aspect > 3: fails basic
        row(4, DE, 640, 480, b32=0.35, l14=0.40),     # German: fails basic, laion2b
        row(5, "two words", 640, 480, b32=0.20, l14=0.10),  # 2 words: fails basic
        row(6, EN[4], 800, 800, b32=0.29, l14=0.25),  # newline caption, English: passes basic
        row(7, FR, 800, 800, b32=0.25, l14=np.float32(0.7)),
        row(8, "a b c", 800, 800, b32=0.40, l14=0.05),  # 5 chars: fails basic
        row(9, EN[0] + " with geese", 1000, 500, b32=0.10, l14=0.30),
    ]
    return write_pool(tmp_path, rows, n_files=3)


def test_no_filter_keeps_every_uid(pool):
    got, side = run(pool, "no_filter")
    assert got == uids_of(*range(10)) and side["kept"] == 10 and side["pool_rows"] == 10


def test_the_sidecar_names_the_subset_it_describes(pool):
    from sfcomp.export import sha256_file
    from sfcomp.validate import validate_subset

    out = pool.parent / "no_filter.npy"
    _, side = run(pool, "no_filter", out)
    assert side["output_sha256"] == sha256_file(out)
    assert validate_subset(out).sidecar == f"{out}.json"
    run(pool, "clip_score", pool.parent / "other.npy", fraction=0.3, arch="l14")
    os.replace(pool.parent / "other.npy", out)  # another subset beside no_filter's sidecar
    with pytest.raises(BadInputError, match="describes another subset"):
        validate_subset(out)


def test_clip_score_threshold_and_fraction(pool):
    got, _ = run(pool, "clip_score", arch="l14", threshold=0.25)
    assert got == uids_of(0, 1, 2, 3, 4, 6, 7, 9)  # ties at 0.25 kept
    got, _ = run(pool, "clip_score", arch="l14", threshold=0.7)
    assert got == uids_of(7)  # float32(0.7) >= 0.7 in float32
    got, _ = run(pool, "clip_score", arch="b32", threshold=0.28)
    assert got == uids_of(0, 1, 2, 4, 6, 8)
    # l14 sorted: 0.7, 0.40, 0.35, 0.30, 0.25 x4, 0.10, 0.05; n = int(10 * f)
    got, side = run(pool, "clip_score", arch="l14", fraction=0.3)  # n=3 -> 4th largest 0.30
    assert got == uids_of(7, 4, 0, 9) and side["threshold"] == pytest.approx(0.30)
    got, _ = run(pool, "clip_score", arch="l14", fraction=0.45)  # n=4 lands on the 0.25 tie: all four kept
    assert got == uids_of(0, 1, 2, 3, 4, 6, 7, 9)
    got, _ = run(pool, "clip_score", arch="l14", fraction=0.05)  # n=0: the max only
    assert got == uids_of(7)
    got, _ = run(pool, "clip_score", arch="l14", fraction=1.0)  # n == N: all
    assert got == uids_of(*range(10))


def test_parallel_workers_give_the_same_subset(pool, tmp_path):
    a, _ = run(pool, "clip_score", out=tmp_path / "a.npy", arch="b32", fraction=0.5, num_workers=1)
    b, _ = run(pool, "clip_score", out=tmp_path / "b.npy", arch="b32", fraction=0.5, num_workers=2)
    assert a == b and len(a) >= 5
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def test_basic_filter(pool):
    got, side = run(pool, "basic_filter")
    assert got == uids_of(0, 1, 6, 9)
    assert side["language_id"]["kind"] == "fasttext" and "model_file" in side["language_id"]
    assert side["stage_counts"]["image_rule"] == 8 and side["stage_counts"]["caption_rule"] == 8


def test_laion2b(pool):
    got, side = run(pool, "laion2b")
    # b32 >= 0.28: rows 0, 1, 2, 4, 6, 8; row 4 is German; "a b c" (row 8) is Bulgarian to gcld3, English to fastText
    if side["language_id"]["kind"] == "gcld3":
        assert got == uids_of(0, 1, 2, 6)
    else:
        assert got == uids_of(0, 1, 2, 6, 8) and "gcld3 is not installed" in side["language_id"]["note"]
    assert side["threshold"] == 0.28


def test_text_based(pool):
    from sfcomp.baselines.wordnet import WordNet

    try:
        WordNet()
    except BadInputError:
        pytest.skip("Debian wordnet-base is not installed")
    got, side = run(pool, "text_based")
    # ImageNet-21k words (checked with NLTK 3.8.1): dog/beach (0, 9), roses (1), geese (2), guitar/wall (3),
    # cat/sofa (6), "Das" (4, German: dropped by the language rule); none in "two words", "a b c" or the French row
    assert got == uids_of(0, 1, 2, 3, 6, 9)
    assert side["wordnet"]["synsets"] == 21843


def test_random_is_seeded_and_exact_in_size(pool, tmp_path):
    a, side = run(pool, "random", out=tmp_path / "a.npy", fraction=0.5, seed=3)
    b, _ = run(pool, "random", out=tmp_path / "b.npy", fraction=0.5, seed=3, num_workers=2)
    c, _ = run(pool, "random", out=tmp_path / "c.npy", fraction=0.5, seed=4)
    assert a == b and len(a) == 5 and a <= uids_of(*range(10)) and side["random"]["seed"] == 3
    assert len(c) == 5
    with pytest.raises(SfcompError, match="empty"):
        run(pool, "random", out=tmp_path / "e.npy", fraction=0.05)  # int(10 * 0.05) = 0 rows
    assert not (tmp_path / "e.npy").exists()


# ---- image-based ------------------------------------------------------------------------------------------------
def _image_pool(tmp_path):
    rng = np.random.default_rng(1)
    a, b = unit(rng.normal(size=DIM)), unit(rng.normal(size=DIM))
    def near(c):
        return unit(c + 0.05 * rng.normal(size=DIM))
    rows = [
        row(0, EN[0], l14=0.40, emb=near(a)),
        row(1, EN[1], l14=0.30, emb=near(a)),
        row(2, "dog\u00a0cat", l14=0.45, emb=near(a)),  # one fastText token: fails the caption filter
        row(3, DE, l14=0.50, emb=near(a)),              # not English
        row(4, EN[2], l14=0.20, emb=near(a)),
        row(5, EN[3], l14=0.60, emb=near(b)),           # other cluster
        row(6, EN[4], l14=0.55, emb=near(b)),
        row(7, EN[0], l14=0.10, emb=near(b)),
    ]
    meta = write_pool(tmp_path, rows, n_files=2)
    targets = tmp_path / "targets.npy"
    np.save(targets, np.stack([near(a) for _ in range(3)]).astype(np.float32))
    centroids = tmp_path / "centroids.npy"
    np.save(centroids, np.stack([a, b]))
    return meta, targets, centroids


def test_image_based_with_given_and_computed_centroids(tmp_path):
    meta, targets, centroids = _image_pool(tmp_path)
    got, side = run(meta, "image_based", image_based_targets=[str(targets)], centroids=str(centroids))
    assert got == uids_of(0, 1, 4) and side["targets"]["target_centroids"] == 1
    got, side = run(meta, "image_based", out=tmp_path / "km.npy", image_based_targets=[str(targets)],
                    num_clusters=2, seed=0)
    assert got == uids_of(0, 1, 4) and side["centroids"]["k"] == 2 and side["centroids"]["train_points"] == 6
    # intersect: threshold over the WHOLE pool first: n = int(8 * 0.5) = 4 -> 5th largest l14 = 0.40
    got, side = run(meta, "image_based_intersect_clip_score", out=tmp_path / "i.npy", arch="l14", fraction=0.5,
                    image_based_targets=[str(targets)], centroids=str(centroids))
    assert got == uids_of(0) and side["threshold"] == pytest.approx(0.40)


def test_npz_that_does_not_match_its_parquet(tmp_path):
    meta, targets, centroids = _image_pool(tmp_path)
    npz = sorted(meta.glob("*.npz"))[0]
    with np.load(npz) as z:
        arrays = {k: z[k][:-1] for k in z.files}
    np.savez(npz, **arrays)
    with pytest.raises(BadInputError, match=r"\.npz: npz array 'l14_img' has 3 rows but its parquet has 4"):
        run(meta, "image_based", image_based_targets=[str(targets)], centroids=str(centroids))


def test_missing_npz_fails_before_any_work(tmp_path):
    meta, targets, centroids = _image_pool(tmp_path)
    victim = sorted(meta.glob("*.npz"))[1]
    victim.unlink()
    with pytest.raises(BadInputError, match="npz file beside the parquet does not exist") as e:
        run(meta, "image_based", image_based_targets=[str(targets)], centroids=str(centroids))
    assert str(victim) in str(e.value)


def test_target_dimension_mismatch(tmp_path):
    meta, _, centroids = _image_pool(tmp_path)
    np.save(tmp_path / "t512.npy", np.ones((2, 512), np.float32))
    with pytest.raises(BadInputError, match="512-d"):
        run(meta, "image_based", image_based_targets=[str(tmp_path / "t512.npy")], centroids=str(centroids))


# ---- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, msg", [
    (dict(name="clip_score", threshold=0.3), "--arch"),
    (dict(name="clip_score", arch="l14"), "--fraction or --threshold"),
    (dict(name="clip_score", arch="l14", threshold=0.3, fraction=0.3), "not both"),
    (dict(name="clip_score", arch="l14", fraction=0.0), r"\(0, 1\]"),
    (dict(name="clip_score", arch="l14", fraction=1.5), r"\(0, 1\]"),
    (dict(name="clip_score", arch="l14", threshold=0.3, seed=1), "--seed"),
    (dict(name="no_filter", threshold=0.3), "only used by clip_score"),
    (dict(name="basic_filter", arch="b32"), "only used by clip_score"),
    (dict(name="laion2b", arch="b32"), "laion2b does not take"),
    (dict(name="laion2b", threshold=0.3), "laion2b does not take"),
    (dict(name="image_based"), "--image-based-targets"),
    (dict(name="image_based_intersect_clip_score", image_based_targets=["t.npy"]), "--fraction or --threshold"),
    (dict(name="clip_score", arch="l14", threshold=0.3, image_based_targets=["t.npy"]), "only used by image_based"),
    (dict(name="random"), "--fraction must be given"),
    (dict(name="random", fraction=0.3, arch="l14"), "only --fraction and --seed"),
    (dict(name="no_filter", fasttext_model="lid.176.bin"), "--fasttext-model"),
    (dict(name="nope"), "unknown baseline"),
])
def test_bad_flag_combinations_fail_before_any_work(kw, msg, tmp_path):
    args = BaselineArgs(metadata_dir=str(tmp_path / "does-not-exist"), save_path=str(tmp_path / "o.npy"), **kw)
    with pytest.raises(BaselineArgsError, match=msg):
        run_baseline(args, log=lambda m: None)
    assert not (tmp_path / "o.npy").exists()


def test_cli_reports_one_line_errors_and_writes_subset(pool, tmp_path):
    from sfcomp.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["baseline", "clip_score", "--metadata-dir", str(pool), "--save-path",
                               str(tmp_path / "x.npy"), "--threshold", "0.3"])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "error: clip_score: --arch" in res.output
    res = runner.invoke(main, ["baseline", "clip_score", "--metadata-dir", str(pool), "--save-path",
                               str(tmp_path / "x.npy"), "--arch", "l14", "--fraction", "0.3", "--num-workers", "1"])
    assert res.exit_code == 0, res.output
    side = json.loads((tmp_path / "x.npy.json").read_text())
    assert side["baseline"] == "clip_score" and side["kept"] == 4 and side["params"]["fraction"] == 0.3
    assert side["versions"]["numpy"] == np.__version__


def test_missing_column(tmp_path):
    meta = write_pool(tmp_path, [row(i) for i in range(4)], n_files=2, npz=False)
    victim = sorted(meta.glob("*.parquet"))[1]
    pq.write_table(pq.read_table(victim).drop(["clip_l14_similarity_score"]), victim)
    with pytest.raises(BadInputError, match=r"parquet has no column 'clip_l14_similarity_score'") as e:
        run(meta, "clip_score", arch="l14", threshold=0.1)
    assert str(victim) in str(e.value) and "\n" not in str(e.value)
    got, _ = run(meta, "clip_score", arch="b32", threshold=0.1)  # the other column is still there
    assert got == uids_of(0, 1, 2, 3)


def test_empty_selection_is_an_error_and_writes_nothing(pool, tmp_path):
    out = tmp_path / "empty.npy"
    with pytest.raises(SfcompError, match=r"selection is empty \(clip_score kept 0 of 10 rows\); pass --allow-empty"):
        run(pool, "clip_score", out=out, arch="b32", threshold=0.99)
    assert not out.exists() and not Path(str(out) + ".json").exists()


@pytest.mark.parametrize("args", [["clip_score", "--arch", "b32", "--fraction", "0.3"],
                                  ["clip_score", "--arch", "l14", "--threshold", "0.1", "--allow-empty"],
                                  ["no_filter", "--allow-empty"], ["random", "--fraction", "0.5"]])
def test_a_pool_of_zero_rows_is_refused_in_one_line(tmp_path, args):
    # the schema is there, the rows are not: a fraction has no threshold, a kept fraction no denominator
    from sfcomp.cli import main

    meta = write_pool(tmp_path, [row(i) for i in range(4)], n_files=2, npz=False)
    for f in meta.glob("*.parquet"):
        pq.write_table(pq.read_table(f).slice(0, 0), f)
    out = tmp_path / "o.npy"
    res = CliRunner().invoke(main, ["baseline", *args, "--metadata-dir", str(meta), "--save-path", str(out),
                                    "--num-workers", "1"])
    assert res.exit_code == 2
    assert res.output == f"error: {meta}: the pool has no rows (its 2 metadata files are empty)\n"
    assert not out.exists() and not Path(f"{out}.json").exists()


def test_error_in_a_worker_process_reaches_the_caller_as_one_line(tmp_path):
    rows = [row(i) for i in range(4)]
    rows[3]["uid"] = "Z" * 32
    meta = write_pool(tmp_path, rows, n_files=2, npz=False)
    with pytest.raises(BadInputError, match=r"\.parquet: malformed uid at row 1: 'ZZZZ"):
        run(meta, "no_filter", num_workers=2)


def test_missing_metadata_dir(tmp_path):
    with pytest.raises(BadInputError, match="metadata folder does not exist"):
        run(tmp_path / "nope", "no_filter")


def test_a_pool_folder_as_metadata_dir_is_refused(tmp_path):
    # its truth.parquet holds the pool's uids: `random` would have "worked" on it, as if it were metadata
    meta = write_pool(tmp_path / "pool", [row(i) for i in range(4)], n_files=1, npz=False)
    assert meta == tmp_path / "pool" / "metadata"
    truth = pq.read_table(sorted(meta.glob("*.parquet"))[0], columns=["uid"])
    pq.write_table(truth, tmp_path / "pool" / "truth.parquet")
    with pytest.raises(BadInputError, match=r"pool: is a pool folder \(it holds metadata/\), not a metadata folder: "
                                            r"give .*pool/metadata$"):
        run(tmp_path / "pool", "random", fraction=0.5)
    assert len(run(meta, "random", fraction=0.5)[0]) == 2


def test_language_id_baseline_on_bad_metadata_prints_only_its_error_line(tmp_path):
    """basic_filter's language-ID note comes after the work, so a refused run's stderr is its one error line."""
    import _e_harness as H

    rows = [row(i) for i in range(4)]
    rows[3]["uid"] = "Z" * 32
    meta = write_pool(tmp_path, rows, n_files=2, npz=False)
    res = H.cli("baseline", "basic_filter", "--metadata-dir", meta, "--save-path", tmp_path / "b.npy",
                "--num-workers", "1")
    H.assert_one_line_error(res, sorted(meta.glob("*.parquet"))[1], "malformed uid at row 1")
    assert not (tmp_path / "b.npy").exists()
    ok = H.cli("baseline", "basic_filter", "--metadata-dir", write_pool(tmp_path / "good", [row(i) for i in range(4)]),
               "--save-path", tmp_path / "g.npy", "--num-workers", "1")
    assert ok[0] == 0 and "language ID: " in ok[2], ok


@pytest.mark.parametrize("name,extra", [
    ("clip_score", ["--arch", "b32", "--fraction", "0.5"]),
    ("clip_score", ["--arch", "b32", "--threshold", "0.0"]),
])
def test_a_malformed_uid_on_a_row_the_baseline_drops_is_still_refused(tmp_path, name, extra):
    """Every row's uid is checked, kept or not; a fraction's threshold is not reported before the refusal."""
    import _e_harness as H

    rows = [row(i) for i in range(4)]
    rows[3]["uid"] = rows[3]["uid"].upper() if any(c.isalpha() for c in rows[3]["uid"]) else "Z" * 32
    rows[3]["b32"] = -1.0  # below any threshold used here: the row is dropped
    meta = write_pool(tmp_path, rows, n_files=2, npz=False)
    res = H.cli("baseline", name, *extra, "--metadata-dir", meta, "--save-path", tmp_path / "b.npy",
                "--num-workers", "1")
    H.assert_one_line_error(res, sorted(meta.glob("*.parquet"))[1], "malformed uid at row 1")
    assert not (tmp_path / "b.npy").exists()

"""`make-pool --source tuxpaint`: Tux Paint's stamps (Debian package tuxpaint-stamps-default) as an RGB pool with
human-written captions.

The test writes a small stamps folder in the package's layout (CATEGORY/SUBFOLDER/NAME.png + NAME.txt, RGBA PNGs,
Tux Paint's description format) with the awkward cases: a description given only as translations (one with an
English translation, one without), an empty description, a stamp without a .txt, a `_mirror` alternate image
and a category with one stamp. It checks the parser on it, then builds a pool from it through the CLI
(`SFCOMP_TUXPAINT_DIR`, `--direct`). When the real package is installed, one more pool of 60 real stamps.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import _e_harness as H

from sfcomp.sources.tuxpaint import DEFAULT_DIR, ENV_DIR, parse_description, scan

ALL_TRUE = dict.fromkeys(["columns", "uids_hex", "uids_unique", "npz_aligned", "stats_successes",
                          "samples_linked"], True)
BUILD = ["--image-size", 32, "--samples-per-shard", 16, "--processes", 1, "--threads", 2, "--ref-steps", 2,
         "--quiet"]
COLOURS = {"animals": (150, 90, 40), "vehicles": (40, 60, 200)}
TRANSLATIONS = "de.utf8=Ein Bild.\nfr.utf8=Une image.\nzh_CN.utf8=图片。\nca@valencia.utf8=Una imatge.\n"
PACKAGE = pytest.mark.skipif(not (DEFAULT_DIR / "animals").is_dir(),
                             reason="Debian package tuxpaint-stamps-default is not installed")


def _png(path: Path, colour, size: tuple[int, int]) -> None:
    """An RGBA stamp: an opaque ellipse of `colour` on a transparent background."""
    from PIL import Image, ImageDraw

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(im).ellipse((2, 2, size[0] - 3, size[1] - 3), fill=colour + (255,))
    im.save(path)


def _write_stamps(root: Path) -> dict[str, str]:
    """The stamps folder; returns {png path relative to root: the caption it must get} for the usable stamps."""
    rng = np.random.default_rng(0)
    want = {}
    for cat, sub, n in (("animals", "birds", 7), ("vehicles", "cars", 6)):
        for i in range(n):
            rel = f"{cat}/{sub}/{cat}_{i}.png"
            w, h = (int(x) for x in rng.integers(30, 120, 2))
            _png(root / rel, COLOURS[cat], (w, h))
            text = f"A {cat[:-1]} number {i}."
            (root / rel).with_suffix(".txt").write_text(f"{text}\n{TRANSLATIONS}", encoding="utf-8")
            want[rel] = text
    # a description given only as translations, one of them English: the English translation
    _png(root / "animals/birds/owl.png", (120, 120, 120), (40, 50))
    (root / "animals/birds/owl.txt").write_text("fr.utf8=Un hibou.\nen_GB.utf8=A grey owl.\n", encoding="utf-8")
    want["animals/birds/owl.png"] = "A grey owl."
    # markup in the English line: stripped
    _png(root / "animals/fox.png", (220, 90, 20), (60, 40))
    (root / "animals/fox.txt").write_text("A <b>red</b>  fox.\nde.utf8=Ein Fuchs.\n", encoding="utf-8")
    want["animals/fox.png"] = "A red fox."
    # translations only, none English: no English text -> skipped (empty_description)
    _png(root / "vehicles/cars/taxi.png", (240, 200, 0), (50, 30))
    (root / "vehicles/cars/taxi.txt").write_text("fr.utf8=Un taxi.\nde.utf8=Ein Taxi.\n", encoding="utf-8")
    # an empty description: skipped (empty_description)
    _png(root / "vehicles/bus.png", (200, 0, 0), (50, 30))
    (root / "vehicles/bus.txt").write_text("\n", encoding="utf-8")
    # no .txt at all: skipped (no_description)
    _png(root / "vehicles/tram.png", (0, 150, 0), (50, 30))
    # Tux Paint's pre-drawn mirror image of a stamp: not a stamp of its own
    _png(root / "vehicles/cars/vehicles_0_mirror.png", COLOURS["vehicles"], (40, 40))
    # the only stamp of its category: skipped (lone_category)
    _png(root / "space/moon.png", (230, 230, 230), (40, 40))
    (root / "space/moon.txt").write_text("Our moon.\n", encoding="utf-8")
    return want


@pytest.fixture(scope="module")
def stamps(tmp_path_factory):
    root = tmp_path_factory.mktemp("tux") / "stamps"
    return root, _write_stamps(root)


@pytest.fixture(scope="module")
def pool(stamps, tmp_path_factory):
    root, _ = stamps
    out = tmp_path_factory.mktemp("tuxpool") / "pool"
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_DIR, str(root))
    try:
        r = H.cli("make-pool", "--source", "tuxpaint", "--out", out, "--direct", *BUILD)
    finally:
        mp.undo()
    return out, r


def _meta(pool: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted((pool / "metadata").glob("*.parquet"))])


# ---- the parser --------------------------------------------------------------------------------------------
def test_the_english_line_is_the_untranslated_one():
    assert parse_description("A frog.\nde.utf8=Ein Frosch.\nsr@latin.utf8=Žaba.\n") == "A frog."


def test_a_line_with_an_equals_sign_is_still_english():
    assert parse_description("A calculator.  6x7=42\nfr.utf8=Une calculatrice.\n") == "A calculator. 6x7=42"


def test_translation_only_takes_the_english_translation():
    assert parse_description("fr.utf8=Un hibou.\nen_GB.utf8=A grey owl.\nen_AU.utf8=An owl.\n") == "A grey owl."


def test_translation_only_without_english_is_empty():
    assert parse_description("fr.utf8=Un taxi.\nde.utf8=Ein Taxi.\n") == ""


def test_markup_and_a_byte_order_mark_are_stripped():
    assert parse_description("\ufeffA <i>big</i>   red fox.\n") == "A big red fox."


def test_scan_gives_every_usable_stamp_its_caption(stamps):
    root, want = stamps
    s = scan(root)
    assert dict(zip(s["files"], s["texts"])) == want


def test_scan_counts_each_skipped_stamp(stamps):
    root, _ = stamps
    assert scan(root)["bad"] == {"no_description": 1, "empty_description": 2, "svg_only": 0,
                                 "unreadable_image": 0, "no_category": 0, "lone_category": 1}


def test_stamps_are_put_on_white(stamps):
    root, _ = stamps
    s = scan(root)
    px = s["pixels"][s["files"].index("animals/fox.png")]
    assert (px.shape, px[0, 0].tolist(), px[20, 30].tolist()) == ((40, 60, 3), [255, 255, 255], [220, 90, 20])


def test_categories_are_the_top_level_folders(stamps):
    root, _ = stamps
    assert scan(root)["categories"] == ["animals", "vehicles"]


# ---- a pool through the CLI --------------------------------------------------------------------------------
def test_tuxpaint_pool_builds_through_the_cli(pool):
    out, (code, _, err) = pool
    assert (code, (out / ".complete").exists()) == (0, True), err


def test_tuxpaint_pool_passes_the_datacomp_check(pool):
    out, _ = pool
    assert H.datacomp_check(out) == ALL_TRUE


def test_pool_captions_are_the_stamps_descriptions_without_injected_noise(pool, stamps):
    out, _ = pool
    _, want = stamps
    rows = pd.read_parquet(out / "source_rows.parquet").set_index("uid")
    meta = _meta(out).set_index("uid")
    info = json.loads((out / "make_pool.json").read_text())
    assert (info["args"]["noise"], [want[f] for f in rows.loc[meta.index, "file"]]) == \
        (0.0, meta["text"].tolist())


def test_every_pool_sample_is_clean_in_truth(pool):
    out, _ = pool
    truth = pd.read_parquet(out / "truth.parquet")
    assert (len(truth) > 0, bool(truth["clean"].all())) == (True, True)


def test_served_files_keep_their_native_size(pool, stamps):
    from PIL import Image

    out, _ = pool
    root, _ = stamps
    rows = pd.read_parquet(out / "source_rows.parquet").set_index("uid")
    meta = _meta(out).set_index("uid")
    sizes = [Image.open(root / f).size for f in rows.loc[meta.index, "file"]]
    assert sizes == [(int(w), int(h)) for w, h in zip(meta["original_width"], meta["original_height"])]


def test_zero_shot_classes_are_the_categories(pool):
    out, _ = pool
    assert (out / "eval" / "tuxpaint" / "classnames.txt").read_text().splitlines() == ["animals", "vehicles"]


def test_a_folder_without_stamps_is_one_line(tmp_path, monkeypatch):
    empty = tmp_path / "nostamps"
    empty.mkdir()
    monkeypatch.setenv(ENV_DIR, str(empty))
    r = H.cli("make-pool", "--source", "tuxpaint", "--out", tmp_path / "p", "--direct")
    H.assert_one_line_error(r, empty, "no Tux Paint stamps here", "apt-get install")
    assert not (tmp_path / "p").exists()


# ---- the real package ----------------------------------------------------------------------------------------
@PACKAGE
def test_a_pool_of_60_real_stamps_has_the_packages_english_descriptions(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    out = tmp_path / "real"
    code, _, err = H.cli("make-pool", "--source", "tuxpaint", "--out", out, "--size", 60, "--direct", *BUILD)
    assert code == 0, err
    rows = pd.read_parquet(out / "source_rows.parquet").set_index("uid")
    meta = _meta(out).set_index("uid")
    first_lines = [(DEFAULT_DIR / f).with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0].strip()
                   for f in rows.loc[meta.index, "file"]]
    assert (len(meta), [" ".join(t.split()) for t in first_lines]) == (60, meta["text"].tolist())


def test_a_missing_package_without_root_says_how(tmp_path, monkeypatch):
    import sfcomp.sources.tuxpaint as T
    from sfcomp.errors import SfcompError

    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.setattr(T, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(SfcompError, match=r"not installed\); install it with `sudo apt-get install "
                                          r"--no-install-recommends tuxpaint-stamps-default`"):
        T.ensure_installed(install=False)

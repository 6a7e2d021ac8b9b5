"""`make-pool --source folder --images DIR --captions FILE`: a user's own images and captions as a DataComp pool.

The test writes 40 rows: images of mixed sizes and modes (RGB JPEG, grayscale PNG, one RGBA PNG, one palette
PNG, RGB PNG) coloured by their class, plus one row whose file is missing, one whose file is not an image and one
with an empty caption. Two pools are built through the CLI: one from the labelled CSV with `--direct`, one over
HTTP (the demo pool's serve + img2dataset path) from a parquet table with no label column.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import _e_harness as H

IMAGE_SIZE = 32
CLASSES = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (50, 70, 220)}
ALL_TRUE = dict.fromkeys(["columns", "uids_hex", "uids_unique", "npz_aligned", "stats_successes",
                          "samples_linked"], True)
BUILD = ["--image-size", IMAGE_SIZE, "--samples-per-shard", 16, "--processes", 1, "--threads", 2, "--ref-steps", 2,
         "--quiet"]


def _write_inputs(root: Path) -> dict:
    """images/ and captions.csv (labelled) + captions.parquet (no label column); returns the real sizes by caption."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img_dir = root / "images"
    (img_dir / "sub").mkdir(parents=True)
    rows, sizes = [], {}
    names = list(CLASSES)
    for i in range(37):
        label = names[i % 3]
        w, h = (int(x) for x in rng.integers(20, 90, 2))
        rgb = np.clip(np.array(CLASSES[label]) + rng.integers(-25, 26, (h, w, 3)), 0, 255).astype(np.uint8)
        if i < 8:
            im, name = Image.fromarray(rgb), f"photo_{i}.jpg"
        elif i < 16:
            im, name = Image.fromarray(rgb).convert("L"), f"sub/gray_{i}.png"
        elif i == 16:
            im, name = Image.fromarray(rgb).convert("RGBA"), "alpha.png"
        elif i == 17:
            im, name = Image.fromarray(rgb).convert("P"), "palette.png"
        else:
            im, name = Image.fromarray(rgb), f"img_{i}.png"
        im.save(img_dir / name)
        caption = f"a {label} picture, number {i}"
        rows.append({"file": name, "caption": caption, "label": label})
        sizes[caption] = (w, h)
    (img_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 20)
    rows.insert(5, {"file": "gone.jpg", "caption": "a red picture that is not there", "label": "red"})
    rows.insert(9, {"file": "broken.jpg", "caption": "a broken blue picture", "label": "blue"})
    rows.insert(20, {"file": "photo_0.jpg", "caption": "   ", "label": "red"})
    table = pd.DataFrame(rows)
    table.to_csv(root / "captions.csv", index=False)
    table.drop(columns=["label"]).to_parquet(root / "captions.parquet", index=False)
    return sizes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    sizes = _write_inputs(root)
    return root, sizes


@pytest.fixture(scope="module")
def labelled(inputs):
    root, _ = inputs
    out = root / "pool_labelled"
    r = H.cli("make-pool", "--source", "folder", "--images", root / "images", "--captions", root / "captions.csv",
              "--out", out, "--direct", *BUILD)
    return out, r


@pytest.fixture(scope="module")
def unlabelled(inputs):
    root, _ = inputs
    out = root / "pool_http"
    r = H.cli("make-pool", "--source", "folder", "--images", root / "images", "--captions",
              root / "captions.parquet", "--out", out, *BUILD)
    return out, r


def _meta(pool: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted((pool / "metadata").glob("*.parquet"))])


def _info(pool: Path) -> dict:
    return json.loads((pool / "make_pool.json").read_text())


# ---- the pool, direct and over HTTP ----------------------------------------------------------------------------
def test_folder_pool_builds_through_the_cli(labelled):
    out, (code, _, err) = labelled
    assert (code, (out / ".complete").exists()) == (0, True), err


def test_folder_pool_passes_the_datacomp_check(labelled):
    out, _ = labelled
    assert H.datacomp_check(out) == ALL_TRUE


def test_folder_pool_over_http_passes_the_datacomp_check(unlabelled):
    out, (code, _, err) = unlabelled
    assert (code, H.datacomp_check(out)) == (0, ALL_TRUE), err


def test_bad_rows_are_counted_not_fatal(labelled):
    out, _ = labelled
    assert _info(out)["bad_rows"] == {"missing_file": 1, "unreadable_image": 1, "empty_caption": 1,
                                      "missing_label": 0}


def test_every_usable_row_lands_in_the_pool_eval_or_reference(labelled):
    out, _ = labelled
    rows = _info(out)["rows"]
    assert (rows["usable"], rows["eval"] + rows["pool_split"], len(_meta(out)) + rows["reference"]) == \
        (37, 37, rows["pool_split"])


def test_no_noise_is_injected_by_default(labelled, inputs):
    out, _ = labelled
    root, sizes = inputs
    meta, info = _meta(out), _info(out)
    assert (info["args"]["noise"], info["noisy_fraction"], set(meta["text"]) <= set(sizes)) == (0.0, 0.0, True)


def test_served_files_are_the_users_own_at_their_real_size(labelled, inputs):
    out, _ = labelled
    _, sizes = inputs
    meta = _meta(out)
    assert [(int(w), int(h)) for w, h in zip(meta["original_width"], meta["original_height"])] == \
        [sizes[t] for t in meta["text"]]


def test_source_rows_map_each_uid_to_its_table_row(labelled, inputs):
    out, _ = labelled
    root, _ = inputs
    table = pd.read_csv(root / "captions.csv")
    rows = pd.read_parquet(out / "source_rows.parquet").set_index("uid")
    meta = _meta(out).set_index("uid")
    assert [(table["file"][r], table["caption"][r]) for r in rows.loc[meta.index, "row"]] == \
        list(zip(rows.loc[meta.index, "file"], meta["text"]))


def test_shards_hold_every_pool_row(labelled):
    out, _ = labelled
    assert _info(out)["downloaded"] == len(_meta(out))


# ---- truth and eval sets follow the table's columns ----------------------------------------------------------
def test_truth_has_the_labels_as_classes(labelled):
    out, _ = labelled
    truth = pd.read_parquet(out / "truth.parquet").set_index("uid")
    meta = _meta(out).set_index("uid")
    names = (out / "eval" / "folder" / "classnames.txt").read_text().splitlines()
    assert all(names[int(truth.loc[u, "class"])] in meta.loc[u, "text"] for u in meta.index)


def test_no_truth_without_a_label_column(unlabelled):
    out, _ = unlabelled
    assert ((out / ".complete").exists(), (out / "truth.parquet").exists()) == (True, False)


def test_zero_shot_eval_uses_the_label_names(labelled):
    out, _ = labelled
    assert (out / "eval" / "folder" / "classnames.txt").read_text().splitlines() == ["blue", "green", "red"]


def test_retrieval_eval_only_without_labels(unlabelled):
    out, _ = unlabelled
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["folder_retrieval"]


def test_a_round_runs_on_the_folder_pool(labelled, tmp_path):
    out, _ = labelled
    preset = H.write_micro_preset(tmp_path / "micro.json")
    r = H.cli("round", "--pool", out, "--workdir", tmp_path / "wd", "--preset", preset, "--cache-dir",
              tmp_path / "cache", "--steps", 1, "--threads", 1, "--quiet")
    assert (r[0], (tmp_path / "wd" / "round_00" / "done.json").exists()) == (0, True), r


# ---- refusals: one line, nothing created -----------------------------------------------------------------------
def test_folder_without_captions_is_one_line(inputs, tmp_path):
    root, _ = inputs
    r = H.cli("make-pool", "--source", "folder", "--images", root / "images", "--out", tmp_path / "p")
    H.assert_one_line_error(r, None, "--source folder needs --images DIR and --captions FILE")


def test_images_with_another_source_is_one_line(inputs, tmp_path):
    root, _ = inputs
    r = H.cli("make-pool", "--images", root / "images", "--out", tmp_path / "p")
    H.assert_one_line_error(r, None, "--images and --captions are options of --source folder", "fashion-mnist")


def test_out_inside_the_images_folder_is_refused(inputs):
    root, _ = inputs
    out = root / "images" / "pool"
    r = H.cli("make-pool", "--source", "folder", "--images", root / "images", "--captions", root / "captions.csv",
              "--out", out, "--direct")
    H.assert_one_line_error(r, out, "--out lies inside the input")
    assert not out.exists()


@pytest.mark.parametrize("how", ["relative", "link"])
def test_out_inside_a_folder_the_table_reaches_outside_images_is_refused(inputs, tmp_path, how):
    # found by an audit (2026-12-04): absolute names were checked, `../other/x.png` and links were not
    import shutil

    root, _ = inputs
    images, other = tmp_path / "images", tmp_path / "other"
    shutil.copytree(root / "images", images)
    other.mkdir()
    shutil.copy(images / "photo_1.jpg", other / "elsewhere.jpg")
    name = "../other/elsewhere.jpg"
    if how == "link":
        (images / "linked.jpg").symlink_to(other / "elsewhere.jpg")
        name = "linked.jpg"
    table = tmp_path / "captions.csv"
    rows = pd.read_csv(root / "captions.csv")
    pd.concat([rows, pd.DataFrame([{"file": name, "caption": "a red picture from elsewhere", "label": "red"}])]) \
        .to_csv(table, index=False)
    out = other / "pool"
    before = H.all_files(other)
    r = H.cli("make-pool", "--source", "folder", "--images", images, "--captions", table, "--out", out, "--direct")
    H.assert_one_line_error(r, out, "--out lies inside the input")
    assert H.all_files(other) == before


def test_url_rows_are_refused_in_one_line(inputs, tmp_path):
    root, _ = inputs
    table = tmp_path / "urls.csv"
    pd.DataFrame({"url": ["http://example.com/a.jpg"], "caption": ["a picture"]}).to_csv(table, index=False)
    r = H.cli("make-pool", "--source", "folder", "--images", root / "images", "--captions", table,
              "--out", tmp_path / "p")
    H.assert_one_line_error(r, table, "rows with a `url` are not supported")
    assert not (tmp_path / "p").exists()


def test_a_table_without_a_caption_column_is_one_line(inputs, tmp_path):
    root, _ = inputs
    table = tmp_path / "nocap.csv"
    pd.DataFrame({"file": ["photo_1.jpg"], "text": ["a picture"]}).to_csv(table, index=False)
    r = H.cli("make-pool", "--source", "folder", "--images", root / "images", "--captions", table,
              "--out", tmp_path / "p")
    H.assert_one_line_error(r, table, "no `caption` column")


# ---- decoding ------------------------------------------------------------------------------------------------
def test_transparent_pixels_become_white():
    import io

    from PIL import Image

    from sfcomp.sources.folder import decode

    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :3, 3] = 255  # left half opaque red, right half fully transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    px, own = decode(buf.getvalue())
    assert (px.shape, px[0, 0].tolist(), px[0, 5].tolist(), own.ext, own.width) == \
        ((4, 6, 3), [200, 0, 0], [255, 255, 255], "png", 6)


def test_noise_is_injected_when_asked(inputs, tmp_path):
    from sfcomp.makepool import PoolBuilder
    from sfcomp.sources.folder import FolderSource

    root, _ = inputs
    b = PoolBuilder(tmp_path / "p", source=FolderSource(root / "images", root / "captions.csv"), noise=0.5,
                    progress=False, log=lambda m: None)
    b._check_args()
    t = b.plan().table
    assert (b.args["noise"], round(float(1 - t["clean"].mean()), 1), set(t["fail"])) == (0.5, 0.5, {"ok"})

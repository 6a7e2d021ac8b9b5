"""A pool source is one `Source` subclass plus one registry entry: a toy source defined here (60 random-colour RGB
40x24 images of 3 named classes, no Fashion-MNIST anywhere) is registered for this module only and built into a
pool through the real CLI (`sfcomp make-pool --source toy --direct`), then checked the way DataComp reads a pool.

How the toy reaches the CLI: `SOURCES["toy"] = ToySource()` (the same dict sfcomp/sources/__init__.py fills with
its `register(...)` lines), set with a MonkeyPatch for this module, and `make-pool` run in this process through
click's CliRunner (H.cli), so the command sees the entry. A source outside sfcomp can also be named
`--source MODULE:ATTR` (tested below on this module's class) without registering it.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import _e_harness as H
from sfcomp.errors import BadInputError
from sfcomp.sources import SOURCES, Items, Source, get_source

# DataComp's metadata columns, in order (shared/docs/datacomp-reference.md), written out rather than imported.
IMAGE_SIZE = 32
COLOURS = np.array([[200, 40, 40], [40, 180, 60], [50, 70, 210]], np.uint8)  # red, green, blue


class ToySource(Source):
    """60 train and 21 test RGB images, 40 wide x 24 high: a class's colour, jittered, on a black border."""
    name = "toy"
    classnames = ["red square", "green square", "blue square"]
    reference_size = 12
    reference_image_size = 40  # the reference CLIPs see the toy's own width, not the preset's 28

    def load(self, split: str) -> Items:
        n = {"train": 60, "test": 21}[split]
        rng = np.random.default_rng(0 if split == "train" else 1)
        labels = np.arange(n) % 3
        images = np.zeros((n, 24, 40, 3), np.uint8)
        jitter = rng.integers(-30, 31, (n, 1, 1, 3))
        images[:, 3:21, 5:35] = np.clip(COLOURS[labels][:, None, None, :] + jitter, 0, 255)
        return Items(images=images, labels=labels)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "pool"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(SOURCES, "toy", ToySource())
        result = H.cli("make-pool", "--source", "toy", "--out", out, "--size", 40, "--direct",
                       "--image-size", IMAGE_SIZE, "--samples-per-shard", 16, "--processes", 1, "--threads", 2,
                       "--ref-steps", 2, "--quiet")
    return out, result


def _parquets(pool: Path) -> list[Path]:
    return sorted((pool / "metadata").glob("*.parquet"))


def test_toy_pool_builds_through_the_cli(toy):
    out, (code, stdout, stderr) = toy
    assert (code, (out / ".complete").exists()) == (0, True), stderr


def test_toy_metadata_has_datacomps_columns(toy):
    out, _ = toy
    assert [pq.read_schema(p).names for p in _parquets(out)] == [H.DATACOMP_COLUMNS] * len(_parquets(out))


def test_toy_npz_rows_align_with_the_parquet(toy):
    out, _ = toy
    gaps = []
    for p in _parquets(out):
        t = pq.read_table(p).to_pandas()
        z = np.load(p.with_suffix(".npz"))
        for arch in ("b32", "l14"):
            cos = np.einsum("ij,ij->i", z[f"{arch}_img"].astype(np.float32), z[f"{arch}_txt"].astype(np.float32))
            gaps.append(float(np.abs(cos - t[f"clip_{arch}_similarity_score"].to_numpy()).max()))
    assert max(gaps) < 1e-5


def test_toy_stats_successes_match_shard_members(toy):
    out, _ = toy
    pairs = [(json.loads(tar.with_name(tar.stem + "_stats.json").read_text())["successes"],
              sum("jpg" in g for g in H.tar_members(tar).values())) for tar in sorted((out / "shards").glob("*.tar"))]
    assert [s for s, _ in pairs] == [m for _, m in pairs]


def test_toy_no_filter_subset_is_sorted_and_valid(toy, tmp_path):
    out, _ = toy
    subset = tmp_path / "no_filter.npy"
    made = H.cli("baseline", "no_filter", "--metadata-dir", out / "metadata", "--save-path", subset,
                 "--num-workers", 1)
    assert made[0] == 0, made
    assert H.cli("validate-subset", subset, "--pool", out)[0] == 0  # dtype, sort order, members of the pool


def test_toy_shards_hold_colour_images_at_the_shard_size(toy):
    from PIL import Image

    out, _ = toy
    tar = sorted((out / "shards").glob("*.tar"))[0]
    jpg = next(g["jpg"] for g in H.tar_members(tar).values() if "jpg" in g)
    im = Image.open(io.BytesIO(jpg))
    spread = np.asarray(im.convert("RGB")).astype(int).std(axis=2).max()  # channels differ: colour, not gray
    assert (im.mode, max(im.size), spread > 20) == ("RGB", IMAGE_SIZE, True)


def test_toy_eval_sets_use_the_sources_class_names(toy):
    out, _ = toy
    assert (out / "eval" / "toy" / "classnames.txt").read_text().splitlines() == ToySource.classnames


def test_toy_reference_models_see_the_sources_image_size(toy):
    out, _ = toy
    saved = json.loads((out / "reference" / "ref-b32.json").read_text())
    assert (saved["image_size"], saved["model_cfg"]["vision_cfg"]["patch_size"]) == (40, 10)


def test_toy_clean_captions_name_their_class(toy):
    import pandas as pd

    out, _ = toy
    meta = pd.concat([pq.read_table(p).to_pandas() for p in _parquets(out)]).set_index("uid")
    truth = pd.read_parquet(out / "truth.parquet").set_index("uid")
    clean = truth[truth["clean"]]
    named = [ToySource.classnames[c] in meta.loc[u, "text"].lower() for u, c in zip(clean.index, clean["class"])]
    assert np.mean(named) == 1.0


# ---- naming a source ---------------------------------------------------------------------------------------
def test_module_attr_names_a_source_outside_the_registry():
    assert type(get_source("test_sources:ToySource")) is ToySource


def test_unknown_source_is_one_line_and_creates_nothing(tmp_path):
    r = H.cli("make-pool", "--source", "nope", "--out", tmp_path / "p", "--size", 10)
    H.assert_one_line_error(r, None, "--source must be one of", "fashion-mnist", "MODULE:ATTR", "'nope'")
    assert not (tmp_path / "p").exists()


def test_unloadable_module_attr_source_is_one_line(tmp_path):
    r = H.cli("make-pool", "--source", "no_such_module_xyz:Thing", "--out", tmp_path / "p")
    H.assert_one_line_error(r, None, "--source no_such_module_xyz:Thing", "cannot load it")


@pytest.mark.parametrize("flag, value, low", [("--image-size", 0, 1), ("--samples-per-shard", 0, 1),
                                               ("--ref-steps", 0, 1), ("--seed", -1, 0)])
def test_a_count_below_its_least_is_refused_before_anything_is_made(tmp_path, flag, value, low):
    """Before 2026-12-04: --seed -1 was numpy's traceback; 0 image size / samples per shard went on to
    img2dataset; --ref-steps 0 trained no reference CLIP and wrote its scores."""
    from sfcomp.makepool import PoolBuilder

    r = H.cli("make-pool", "--out", tmp_path / "p", flag, value)
    H.assert_one_line_error(r, None, f"Invalid value for '{flag}': {value} is not in the range x>={low}")
    kw = {flag.lstrip("-").replace("-", "_"): value}
    with pytest.raises(BadInputError, match=f"{flag} must be >= {low}, got {value}"):
        PoolBuilder(tmp_path / "p", source="test_sources:ToySource", **kw)  # the library checks them too
    assert not (tmp_path / "p").exists()


# ---- items of any size, with their own texts and no labels ---------------------------------------------------
def test_plan_keeps_a_sources_own_texts_for_ragged_unlabelled_images():
    from sfcomp.sources import noise as NZ
    from sfcomp.sources.pool_plan import plan_pool

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(8, 30, (50, 2))]
    texts = [f"a drawing number {i}" for i in range(50)]
    items = Items(images=images, texts=texts)
    plan = plan_pool(items.images, None, 40, 0.5, NZ.get_profile("misaligned"), seed=0, ref_size=5,
                     texts=items.texts)
    t = plan.table
    clean = t[t["clean"] & (t["noise_type"] != "duplicate")]
    assert all(texts[s] == x for s, x in zip(clean["source_index"], clean["text"]))


def test_ragged_images_round_trip_through_the_work_file(tmp_path):
    from sfcomp.sources.base import as_images, load_images, save_images

    rng = np.random.default_rng(1)
    images = as_images([rng.integers(0, 256, s, dtype=np.uint8) for s in [(5, 7), (9, 4, 3), (6, 6)]])
    save_images(tmp_path / "px.npz", images)
    back = load_images(tmp_path / "px.npz")
    assert [x.tobytes() + bytes(x.shape) for x in back] == [x.tobytes() + bytes(x.shape) for x in images]


def test_reference_inputs_fit_any_size_into_the_square():
    from sfcomp.sources.base import as_images
    from sfcomp.sources.reference_clip import to_rgb

    gray_small = np.full((10, 20), 200, np.uint8)
    rgb_large = np.full((60, 30, 3), 90, np.uint8)
    out = to_rgb(as_images([gray_small, rgb_large]), 28)
    # the small one centred as it is; the large one shrunk to 28 high, 14 wide, centred
    assert (out.shape, int(out[0, 9:19, 4:24].min()), int(out[0].sum()) == 200 * 200 * 3,
            int(out[1, :, 7:21].min()), int(out[1, :, :7].max())) == ((2, 28, 28, 3), 200, True, 90, 0)

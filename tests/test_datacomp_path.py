"""The DataComp-scale code path trains and scores in the suite (issue 14 item 3): the `datacomp-b32` preset itself
(224 px, patch 32, context 77, `cache: false` so shards are streamed, DataLoader workers), with only its widths,
depths and batch size overridden through the preset's `extends` key, runs a real `sfcomp round` on a small RGB pool
whose JPEGs are 256 px (so 224 px is a real resize + centre crop).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import _e_harness as H

# ViT-B-32's layout at 224 px, narrowed: 1 layer of width 64 on each side (heads to match), batch 16. Everything
# else is datacomp-b32's own: image size, patch, context, cache: false, num_workers 8 (2 here: one per shard).
NARROW = {
    "extends": "datacomp-b32",
    "name": "datacomp-b32-narrow",
    "model_cfg": {
        "vision_cfg": {"layers": 1, "width": 64, "head_width": 32},
        "text_cfg": {"width": 64, "heads": 2, "layers": 1},
    },
    "batch_size": 16,
}
POOL_N, POOL_PER_SHARD, POOL_PX = 48, 24, 256


pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A 48-row pool (2 shards, 44 downloaded) of 256 px 3-channel JPEGs (Fashion-MNIST, grey in RGB)."""
    from poolfactory import write_tiny_pool

    import _input_guard

    root = tmp_path_factory.mktemp("datacomp")
    info = write_tiny_pool(root / "pool", n=POOL_N, seed=5, samples_per_shard=POOL_PER_SHARD, image_size=POOL_PX)
    _input_guard.register(root / "pool")  # checked again when the session ends: no command may change an input
    return {"root": root, "pool": root / "pool", "present": info["present"]}


@pytest.fixture(scope="module")
def datacomp_round(pool):
    """One finished round (2 steps, the default 2 folds) of the narrowed datacomp-b32 on `pool`: DataLoader
    workers min(8, shards) = 2."""
    root = pool["root"]
    preset = root / "narrow.json"
    preset.write_text(json.dumps(NARROW))
    work = root / "work"
    import torch.utils.data as D

    real_init, workers = D.DataLoader.__init__, []

    def init(self, *a, **kw):  # record each DataLoader's worker count (the round's train and score loaders)
        workers.append(kw.get("num_workers", 0))
        real_init(self, *a, **kw)

    D.DataLoader.__init__ = init
    try:
        result = H.cli("round", "--pool", pool["pool"], "--workdir", work, "--preset", preset, "--steps", "2",
                       "--threads", "1", "--quiet")
    finally:
        D.DataLoader.__init__ = real_init
    return {**pool, "result": result, "work": work, "loader_workers": workers}


def test_datacomp_round_finishes(datacomp_round):
    code, out, err = datacomp_round["result"]
    assert code == 0 and (datacomp_round["work"] / "round_00" / "done.json").exists(), (out, err)


def test_datacomp_round_scores_every_readable_sample(datacomp_round):
    from sfcomp import uids as U
    from sfcomp.scorefile import read_scores

    scores = read_scores(datacomp_round["work"] / "round_00" / "scores.npy")  # validates sorted unique uids
    assert U.uids_to_hex(scores[["f0", "f1"]]).tolist() == sorted(datacomp_round["present"])


def test_datacomp_scores_are_finite(datacomp_round):
    from sfcomp.scorefile import read_scores

    scores = read_scores(datacomp_round["work"] / "round_00" / "scores.npy")
    assert all(np.isfinite(scores[f]).all() for f in scores.dtype.names if f not in ("f0", "f1"))


def test_datacomp_round_ran_the_datacomp_preset_streamed(datacomp_round):
    """config.json records the preset by content: datacomp-b32's resolution, context, streaming and optimiser,
    with only the widths, depths and batch sizes changed."""
    base = json.loads((Path(__file__).parent.parent / "sfcomp" / "presets" / "datacomp-b32.json").read_text())
    got = json.loads((datacomp_round["work"] / "config.json").read_text())["preset"]
    kept = {k: v for k, v in base.items() if k not in ("name", "model_cfg", "batch_size")}
    assert ({k: got[k] for k in kept}, got["model_cfg"]["vision_cfg"]["patch_size"]) == (kept, 32) and \
        (got["image_size"], got["context_length"], got["cache"], got["num_workers"]) == (224, 77, False, 8)


def test_datacomp_round_decodes_in_dataloader_workers(datacomp_round):
    """2 folds: 2 training loaders and 2 scoring loaders, each with min(8, 2 shards) = 2 worker processes."""
    assert datacomp_round["loader_workers"] == [2, 2, 2, 2]


def test_datacomp_model_saw_224px_and_77_tokens(datacomp_round):
    """The checkpoint's positional embeddings: 7 x 7 patches + the class token at 224/32, 77 text positions."""
    ckpt = next((datacomp_round["work"] / "round_00").glob("model_f*.pt"))
    state = H.model_tensors(ckpt)
    state = state.get("model", state) if isinstance(state, dict) else state
    assert (tuple(state["visual.positional_embedding"].shape), tuple(state["positional_embedding"].shape)) == \
        ((7 * 7 + 1, 64), (77, 64))


def test_datacomp_round_streams_without_a_cache(datacomp_round):
    assert not (datacomp_round["pool"] / ".sfcomp-cache").exists()


# ------------------------------------------------------------------------------------------ preset `extends`
def test_preset_extends_merges_model_cfg_into_its_base(tmp_path):
    from sfcomp.model import load_preset

    p = tmp_path / "narrow.json"
    p.write_text(json.dumps({"extends": "datacomp-b32", "name": "n", "model_cfg": {"vision_cfg": {"width": 64}}}))
    got = load_preset(str(p))
    assert (got["model_cfg"]["vision_cfg"], got["model_cfg"]["text_cfg"]["layers"], got["batch_size"],
            "extends" in got) == ({"image_size": 224, "layers": 12, "width": 64, "patch_size": 32}, 12, 4096, False)


def test_preset_extends_a_relative_json_path_next_to_it(tmp_path):
    from sfcomp.model import load_preset

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.json").write_text(json.dumps({**H.MICRO_PRESET, "name": "base"}))
    (tmp_path / "sub" / "child.json").write_text(json.dumps({"extends": "base.json", "batch_size": 8}))
    got = load_preset(str(tmp_path / "sub" / "child.json"))
    assert (got["name"], got["batch_size"], got["lr"]) == ("base", 8, H.MICRO_PRESET["lr"])


def test_preset_extends_an_unknown_preset_is_one_line_error(pool, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"extends": "no-such-preset", "batch_size": 8}))
    r = H.cli("round", "--pool", pool["pool"], "--workdir", tmp_path / "work", "--preset", p, "--quiet")
    H.assert_one_line_error(r, p, "extends", "unknown preset 'no-such-preset'")


def test_refused_extends_leaves_no_workdir(pool, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"extends": "no-such-preset", "batch_size": 8}))
    H.cli("round", "--pool", pool["pool"], "--workdir", tmp_path / "work", "--preset", p, "--quiet")
    assert not (tmp_path / "work").exists()


def test_preset_extends_loop_is_one_line_error(tmp_path):
    from sfcomp.errors import BadInputError
    from sfcomp.model import load_preset

    (tmp_path / "a.json").write_text(json.dumps({"extends": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"extends": "a.json"}))
    with pytest.raises(BadInputError, match="extends.*loops back"):
        load_preset(str(tmp_path / "a.json"))


# ------------------------------------------------------------------------------------------ the rgb64 preset
def test_rgb64_preset_as_shipped_runs_a_streamed_round(pool, tmp_path):
    """The RGB preset at 64 px, unchanged but for 2 steps: a real round on the 256 px RGB pool, streamed (no cache),
    every readable sample scored, the model at 64 px (8 x 8 patches) and 32 text positions."""
    from sfcomp import uids as U
    from sfcomp.scorefile import read_scores

    work = tmp_path / "work"
    r = H.cli("round", "--pool", pool["pool"], "--workdir", work, "--preset", "rgb64", "--steps", "2",
              "--threads", "1", "--quiet")
    code, out, err = r
    assert code == 0, (out, err)
    scores = read_scores(work / "round_00" / "scores.npy")
    state = H.model_tensors(work / "round_00" / "model_f0.pt")
    state = state.get("model", state) if isinstance(state, dict) else state
    assert (U.uids_to_hex(scores[["f0", "f1"]]).tolist(), tuple(state["visual.positional_embedding"].shape),
            tuple(state["positional_embedding"].shape), (pool["pool"] / ".sfcomp-cache").exists()) == \
        (sorted(pool["present"]), (8 * 8 + 1, 128), (32, 128), False)

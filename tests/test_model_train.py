"""Presets, the model factory, training and embedding on real (tiny) data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sfcomp.errors import BadInputError
from sfcomp.model import create_model, load_preset, tokenize
from sfcomp.score import cosine_scores, embed_arrays
from sfcomp.train import batch_indices, cosine_lr, steps_for, train_on_arrays

torch.set_num_threads(1)  # the box is shared: one thread avoids OpenMP oversubscription stalls


def small_preset(**over) -> dict:
    p = load_preset("tiny")
    p.update({"batch_size": 32, "warmup": 3, "lr": 1e-3, **over})
    return p


def test_presets_load_and_build():
    tiny = load_preset("tiny")
    b32 = load_preset("datacomp-b32")
    assert tiny["cache"] is True and b32["cache"] is False
    assert (b32["batch_size"], b32["lr"], b32["warmup"], b32["wd"], b32["image_size"]) == (4096, 5e-4, 500, 0.2, 224)
    model, tok = create_model(tiny, seed=0)
    assert tokenize(tok, ["a photo of a bag"]).shape == (1, tiny["context_length"])
    out = model(torch.zeros(2, 3, 32, 32), torch.zeros(2, 16, dtype=torch.long))
    assert out["image_features"].shape == (2, tiny["model_cfg"]["embed_dim"])


def test_preset_errors_name_the_problem(tmp_path):
    with pytest.raises(BadInputError, match="unknown preset 'nope'"):
        load_preset("nope")
    bad = tmp_path / "p.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(BadInputError, match="lacks key"):
        load_preset(bad)


def test_create_model_is_deterministic_per_seed():
    a, _ = create_model("tiny", seed=3)
    b, _ = create_model("tiny", seed=3)
    c, _ = create_model("tiny", seed=4)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_schedule_and_steps():
    assert cosine_lr(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert cosine_lr(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert cosine_lr(55, 1.0, 10, 100) == pytest.approx(0.5)
    assert steps_for({"steps": 7, "batch_size": 4}, 1000) == 7
    assert steps_for({"epochs": 2, "batch_size": 100}, 1050) == 21


def test_batch_indices_split_one_global_batch_across_ranks():
    single = list(batch_indices(100, 20, 12, seed=5))
    assert len(single) == 12 and all(len(b) == 20 for b in single)
    # 5 full batches per epoch: the first 5 cover 100 distinct rows
    assert len(np.unique(np.concatenate(single[:5]))) == 100
    r0 = list(batch_indices(100, 20, 12, seed=5, rank=0, world_size=2))
    r1 = list(batch_indices(100, 20, 12, seed=5, rank=1, world_size=2))
    for s, a, b in zip(single, r0, r1):
        assert np.array_equal(np.sort(np.concatenate([a, b])), np.sort(s))


COLOURS = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220), "yellow": (220, 220, 20)}


def _colour_task(n: int, seed: int):
    """Grey images with a coloured square, captioned with its colour: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    colour = rng.integers(0, len(names), n)
    imgs = np.full((n, 32, 32, 3), 128, np.uint8)
    for i, name in enumerate(names):
        imgs[colour == i, 8:24, 8:24] = COLOURS[name]
    texts = [f"a {names[c]} square" for c in colour]
    wrong = [f"a {names[(c + 1) % len(names)]} square" for c in colour]
    return imgs, texts, wrong


def test_training_learns_a_real_alignment():
    preset = small_preset()
    model, tok = create_model(preset, seed=0)
    imgs, texts, wrong_texts = _colour_task(256, seed=1)
    toks, wrong = tokenize(tok, texts), tokenize(tok, wrong_texts)

    def margin(m):
        a, b = embed_arrays(m, imgs, toks, preset=preset)
        _, w = embed_arrays(m, imgs, wrong, preset=preset)
        return float((cosine_scores(a, b) - cosine_scores(a, w)).mean())

    before = margin(model)
    train_on_arrays(model, imgs, toks, preset, steps=20, seed=0, progress=False)
    after = margin(model)
    assert after > before + 0.2 and after > 0.2


def test_training_is_deterministic_and_embeddings_batch_independent():
    preset = small_preset()
    imgs, texts, _ = _colour_task(96, seed=2)
    results = []
    for _ in range(2):
        model, tok = create_model(preset, seed=1)
        toks = tokenize(tok, texts)
        train_on_arrays(model, imgs, toks, preset, steps=3, seed=7, progress=False)
        results.append(embed_arrays(model, imgs, toks, batch_size=96, preset=preset))
    assert np.array_equal(results[0][0], results[1][0])
    img, txt = results[0]
    assert img.dtype == np.float32 and img.shape == (96, preset["model_cfg"]["embed_dim"])
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    small_batches = embed_arrays(model, imgs, toks, batch_size=7, preset=preset)
    np.testing.assert_allclose(small_batches[1], txt, atol=1e-5)


def test_const_schedule_warms_up_then_holds_and_cosine_is_the_default():
    from sfcomp.train import cosine_lr, learning_rate

    p = {"lr": 1e-3, "warmup": 10}
    assert [learning_rate(s, {**p, "lr_schedule": "const"}, 100) for s in (0, 9, 10, 99, 500)] == \
        [1e-4, 1e-3, 1e-3, 1e-3, 1e-3]
    assert [learning_rate(s, p, 100) for s in (0, 50, 99)] == [cosine_lr(s, 1e-3, 10, 100) for s in (0, 50, 99)]


def test_unknown_lr_schedule_is_refused(tmp_path):
    import json

    import pytest

    from sfcomp.errors import BadInputError
    from sfcomp.model import load_preset

    (tmp_path / "p.json").write_text(json.dumps({"extends": "tiny", "name": "p", "lr_schedule": "linear"}))
    with pytest.raises(BadInputError, match="lr_schedule must be cosine or const, got 'linear'"):
        load_preset(str(tmp_path / "p.json"))


@pytest.mark.parametrize("over, problem", [
    ({"batch_size": 0}, "preset batch_size is 0, expected an integer >= 2"),
    ({"batch_size": "x"}, "preset batch_size is 'x'"),
    ({"lr": -1}, "preset lr is -1, expected a number >= 0"),
    ({"lr": float("nan")}, "preset lr is nan"),
    ({"steps": -5}, "preset steps is -5, expected an integer >= 1 or null"),
    ({"steps": True}, "preset steps is True"),
    ({"warmup": -3}, "preset warmup is -3"),
    ({"precision": "fp8"}, "preset precision is 'fp8', expected fp32 or amp_bf16"),
    ({"mean": [0.5, 0.5]}, "preset mean is [0.5, 0.5], expected a list of 3 numbers"),
    ({"std": [0, 0, 0]}, "expected a list of 3 numbers > 0"),
    ({"score_batch_size": 0}, "preset score_batch_size is 0"),
    ({"num_workers": -1}, "preset num_workers is -1"),
    ({"beta2": 1.5}, "preset beta2 is 1.5, expected a number in [0, 1)"),
    ({"cache": "yes"}, "preset cache is 'yes', expected true or false"),
    ({"steps": None, "epochs": 0}, "preset epochs is 0"),
    ({"steps": None}, "preset needs 'steps' or 'epochs'"),
    ({"model_cfg": {"vision_cfg": {"patch_size": 64}}}, "vision_cfg.patch_size 64 is larger than image_size 32"),
])
def test_a_bad_preset_value_is_one_line_naming_the_file(tmp_path, over, problem):
    """Before 2026-12-04 each of these reached training: a traceback (ValueError, TypeError, RuntimeError from
    torch or open_clip), NaN scores from std 0, or a silent fp32 for an unknown precision."""
    import json

    path = tmp_path / "p.json"
    path.write_text(json.dumps({"extends": "tiny", "name": "p", **over}))
    with pytest.raises(BadInputError, match=None) as e:
        load_preset(str(path))
    assert e.value.path == str(path) and problem in str(e.value), str(e.value)


def test_every_shipped_preset_passes_the_value_checks():
    from sfcomp.model import available_presets

    assert len(available_presets()) >= 5
    for name in available_presets():
        assert load_preset(name)["name"] == name

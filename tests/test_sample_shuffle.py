"""The seeded sample shuffle that makes one seed fix one open_clip_train run (eval/sample_shuffle.py)."""
from __future__ import annotations

import json

from poolfactory import write_tiny_pool

from sfcomp import uids as U
from sfcomp.eval import reshard as R
from sfcomp.eval.sample_shuffle import SeededShuffle, seeded_sample_shuffle


def order(stage: SeededShuffle, n: int = 600) -> list[int]:
    return list(stage(iter(range(n))))


def test_seeded_shuffle_repeats_per_seed_and_changes_per_seed_rank_and_pass():
    a = order(SeededShuffle(seed=1, rank=0, bufsize=500, initial=100))
    assert sorted(a) == list(range(600)) and a != list(range(600))  # a permutation, not the identity
    assert order(SeededShuffle(seed=1, rank=0, bufsize=500, initial=100)) == a
    assert order(SeededShuffle(seed=2, rank=0, bufsize=500, initial=100)) != a
    assert order(SeededShuffle(seed=1, rank=1, bufsize=500, initial=100)) != a
    again = SeededShuffle(seed=1, rank=0, bufsize=500, initial=100)
    first, second = order(again), order(again)  # a persistent worker's next pass draws anew, reproducibly
    assert first == a and second != a and sorted(second) == list(range(600))


def test_the_patch_is_scoped_and_leaves_a_caller_seeded_shuffle_alone():
    import random

    import webdataset

    original = webdataset.shuffle
    with seeded_sample_shuffle(7, rank=0) as made:
        stage = webdataset.shuffle(bufsize=50, initial=10)
        assert isinstance(stage, SeededShuffle) and (stage.seed, stage.bufsize, stage.initial) == (7, 50, 10)
        assert not isinstance(webdataset.shuffle(10, 5, rng=random.Random(0)), SeededShuffle)
        assert made == [stage]
    assert webdataset.shuffle is original


def test_two_trainings_with_one_seed_give_the_same_weights(tmp_path):
    """Before the seeded shuffle, the sample buffer drew from pid + clock: even the first step's batch differed."""
    import torch

    from sfcomp.eval.train import train

    info = write_tiny_pool(tmp_path / "pool", n=600, seed=5, samples_per_shard=150)
    U.write_subset(tmp_path / "s.npy", U.hex_to_uids(sorted(info["present"])))
    R.reshard(tmp_path / "pool", tmp_path / "s.npy", tmp_path / "data", shard_size=150, log=lambda m: None)
    weights = []
    for run in ("a", "b"):
        out = train(tmp_path / "data", tmp_path / run, scale="tiny", seed=3, samples_seen=512, threads=2)
        assert out["sample_shuffle"] == "seeded"
        assert json.loads((tmp_path / run / "info.json").read_text())["sample_shuffle"] == "seeded"
        weights.append(torch.load(out["checkpoint"], map_location="cpu", weights_only=False)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k

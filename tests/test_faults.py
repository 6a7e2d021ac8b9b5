"""kill -9 at points of a round, then rerun: the round resumes and its results are byte-identical to an
uninterrupted run's. A shard that disappears or is corrupt mid-run is reported and skipped, not fatal.

Each faulted run is the real CLI (`sfcomp run ...`) in a child process that SIGKILLs itself at a chosen point
(see tests/_e_harness.py: a real kill -9, no handlers run); one test kills such a child (the real CLI) from the
outside on timing. The rerun has no fault. Table of results: docs/RELIABILITY.md.
"""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

import _e_harness as H

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Pool, preset, a built cache and an uninterrupted 2-round reference run."""
    root = tmp_path_factory.mktemp("faults")
    pool = H.make_pool(root / "pool")
    preset = H.write_micro_preset(root / "micro.json")
    cache = root / "cache"
    r = H.run_cli(H.loop_cmd("run", pool, root / "ref", preset, cache, "--rounds", "2"), root / "logs")
    assert r.code == 0, r
    return {"root": root, "pool": pool, "preset": preset, "cache": cache, "work": root / "ref",
            "files": H.round_files(root / "ref", 2)}


def _assert_same_as_reference(ref, work: Path, rounds: int) -> None:
    got = H.round_files(work, rounds)
    for name, data in got.items():
        want = ref["files"][name] if name != "final_scores.npy" else \
            ref["files"][f"round_{rounds - 1:02d}/scores.npy"]
        assert data == want, f"{name} differs from the uninterrupted run's"
    for k in range(rounds):
        for f in range(2):
            a = H.model_tensors(ref["work"] / f"round_{k:02d}" / f"model_f{f}.pt")
            b = H.model_tensors(work / f"round_{k:02d}" / f"model_f{f}.pt")
            assert a.keys() == b.keys() and all(np.array_equal(a[t].numpy(), b[t].numpy()) for t in a)


# Kill points, run as three gauntlets: each run of a gauntlet is killed at its point, the next resumes from what
# the killed one left (and is itself killed further on), and a last run without a fault must end byte-identical to
# the uninterrupted reference. With steps=3 and folds=2, AdamW.step calls 1-3 train fold 0 and 4-6 fold 1; 270
# rows at score batch 128 are 3 _encode calls per model. Comments: what the resumed run finds on disk.
GAUNTLETS = {
    "train-and-score": (1, [
        ("call", "torch.optim:AdamW.step", 2),       # fold 0 mid-training; nothing saved yet
        ("replace", "model_f0.pt", 1),               # fold 0 checkpoint fully written to its temp file, not renamed
        ("call", "torch.optim:AdamW.step", 5),       # fold 1 mid-training; model_f0.pt saved
        ("call", "sfcomp.score:_encode", 5),         # fold 1 mid-scoring; both checkpoints saved
        ("replace", "scores.npy", 1),                # score file: sidecar written, .npy not renamed
    ]),
    "select-export-report": (1, [
        ("call", "sfcomp.export:make_mix", 1),       # selection of the next mix
        ("replace", "next_mix.npy", 1),              # the subset file
        ("replace", "next_mix.npy.json", 1),         # its sidecar (subset already there)
        ("call", "sfcomp.report:write_round_report", 1),  # the report
        ("replace", "final_scores.npy", 1),          # the copy to WORKDIR/final_scores.npy (old one removed)
        ("replace", "done.json", 1),                 # the completion marker, last of all
    ]),
    "cache-and-round-1": (2, [
        ("replace", "00000001.npz", 1),              # decode cache: shard 1's part
        ("replace", "uids.npy", 1),                  # cache consolidation: pixels/tokens renamed, uids not
        ("call", "torch.optim:AdamW.step", 8),       # round 1 fold 0 mid-training (round 0 finished)
        ("call", "sfcomp.export:make_mix", 1),       # round 1 selection (round 0 was already done)
    ]),
}


@pytest.mark.parametrize("name", list(GAUNTLETS))
def test_kill_then_rerun_is_byte_identical(ref, tmp_path, name):
    rounds, points = GAUNTLETS[name]
    work = tmp_path / "w"
    cache = tmp_path / "cache" if name.startswith("cache") else ref["cache"]
    cmd = H.loop_cmd("run", ref["pool"], work, ref["preset"], cache, "--rounds", str(rounds))
    for point in points:
        killed = H.run_cli(cmd, tmp_path / "logs", kill=[point])
        assert killed.killed, f"the kill point {point} was never reached: {killed}"
        assert not (work / f"round_{rounds - 1:02d}" / "done.json").exists()
    again = H.run_cli(cmd, tmp_path / "logs")
    assert again.code == 0, again
    _assert_same_as_reference(ref, work, rounds)
    if cache != ref["cache"]:
        for f in ("uids.npy", "pixels.npy", "tokens.npy", "shard.npy"):
            assert (cache / f).read_bytes() == (ref["cache"] / f).read_bytes(), f


def test_corrupt_checkpoint_is_retrained_with_a_warning(ref, tmp_path):
    work = tmp_path / "w"
    (work / "round_00").mkdir(parents=True)
    shutil.copy(ref["work"] / "config.json", work / "config.json")
    for f in ("mix.npy", "model_f0.pt", "model_f1.pt"):
        shutil.copy(ref["work"] / "round_00" / f, work / "round_00" / f)
    ckpt = work / "round_00" / "model_f1.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    r = H.run_cli(H.loop_cmd("run", ref["pool"], work, ref["preset"], ref["cache"], "--rounds", "1"),
                  tmp_path / "logs")
    assert r.code == 0, r
    warnings = [line for line in r.err.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {ckpt}: unreadable checkpoint (RuntimeError); retraining fold 1"], r.err
    _assert_same_as_reference(ref, work, 1)


def test_external_kill(ref, tmp_path):
    """SIGKILL sent from outside as soon as the first fold's checkpoint exists, wherever the run has got to
    by then; then rerun to the end."""
    work = tmp_path / "w"
    cmd = H.loop_cmd("run", ref["pool"], work, ref["preset"], ref["cache"], "--rounds", "1")
    killed = H.run_cli(cmd, tmp_path / "logs", kill_when_exists=work / "round_00" / "model_f0.pt")
    assert killed.killed, f"the run finished before it could be killed: {killed}"
    assert not (work / "round_00" / "done.json").exists()
    again = H.run_cli(cmd, tmp_path / "logs")
    assert again.code == 0, again
    _assert_same_as_reference(ref, work, 1)


def test_killed_write_leaves_no_temp_file_after_rerun(ref, tmp_path):
    work = tmp_path / "w"
    cmd = H.loop_cmd("run", ref["pool"], work, ref["preset"], ref["cache"], "--rounds", "1")
    assert H.run_cli(cmd, tmp_path / "logs", kill=[("replace", "model_f0.pt", 1)]).killed
    assert H.stray_files(work), "the kill should have left the checkpoint's temp file"
    assert H.run_cli(cmd, tmp_path / "logs").code == 0
    assert H.stray_files(work) == [], "temp files of killed writes are still there after the rerun"


# ------------------------------------------------------------------------------------------ broken shards
def _truncate_last_member(tar_path: Path) -> int:
    """Cut a shard inside its last member's data (a tar with a truncated member). Returns the samples lost."""
    with tarfile.open(tar_path) as tf:
        last = tf.getmembers()[-1]
        cut = last.offset_data + last.size // 2
    data = tar_path.read_bytes()[:cut]
    tar_path.write_bytes(data)
    return 1


def _samples_in(tar_path: Path) -> int:
    with tarfile.open(tar_path) as tf:
        return sum(1 for m in tf.getmembers() if m.name.endswith(".json"))


@pytest.mark.parametrize("streamed", [False, True], ids=["cached", "streamed"])
def test_shard_lost_and_shard_corrupt_mid_run_are_counted_not_fatal(ref, tmp_path, streamed):
    """Shard 1 ends inside a member; shard 2 is deleted after the run listed the shards (cached preset: just
    before the cache decodes it; streamed preset: after training, before scoring). The round finishes;
    report.json counts both; every readable sample is scored, the others are skipped."""
    pool = tmp_path / "pool"
    shutil.copytree(ref["pool"], pool)
    shards = sorted((pool / "shards").glob("*.tar"))
    intact = _samples_in(shards[0])
    in_corrupt = _samples_in(shards[1])
    _truncate_last_member(shards[1])
    work = tmp_path / "w"
    preset = ref["preset"]
    hook = "sfcomp.cache:decode_shard", 3
    if streamed:
        preset = tmp_path / "streamed.json"
        preset.write_text(json.dumps({**H.MICRO_PRESET, "name": "micro-streamed", "cache": False}))
        hook = "sfcomp.stream:StreamedPoolData.embed", 1
    cmd = H.loop_cmd("round", pool, work, preset, tmp_path / "cache")
    r = H.run_cli(cmd, tmp_path / "logs", kill=[("unlink_then_call", str(shards[2]), *hook)])
    assert r.code == 0, r
    assert not shards[2].exists()
    report = json.loads((work / "round_00" / "report.json").read_text())
    assert report["shard_errors"]["missing_shards"] == 1
    assert report["shard_errors"]["corrupt_members"] >= 1
    if not streamed:
        manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
        assert any("00000002.tar" in m and "does not exist" in m for m in manifest["messages"])
        assert any("00000001.tar" in m for m in manifest["messages"])
    scores = np.load(work / "round_00" / "scores.npy")
    # all of shard 0, all but the cut sample of shard 1, nothing of shard 2
    assert len(scores) == intact + in_corrupt - 1
    assert (work / "round_00" / "done.json").exists()


def test_streamed_training_whose_shards_are_gone_is_refused_not_endless(ref, tmp_path):
    """A --train-shards shard deleted mid-run: streamed training used to cycle over nothing for ever."""
    import torch

    from sfcomp.errors import BadInputError
    from sfcomp.model import create_model, load_preset
    from sfcomp.pool import Pool
    from sfcomp.stream import StreamedPoolData

    torch.set_num_threads(1)
    pool = tmp_path / "pool"
    shutil.copytree(ref["pool"], pool)
    preset = load_preset({**H.MICRO_PRESET, "cache": False})
    data = StreamedPoolData(Pool(str(pool)), preset)
    rows = data.rows_of_shards([Path(data.shards[0]).stem])
    assert len(rows) > 0
    Path(data.shards[0]).unlink()
    model, _ = create_model(preset, seed=0)
    with pytest.raises(BadInputError, match="training shard disappeared"):
        data.train(model, rows, preset, 3, seed=0, progress=False)

import subprocess
import sys
import uuid

import numpy as np
import pytest
from click.testing import CliRunner

from poolfactory import write_tiny_pool
from sfcomp import uids as U
from sfcomp.cli import COMMANDS, main


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("vpool")
    return root, write_tiny_pool(root, n=150, seed=5, samples_per_shard=50)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_valid_subset_counts(pool, tmp_path):
    root, info = pool
    chosen = info["uids"][:60]
    U.write_subset(tmp_path / "s.npy", U.hex_to_uids(chosen))
    r = run("validate-subset", tmp_path / "s.npy", "--pool", root)
    assert r.exit_code == 0, r.output
    present = sum(u in info["present"] for u in chosen)
    assert f"requested 60 (60 unique), in metadata 60/150, present in shards {present} " in r.output


@pytest.mark.parametrize("case,reason", [
    ("unsorted", "not sorted"), ("duplicates", "duplicate uids"), ("dtype", "wrong dtype"),
    ("foreign", "not in the pool's metadata"), ("bigendian", "wrong dtype"),
])
def test_violations_exit_nonzero_with_one_line(pool, tmp_path, case, reason):
    root, info = pool
    good = U.sort_uids(U.hex_to_uids(info["uids"][:20]))
    path = tmp_path / f"{case}.npy"
    if case == "unsorted":
        np.save(path, good[::-1])
    elif case == "duplicates":
        np.save(path, U.sort_uids(np.concatenate([good, good[:3]])))
    elif case == "dtype":
        np.save(path, np.arange(10, dtype=np.int64))
    elif case == "bigendian":
        np.save(path, good.astype(">u8,>u8"))
    else:
        U.write_subset(path, np.concatenate([good, U.hex_to_uids([uuid.uuid4().hex])]))
    r = run("validate-subset", path, "--pool", root)
    assert r.exit_code == 2
    err = r.stderr if hasattr(r, "stderr") else r.output
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and reason in lines[0]


def test_allow_duplicates_for_upsampling(pool, tmp_path):
    root, info = pool
    arr = U.hex_to_uids(info["uids"][:5] * 2)
    U.write_subset(tmp_path / "up.npy", arr, allow_duplicates=True)
    assert run("validate-subset", tmp_path / "up.npy", "--pool", root).exit_code == 2
    r = run("validate-subset", tmp_path / "up.npy", "--pool", root, "--allow-duplicates")
    assert r.exit_code == 0 and "requested 10 (5 unique)" in r.output


def test_help_is_light():
    """`sfcomp --help` and the format commands must not import torch or open_clip."""
    code = ("import sys; from click.testing import CliRunner; from sfcomp.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
            "r = CliRunner().invoke(main, ['validate-subset', '--help']); assert r.exit_code == 0; "
            "heavy = [m for m in ('torch', 'open_clip', 'img2dataset') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_subcommand_has_help():
    for name in COMMANDS:
        r = run(name, "--help")
        assert r.exit_code == 0, (name, r.output)
        assert "unavailable" not in r.output, (name, r.output)


def test_a_shard_that_is_a_dangling_link_counts_none_of_its_parquets_uids_as_present(tmp_path):
    import os

    import pyarrow.parquet as pq

    info = write_tiny_pool(tmp_path / "pool", n=150, seed=6, samples_per_shard=50)
    shards = tmp_path / "pool" / "shards"
    victim = sorted(shards.glob("*.tar"))[1]
    lost = set(pq.read_table(victim.with_suffix(".parquet")).to_pandas().query("status == 'success'")["uid"])
    assert lost  # its parquet still lists them as downloaded
    victim.unlink()
    os.symlink(tmp_path / "nowhere.tar", victim)
    U.write_subset(tmp_path / "s.npy", U.hex_to_uids(info["uids"]))
    r = run("validate-subset", tmp_path / "s.npy", "--pool", tmp_path / "pool")
    assert r.exit_code == 0, r.output
    present = len(set(info["present"]) - lost)
    assert f"present in shards {present} " in r.output

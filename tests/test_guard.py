"""sfcomp.guard.check_outputs, the pure check every writing command makes (through the CLI: test_input_protection)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sfcomp import guard as G
from sfcomp.errors import BadInputError


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "pool" / "shards").mkdir(parents=True)
    (tmp_path / "pool" / "shards" / "00000000.tar").write_bytes(b"x")
    (tmp_path / "s.npy").write_bytes(b"scores")
    return tmp_path


def _refused(outputs, inputs, *fragments, kind="file"):
    with pytest.raises(BadInputError) as e:
        G.check_outputs(outputs, inputs, what="-o", kind=kind)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    return e.value


def test_output_that_is_an_input(tree):
    e = _refused([tree / "s.npy"], [tree / "s.npy"], "-o is an input")
    assert e.path == str(tree / "s.npy")


def test_output_that_is_an_inputs_sidecar(tree):
    # -o s.npy.json: the output is the score file's sidecar (which does not even exist yet)
    _refused([tree / "s.npy.json"], G.with_sidecars([tree / "s.npy"]), "is an input", "s.npy.json")


def test_outputs_sidecar_that_is_an_input(tree):
    # -o x where the input is x.json: the output's own sidecar would overwrite it
    (tree / "x.json").write_text("{}")
    _refused(G.with_sidecars([tree / "x"]), [tree / "x.json"], "is an input")


def test_output_folder_that_contains_an_input(tree):
    _refused([tree / "pool"], [tree / "pool" / "shards"], "contains the input", kind="dir")


def test_output_folder_inside_an_input(tree):
    _refused([tree / "pool" / "shards" / "new"], [tree / "pool" / "shards"], "lies inside the input", kind="dir")


def test_prefix_is_not_inside(tree):
    # pool2 starts with the characters of pool but is not inside it
    G.check_outputs([tree / "pool2"], [tree / "pool"], what="-o", kind="dir")


def test_symlink_to_an_input_is_the_input(tree):
    (tree / "link.npy").symlink_to(tree / "s.npy")
    _refused([tree / "link.npy"], [tree / "s.npy"], "is an input")


def test_output_under_a_link_to_an_input_folder(tree):
    (tree / "alias").symlink_to(tree / "pool")
    _refused([tree / "alias" / "shards" / "out"], [tree / "pool" / "shards"], "lies inside", kind="dir")


def test_input_reached_through_a_link(tree):
    (tree / "alias").symlink_to(tree / "pool")
    _refused([tree / "pool"], [tree / "alias" / "shards"], "contains the input", kind="dir")


def test_dangling_link_output_resolves_to_its_target(tree):
    (tree / "dangling").symlink_to(tree / "pool" / "shards" / "new.tar")
    _refused([tree / "dangling"], [tree / "pool" / "shards"], "lies inside")


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_broken_link_output_is_refused(tree, kind):
    # writing would rename over the link (a loop, or a link to nothing), never fill what it names
    os.symlink("loop", tree / "loop")
    _refused([tree / "loop"], [tree / "s.npy"], "-o is a symlink loop", kind=kind)
    (tree / "gone").symlink_to(tree / "nowhere" / "out.npy")
    _refused([tree / "gone"], [tree / "s.npy"], "-o is a symlink to", "nowhere/out.npy, which does not exist",
             kind=kind)
    (tree / "ok").symlink_to(tree / "s.npy")
    G.check_outputs([tree / "ok"], [], what="-o")  # a link to an existing file is not broken


def test_output_under_an_existing_file(tree):
    _refused([tree / "s.npy" / "out.npy"], [], "lies under", "which is a file")


def test_output_two_levels_under_an_existing_file(tree):
    _refused([tree / "s.npy" / "a" / "b"], [], "lies under", "which is a file", kind="dir")


def test_file_output_that_is_a_folder(tree):
    _refused([tree / "pool"], [], "is an existing folder")


def test_folder_output_that_is_a_file(tree):
    _refused([tree / "s.npy"], [], "is an existing file", kind="dir")


def test_unwritable_folder(tree, monkeypatch):
    # root bypasses permission bits, so the check (os.access) is driven directly
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == str(tree) else real_access(p, mode))
    _refused([tree / "new" / "out.npy"], [], "not writable")


def _as_nobody(check) -> int:
    """Exit code of `check()` run in a child process as an unprivileged user (root writes through permission
    bits, so a test run as root drops to `nobody`): 0 when it returns True."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            code = 0 if check() else 3
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_read_only_folder():
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sfcomp-guard-"))  # /tmp is traversable by every user; tmp_path is not
    try:
        base.chmod(0o755)
        (base / "ro").mkdir(mode=0o555)
        (base / "rw").mkdir()
        (base / "rw").chmod(0o777)

        def refused(folder: str) -> bool:
            try:
                G.check_outputs([base / folder / "out.npy"], [], what="-o")
            except BadInputError as e:
                return "not writable" in str(e)
            return False

        assert (_as_nobody(lambda: refused("ro")), _as_nobody(lambda: not refused("rw"))) == (0, 0)
    finally:
        (base / "ro").chmod(0o755)
        shutil.rmtree(base)


def test_urls_are_skipped(tree):
    G.check_outputs(["s3://bucket/out.npy"], ["s3://bucket/out.npy"], what="-o")


def test_clear_outputs_pass(tree):
    G.check_outputs(G.with_sidecars([tree / "new" / "sub.npy"]), G.with_sidecars([tree / "s.npy"]), what="-o")
    G.check_outputs([tree / "pool" / "resharded"], G.pool_inputs(tree / "pool"), what="-o", kind="dir")


def test_pool_folder_itself_is_refused_through_its_parts(tree):
    _refused([tree / "pool"], G.pool_inputs(tree / "pool"), "contains the input", kind="dir")


def test_output_that_is_a_hard_link_of_an_input(tree):
    os.link(tree / "s.npy", tree / "alias.npy")
    _refused([tree / "alias.npy"], [tree / "s.npy"], "-o is an input")


def test_output_under_a_folder_that_is_an_input_by_identity(tree, monkeypatch):
    """A bind mount shows one folder at two real paths; stand in for it by giving the folders one identity."""
    (tree / "mnt").mkdir()
    real_identity = G._identity

    def identity(path):
        if os.path.realpath(path) == os.path.realpath(tree / "mnt"):
            return real_identity(str(tree / "pool" / "shards"))
        return real_identity(path)

    monkeypatch.setattr(G, "_identity", identity)
    _refused([tree / "mnt" / "out.npy"], [tree / "pool" / "shards"], "lies inside the input")
    _refused([tree / "mnt"], [tree / "pool" / "shards" / "00000000.tar"], "contains the input", kind="dir")

"""The cache-size table (bench/experiments/cache_table.py, README) is computed from `cache_bytes_per_sample`:
a real cache on disk must take exactly that many bytes a sample, and a finished cache keeps no decoded parts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import _e_harness as H

pytestmark = H.requires_fashion_mnist


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from poolfactory import write_tiny_pool

    import _input_guard
    from sfcomp.cache import build_cache
    from sfcomp.model import load_preset

    root = tmp_path_factory.mktemp("cachesize")
    write_tiny_pool(root / "pool", n=60, seed=3, samples_per_shard=30, image_size=48)
    _input_guard.register(root / "pool")
    preset = {**load_preset("tiny"), "image_size": 24, "context_length": 12}
    cache = build_cache(str(root / "pool"), preset, root / "cache", progress=False)
    return {"root": root / "cache", "preset": preset, "rows": len(cache.uids)}


def _npy_payload(path: Path) -> int:
    """Bytes of a .npy file after its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version](f)
        return path.stat().st_size - f.tell()


def test_cache_takes_the_computed_bytes_a_sample(built):
    from sfcomp.cache import cache_bytes_per_sample

    payload = sum(_npy_payload(built["root"] / n) for n in ("pixels.npy", "tokens.npy", "uids.npy", "shard.npy"))
    assert built["rows"] > 0 and payload == built["rows"] * cache_bytes_per_sample(built["preset"])


def test_finished_cache_keeps_no_decoded_parts(built):
    assert not (built["root"] / "parts").exists()


def test_cache_table_lists_every_preset_at_every_datacomp_scale():
    import subprocess
    import sys

    from sfcomp.model import available_presets

    out = subprocess.run([sys.executable, str(H.ROOT / "bench" / "experiments" / "cache_table.py")],
                         capture_output=True, text=True, check=True).stdout
    rows = [r for r in out.splitlines() if r.startswith("| `")]
    tiny = next(r for r in rows if r.startswith("| `tiny`"))
    assert (len(rows), tiny.split(" | ")[-4:]) == (len(available_presets()), ["40.4 GB", "404 GB", "4.04 TB", "40.4 TB |"])

"""The decode cache's size on disk per in-loop preset and DataComp scale (computed, nothing is built).

A preset with `"cache": true` decodes the pool once into memory-mapped arrays (sfcomp/cache.py); the others
stream shards. For every preset in sfcomp/presets/ this prints what its cache would take for DataComp's pools
(small 12.8M, medium 128M, large 1.28B, xlarge 12.8B samples; every row downloaded, real downloads get 85-95%)
and for the 57,618-sample demo pool, from `sfcomp.cache.cache_bytes_per_sample` (pixels S x S x 3 uint8 +
token ids ctx x int32 + uid 16 B + shard index 4 B; tests/test_cache_size.py checks it against a real cache).

    python bench/experiments/cache_table.py [--demo-pool-size 57618]
"""
from __future__ import annotations

import argparse

from sfcomp.cache import cache_bytes_per_sample
from sfcomp.model import available_presets, load_preset
from sfcomp.workdir import SCALE_POOL_SIZES


def human(nbytes: float) -> str:
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{nbytes:.0f} B"


def table(demo_pool_size: int) -> str:
    scales = {"demo pool": demo_pool_size, **SCALE_POOL_SIZES}
    head = ["preset", "S px, ctx", "data path", "per sample", *scales]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in available_presets():
        p = load_preset(name)
        per = cache_bytes_per_sample(p)
        path = "cache" if p.get("cache") else "streamed"
        sizes = [human(per * n) for n in scales.values()]
        rows.append(f"| `{name}` | {p['image_size']}, {p['context_length']} | {path} | {human(per)} | " + " | ".join(sizes) + " |")
    return "\n".join(rows) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-pool-size", type=int, default=57618)
    print(table(ap.parse_args(argv).demo_pool_size), end="")


if __name__ == "__main__":
    main()

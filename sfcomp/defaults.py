"""`sfcomp run`'s defaults, chosen by `make sweep` (docs/bench/sweep.md), read from configs/loop_defaults.json.
No heavy imports: the CLI reads them to build its options."""
from __future__ import annotations

import json
from pathlib import Path

LOOP_DEFAULTS: dict = {k: v for k, v in json.loads((Path(__file__).parent / "configs" / "loop_defaults.json")
                                                  .read_text()).items() if not k.startswith("_")}

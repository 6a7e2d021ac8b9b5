"""`sfcomp` for torchrun with a kill -9 point on one rank (tests/test_distributed.py).

    SFCOMP_E_KILL='[["call", "torch.optim:AdamW.step", 8]]' SFCOMP_E_KILL_RANK=1 \
        python -m torch.distributed.run --nproc_per_node 2 tests/_e_torchrun_entry.py run ...

The rank named SIGKILLs itself at the point (see _e_harness); every other rank, and every rank when the variables
are unset, is the plain `sfcomp` command.
"""
import json
import os
import sys

if __name__ == "__main__":
    import _e_harness as H

    if os.environ.get("SFCOMP_E_KILL") and os.environ.get("RANK") == os.environ.get("SFCOMP_E_KILL_RANK"):
        for point in json.loads(os.environ["SFCOMP_E_KILL"]):
            H._install(tuple(point))
    from sfcomp.cli import main

    sys.exit(main(sys.argv[1:], prog_name="sfcomp"))

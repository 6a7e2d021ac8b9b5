"""torch.distributed for the loop: start the process group under torchrun, and the two collectives a round needs
(barrier, all_gather). Every helper is a no-op or a one-rank answer outside torchrun, so single-process runs take
the same code path with one rank. torch is imported inside the functions: importing this module is free.
"""
from __future__ import annotations

import datetime
import os
from typing import Any

from .errors import BadInputError


def maybe_init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (WORLD_SIZE > 1): nccl on GPU, gloo on CPU. (rank, world)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # rank 0 may build the pool cache (hours for a large pool) while the others wait in a barrier
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    from .train import dist_info

    return dist_info()


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather(obj: Any) -> list:
    """Every rank's `obj`, in rank order (a collective: all ranks must call it)."""
    import torch.distributed as dist

    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def check_device(device: str | None) -> str | None:
    """Refuse a --device torch cannot parse or this machine does not have; None stays None (the default)."""
    if device is None:
        return None
    import torch

    try:
        d = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise BadInputError(None, f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, "
                                  "mps)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(None, f"--device {device!r}: CUDA is not available on this machine; "
                                      "use --device cpu")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise BadInputError(None, f"--device {device!r}: this machine has {n} CUDA device(s) "
                                      f"(cuda:0..cuda:{n - 1})")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise BadInputError(None, f"--device {device!r}: MPS is not available on this machine; "
                                      "use --device cpu")
    elif d.type != "cpu":
        raise BadInputError(None, f"--device {device!r}: only cpu, cuda[:N] and mps are supported")
    return device

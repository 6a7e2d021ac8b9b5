"""Under torchrun a global batch that does not split evenly over the ranks (a 75-row fold on 2 ranks) gives the
same loss and the same gradients as one process on the whole batch (sfcomp.train.RankBalancedClipLoss)."""
from __future__ import annotations

import numpy as np
import torch
import torch.multiprocessing as mp

from sfcomp.train import RankBalancedClipLoss, rank_slices

N, D, WORLD = 75, 16, 2


def _features(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(N, D, generator=g, dtype=torch.float64), dim=-1)
    return img, txt, torch.tensor(7.0, dtype=torch.float64)


def _rank(rank: int, init: str, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    img, txt, scale = _features()
    lo, hi = rank_slices(N, WORLD)[rank]
    i, t = img[lo:hi].clone().requires_grad_(), txt[lo:hi].clone().requires_grad_()
    loss = RankBalancedClipLoss(rank, WORLD)(i, t, scale)
    loss.backward()
    # DDP averages parameter gradients over the ranks, so the gradient that reaches the model is grad / WORLD
    out[rank] = (loss.item(), (i.grad / WORLD).numpy(), (t.grad / WORLD).numpy())
    dist.destroy_process_group()


def test_uneven_global_batch_matches_one_process(tmp_path):
    from open_clip import ClipLoss

    img, txt, scale = _features()
    i, t = img.clone().requires_grad_(), txt.clone().requires_grad_()
    ref = ClipLoss()(i, t, scale)
    ref.backward()

    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        out = m.dict()
        procs = [ctx.Process(target=_rank, args=(r, f"file://{tmp_path}/init", out)) for r in range(WORLD)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * WORLD
        out = dict(out)
    assert [hi - lo for lo, hi in rank_slices(N, WORLD)] == [37, 38]
    np.testing.assert_allclose(sum(out[r][0] for r in range(WORLD)) / WORLD, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([out[r][1] for r in range(WORLD)]), i.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(np.concatenate([out[r][2] for r in range(WORLD)]), t.grad.numpy(), atol=1e-12)


def test_global_batch_does_not_depend_on_world_size():
    from sfcomp.train import batch_indices

    for batch, steps in ((64, 3), (256, 2)):  # 64 splits evenly over 2 ranks; the whole 75-row fold does not
        one = list(batch_indices(75, batch, steps, seed=1))
        two = [np.sort(np.concatenate(b)) for b in zip(*(batch_indices(75, batch, steps, seed=1, rank=r,
                                                                       world_size=2) for r in range(2)))]
        assert len(one) == len(two) == steps
        assert all(np.array_equal(a, b) for a, b in zip(one, two))

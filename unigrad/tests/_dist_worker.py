"""Run under ``torchrun --nproc_per_node=2``: every objective on each rank's half of a batch against the same
objective on the whole batch in one process. Writes the largest differences to ``argv[1]`` (rank 0)."""

import contextlib
import json
import sys

import torch
import torch.distributed as tdist
import torch.nn.functional as F

from repro_shared import dist
from unigrad.losses import (BarlowTwinsGradLoss, BarlowTwinsLoss, BYOLDirectPredGradLoss, InfoNCELoss, MoCoGradLoss,
                            SimCLRGradLoss, UniGradLoss, VICRegGradLoss, VICRegLoss)
from unigrad.models.siamese import SiameseOutput

N, C = 8, 5  # global batch, embedding dim


@contextlib.contextmanager
def as_single_process():
    """Hide the process group: the objective then computes the whole-batch reference on this rank alone."""
    real = tdist.is_initialized
    tdist.is_initialized = lambda: False
    try:
        yield
    finally:
        tdist.is_initialized = real


def main(out_path: str) -> None:
    info = dist.init("cpu")
    w, r = info.world_size, info.rank
    rows = slice(r * N // w, (r + 1) * N // w)
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(N, C, dtype=torch.float64, generator=g) for _ in range(4)]  # the same on every rank
    u = [F.normalize(t, dim=1) for t in z]
    diffs = {}
    grad_losses = {
        "unigrad": lambda: UniGradLoss(C, lambd=5.0, rho=0.9), "byol_grad": lambda: BYOLDirectPredGradLoss(C),
        "simclr_grad": lambda: SimCLRGradLoss(0.2), "moco_grad": lambda: MoCoGradLoss(C, queue_size=32),
        "barlow_twins_grad": lambda: BarlowTwinsGradLoss(50.0), "vicreg_grad": lambda: VICRegGradLoss(7.0),
    }
    for name, make in grad_losses.items():
        torch.manual_seed(1)
        local = make().double()
        torch.manual_seed(1)
        whole = make().double()
        for step in range(2):  # two steps: F's EMA and the queue carry state from one step to the next
            batch = [t.roll(step, 0) for t in u]
            with as_single_process():
                gw = whole.gradients(*batch)
            gl = local.gradients(*[t[rows] for t in batch])
            diffs[f"{name}/step{step}"] = max(float((gl[i] - gw[i][rows]).abs().max()) for i in range(2))
        for buf in ("F", "queue"):
            if hasattr(local, buf):
                diffs[f"{name}/{buf}"] = float((getattr(local, buf) - getattr(whole, buf)).abs().max())
    # original losses: every rank back-propagates through the all-gathered batch; its local gradient is
    # W x the gradient of the whole-batch loss (DDP's average then gives the whole-batch gradient)
    for name, make in {"infonce": lambda: InfoNCELoss(0.2, target="online"), "barlow_twins": lambda: BarlowTwinsLoss(),
                       "vicreg": lambda: VICRegLoss()}.items():
        zl = [t[rows].clone().requires_grad_() for t in z[:2]]
        make()(SiameseOutput(*zl))["loss"].backward()
        zw = [t.clone().requires_grad_() for t in z[:2]]
        with as_single_process():
            make()(SiameseOutput(*zw))["loss"].backward()
        diffs[name] = max(float((zl[i].grad / w - zw[i].grad[rows]).abs().max()) for i in range(2))
    if r == 0:
        with open(out_path, "w") as fh:
            json.dump({"world": w, "diffs": diffs}, fh)
    dist.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])

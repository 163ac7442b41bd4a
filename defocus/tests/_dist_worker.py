"""Worker for test_dist.py: a few training steps, single process or one rank of a gloo DDP group.

Every global batch of 8 images is split in equal halves across the ranks; rank 0 saves the weights.
Usage: python _dist_worker.py OUT.pt   (under torchrun for the distributed run)
"""

import sys

import torch

from repro_shared import dist

from defocus.engine import train_one_epoch
from defocus.models import build_model


def main(out):
    info = dist.init("cpu")
    torch.manual_seed(0)
    model = build_model("defocus_tiny_test")
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(24, 3, 32, 32, generator=g), torch.randint(0, 10, (24,), generator=g)
    per = 8 // info.world_size
    batches = [(x[i + info.rank * per: i + (info.rank + 1) * per], y[i + info.rank * per: i + (info.rank + 1) * per])
               for i in range(0, 24, 8)]
    # SGD: Adam's m / sqrt(v) turns float-rounding noise of near-zero gradients into lr-sized steps
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    wrapped = dist.wrap_model(model, strategy="ddp")
    train_one_epoch(wrapped, batches, opt, None, epoch=0, device=torch.device("cpu"), drop_path_rate=0.0,
                    aux_weight=0.5, clip_grad=10.0)
    if info.rank == 0:
        torch.save(model.state_dict(), out)
    dist.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])

"""Workers for test_dist, run in fresh processes (each sets up its own process group).

``dist_worker.py ddp OUT``: under torchrun (2 ranks) or alone; trains a small model for 5 steps on a
global batch of 8 (each rank takes its slice) and rank 0 saves the final weights to OUT.
``dist_worker.py fsdp OUT``: the same with FSDP2 (``fully_shard`` per Linear); rank 0 saves the full state
gathered by ``checkpoint.save_checkpoint``.
``dist_worker.py deepspeed OUT``: one ZeRO-2 step with DeepSpeed on CPU/gloo; saves the weights after it.
"""

import sys
from pathlib import Path

import torch
from torch import nn

from repro_shared import checkpoint, dist

GLOBAL_BATCH, STEPS = 8, 5


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(GLOBAL_BATCH, 4, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def train(out: Path, strategy: str) -> None:
    info = dist.init("cpu")
    model = dist.wrap_model(make_model(), strategy, shard_modules=(nn.Linear,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    per_rank = GLOBAL_BATCH // info.world_size
    for step in range(STEPS):
        x, y = batch(step)
        sl = slice(info.rank * per_rank, (info.rank + 1) * per_rank)
        loss = (model(x[sl]) - y[sl]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ckpt = checkpoint.save_checkpoint(out.with_suffix(".ckpt") / "ckpt_000000005.pt", model=model, optimizer=opt, step=STEPS)
    if info.is_main:
        state = torch.load(ckpt, weights_only=True)["model"]
        torch.save({"state": state, "world": info.world_size}, out)
    dist.cleanup()


def deepspeed_step(out: Path) -> None:
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = dist.deepspeed_initialize(model, opt, zero_stage=2, train_micro_batch_size_per_gpu=GLOBAL_BATCH)
    x, y = batch(0)
    loss = (engine(x) - y).pow(2).mean()
    engine.backward(loss)
    engine.step()
    assert engine.zero_optimization_stage() == 2
    torch.save({"state": {k: v.detach().clone() for k, v in engine.module.state_dict().items()}}, out)
    dist.cleanup()


if __name__ == "__main__":
    if sys.argv[1] == "deepspeed":
        deepspeed_step(Path(sys.argv[2]))
    else:
        train(Path(sys.argv[2]), sys.argv[1])

"""The training loop: the lr schedule's call offset (the official loop sets the lr of step k from k / len before
the step), checkpoints mid-epoch, and the stop at the first non-finite loss term."""

import math

import pytest
import torch
from torch.utils.data import TensorDataset

from addp.engine import LoopConfig, lr_at, train_loop
from repro_shared.data import build_loader
from repro_shared.guards import NonFiniteError


def _setup(tmp_path, n=16, batch=4):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    loader = build_loader(TensorDataset(torch.randn(n, 3), torch.randn(n, 1)), batch_size=batch, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    return model, loader, opt


def test_lr_of_each_step_follows_the_official_offset(tmp_path):
    model, loader, opt = _setup(tmp_path)
    seen = []

    def step(batch):
        seen.append(opt.param_groups[0]["lr"])
        return {"loss": (model(batch[0]) - batch[1]).pow(2).mean()}

    cfg = LoopConfig(epochs=3, lr=0.1, warmup_epochs=1, min_lr=0.01, ckpt_every=100)
    train_loop(name="t", model=model, step_fn=step, optimizer=opt, loader=loader, cfg=cfg, ckpt_dir=tmp_path,
               device=torch.device("cpu"))
    # 4 steps per epoch: step k runs at the fractional epoch k / 4 -> warm-up 0, 0.025, 0.05, 0.075, then the peak
    assert seen[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert seen[-1] == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))  # epoch 2.75
    assert lr_at(1.0, cfg) == pytest.approx(0.1) and lr_at(3.0, cfg) == pytest.approx(0.01)


def test_checkpoints_mid_epoch_and_stop_on_nan(tmp_path):
    model, loader, opt = _setup(tmp_path)
    calls = {"n": 0}

    def step(batch):
        calls["n"] += 1
        loss = (model(batch[0]) - batch[1]).pow(2).mean()
        return {"loss": loss, "aux": loss * (float("inf") if calls["n"] == 7 else 1.0)}

    cfg = LoopConfig(epochs=3, lr=0.1, ckpt_every=3)
    with pytest.raises(NonFiniteError, match=r"non-finite loss term 'aux' = inf .* at step 6 \(epoch 1\)"):
        train_loop(name="t", model=model, step_fn=step, optimizer=opt, loader=loader, cfg=cfg, ckpt_dir=tmp_path,
                   device=torch.device("cpu"))
    assert sorted(p.name for p in tmp_path.glob("ckpt_*.pt")) == ["ckpt_000000003.pt", "ckpt_000000006.pt"]

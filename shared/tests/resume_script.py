"""A tiny training loop used by test_checkpoint: ``resume_script.py OUT_DIR KILL_AT_STEP``.

Trains 20 steps with dropout and per-step random data (so RNG restore matters), checkpointing every
5 steps with ``resume="auto"``. With ``KILL_AT_STEP >= 0`` it sends itself SIGKILL after that step.
Writes ``OUT_DIR/final.pt`` (the model state dict) at the end.
"""

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from repro_shared import checkpoint, run

TOTAL_STEPS, EVERY = 20, 5


def main(out_dir: Path, kill_at: int) -> None:
    run.seed_everything(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    ckpt_dir = out_dir / "checkpoints"
    state = checkpoint.resume(ckpt_dir, "auto", model=model, optimizer=opt, scheduler=sched)
    start = 0 if state is None else state["step"]
    if state is not None:
        print(f"resumed from step {start}", flush=True)
    for step in range(start + 1, TOTAL_STEPS + 1):
        x = torch.randn(8, 6)
        loss = (model(x).squeeze(1) - x.sum(1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % EVERY == 0:
            checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpt_dir, step), model=model, optimizer=opt,
                                       scheduler=sched, step=step, keep_last=2)
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save(model.state_dict(), out_dir / "final.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

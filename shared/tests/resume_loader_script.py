"""Mid-epoch exact resume through ``repro_shared.data``: ``resume_loader_script.py OUT_DIR KILL_AT_STEP``.

3 epochs of 6 steps over a dataset with random augmentation, dropout in the model, 2 loader workers,
a checkpoint every 4 optimizer steps (so most land in the middle of an epoch), ``resume="auto"``. With
``KILL_AT_STEP >= 0`` the process sends itself SIGKILL after that step (rank 0 kills the whole group
under torchrun). Writes ``OUT_DIR/final.pt`` (weights) and ``OUT_DIR/losses_<rank>.txt`` (one line per
step: ``step loss``).
"""

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from repro_shared import checkpoint, dist
from repro_shared.data import build_loader, seed_step

EPOCHS, BATCH, EVERY, SEED = 3, 4, 4, 7


class NoisyLines(Dataset):
    """y = sum(x); x gets a random flip and noise each time it is loaded (augmentation)."""

    def __init__(self):
        self.x = torch.linspace(-1, 1, 24 * 5).reshape(24, 5)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i] * (1 if torch.rand(()) < 0.5 else -1) + 0.05 * torch.randn(5)
        return x, x.sum(0, keepdim=True)


def main(out: Path, kill_at: int) -> None:
    info = dist.init("cpu")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    wrapped = dist.wrap_model(model, "ddp" if info.world_size > 1 else "none")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader = build_loader(NoisyLines(), batch_size=BATCH // info.world_size, seed=SEED, num_workers=2)
    ckpt_dir = out / "checkpoints"
    # no RNG blobs restored: all randomness is derived from (seed, epoch, index / step, rank)
    state = checkpoint.resume(ckpt_dir, "auto", model=model, optimizer=opt, restore_rng=False)
    step = 0 if state is None else state["step"]
    start_epoch, start_batch = divmod(step, len(loader))
    log = open(out / f"losses_{info.rank}.txt", "a")
    for epoch in range(start_epoch, EPOCHS):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        for i, (x, y) in enumerate(loader, start=loader.start_batch):
            seed_step(SEED, epoch, i)
            loss = (wrapped(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            log.write(f"{step} {loss.item():.10f}\n")
            log.flush()
            if step % EVERY == 0:
                checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpt_dir, step), model=model, optimizer=opt,
                                           epoch=epoch, step=step, keep_last=2)
            if step == kill_at and info.is_main:
                os.killpg(os.getpgid(0), signal.SIGKILL) if info.world_size > 1 else os.kill(os.getpid(), signal.SIGKILL)
    if info.is_main:
        torch.save(model.state_dict(), out / "final.pt")
    dist.cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))

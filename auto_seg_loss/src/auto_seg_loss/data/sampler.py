"""Resumable infinite batch sampler: iteration ``it`` always sees the same batch, so a resumed run
continues exactly where the interrupted one stopped (epoch e is ``randperm(n)`` seeded by seed + e,
cut into ``n // (batch_size * world_size)`` full global batches; rank r takes the r-th slice of each)."""

from __future__ import annotations

import torch


class InfiniteBatchSampler(torch.utils.data.Sampler):
    def __init__(self, num_items: int, batch_size: int, seed: int = 0, start_iter: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if num_items < batch_size * world_size:
            raise ValueError(f"dataset has {num_items} items, fewer than one global batch ({batch_size} x "
                             f"{world_size} processes); lower the batch size")
        self.n, self.bs, self.seed, self.start, self.shuffle = num_items, batch_size, seed, start_iter, shuffle
        self.rank, self.world = rank, world_size

    def __iter__(self):
        per_epoch = self.n // (self.bs * self.world)
        epoch, pos = divmod(self.start, per_epoch)
        while True:
            order = (torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                     if self.shuffle else torch.arange(self.n))
            for b in range(pos, per_epoch):
                first = (b * self.world + self.rank) * self.bs
                yield order[first:first + self.bs].tolist()
            epoch, pos = epoch + 1, 0

"""Data loading whose randomness is a function of (seed, epoch, index): exact resume, even mid-epoch.

A training run is exactly resumable when every random number a step consumes is derived from values
the checkpoint holds, not from RNG streams that advanced in a process that was killed. Here:

- the sample order of epoch ``e`` is a permutation seeded by ``(seed, e)`` (same on every rank; each
  rank takes its strided share, as :class:`torch.utils.data.DistributedSampler` does);
- each sample's augmentation is seeded by ``(seed, e, index)`` inside :class:`SeededDataset`, so it
  does not depend on the worker that loads it nor on what that worker loaded before;
- each training step reseeds the global RNGs (dropout, drop path, Mixup, masking done on the main
  process) with :func:`seed_step` ``(seed, epoch, step, rank)``.

A resumed run calls :meth:`ResumableLoader.set_epoch` ``(epoch, start_batch=k)`` to skip the ``k``
batches the killed run had consumed, and is then bit-identical to the run that was never killed.

```python
loader = build_loader(train_set, batch_size=64, seed=cfg.seed, num_workers=8)
for epoch in range(start_epoch, epochs):
    loader.set_epoch(epoch, start_batch=start_batch if epoch == start_epoch else 0)
    for i, batch in enumerate(loader, start=loader.start_batch):
        seed_step(cfg.seed, epoch, i, rank)
        ...
```
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import dist

__all__ = ["derive_seed", "seed_step", "ResumableBatchSampler", "SeededDataset", "ResumableLoader",
           "build_loader", "check_dataset_size"]

_SAMPLE_SALT = 0x5A3D  # keeps per-sample seeds apart from per-step seeds with the same numbers


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the integers ``parts`` (numpy ``SeedSequence``).

    Distinct tuples give statistically independent streams; ``derive_seed(0, 1) != derive_seed(1, 0)``.

    Raises:
        ValueError: if a part is negative (``SeedSequence`` takes non-negative entropy only).
    """
    ints = [int(p) for p in parts]
    if any(p < 0 for p in ints):
        raise ValueError(f"seed parts must be non-negative integers, got {ints}")
    hi, lo = (int(v) for v in np.random.SeedSequence([len(ints), *ints]).generate_state(2, np.uint32))
    return ((hi << 32) | lo) & (2**63 - 1)


def _seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # also seeds every CUDA device


def seed_step(seed: int, epoch: int, step: int, rank: int | None = None) -> int:
    """Reseed python, numpy and torch (CPU and CUDA) from ``(seed, epoch, step, rank)``; returns the seed.

    Call it at the start of every training step, after the batch was fetched: dropout, drop path,
    Mixup/CutMix and anything else drawn from the global RNGs in the step then depend only on these
    four numbers, which a checkpoint holds. ``rank`` defaults to this process's rank.
    """
    s = derive_seed(seed, epoch, step, dist.get_rank() if rank is None else rank)
    _seed_all(s)
    return s


def check_dataset_size(num_samples: int, batch_size: int, *, world_size: int = 1, drop_last: bool = True,
                       key: str = "train.batch_size", name: str = "training set") -> None:
    """Fail before training if one epoch would run zero steps.

    Raises:
        ValueError: naming both numbers and the config ``key`` to change, when ``num_samples`` is smaller
            than one global batch (``batch_size * world_size``) with ``drop_last``, or zero.
    """
    global_batch = int(batch_size) * int(world_size)
    if num_samples <= 0:
        raise ValueError(f"the {name} is empty (0 samples); check the data path and its layout")
    if drop_last and num_samples < global_batch:
        batch = f"{batch_size} x {world_size} processes = {global_batch}" if world_size > 1 else f"{batch_size}"
        raise ValueError(
            f"the {name} has {num_samples} samples, fewer than one batch of {batch}, "
            f"so an epoch would run no step; lower {key} (to at most {num_samples // max(world_size, 1)}) or add data")


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys in an order seeded by ``(seed, epoch)``, split over ranks.

    Args:
        num_samples: dataset length N.
        batch_size: per-rank batch size.
        shuffle: permute by ``(seed, epoch)``; otherwise ``0..N-1``.
        drop_last: drop the last incomplete batch of this rank; without it the index list is padded
            (wrapping around) to a multiple of ``world_size``, as ``DistributedSampler`` does.
        rank, world_size: this process's share is ``order[rank::world_size]`` (defaults from the process group).

    The keys carry the epoch so that :class:`SeededDataset` can seed each sample by ``(seed, epoch, index)``.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, rank: int | None = None, world_size: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.rank = dist.get_rank() if rank is None else int(rank)
        self.world_size = dist.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order and skip its first ``start_batch`` batches (a resumed epoch)."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} is outside 0..{self.batches_per_epoch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def epoch_order(self) -> list[int]:
        """The global sample order of ``self.epoch`` (``num_samples`` dataset indices, before the split over
        ranks): a permutation seeded by ``(seed, epoch)``, or ``0..N-1`` without shuffling. Subclasses
        override it to draw another order (e.g. a weighted mixture of sources), keeping the rank split."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            return torch.randperm(self.num_samples, generator=g).tolist()
        return list(range(self.num_samples))

    def _rank_indices(self) -> list[int]:
        n, w = self.num_samples, self.world_size
        order = self.epoch_order()
        if w > 1:
            per_rank = n // w if self.drop_last else -(-n // w)
            total = per_rank * w
            order = (order + order[: max(total - n, 0)] * (1 + total // max(n, 1)))[:total]
            order = order[self.rank:total:w]
        return order

    @property
    def samples_per_rank(self) -> int:
        n, w = self.num_samples, self.world_size
        return n if w == 1 else (n // w if self.drop_last else -(-n // w))

    @property
    def batches_per_epoch(self) -> int:
        m, b = self.samples_per_rank, self.batch_size
        return m // b if self.drop_last else -(-m // b)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx, b = self._rank_indices(), self.batch_size
        for k in range(self.start_batch, self.batches_per_epoch):
            yield [(self.epoch, i) for i in idx[k * b:(k + 1) * b]]


class SeededDataset(Dataset):
    """Wraps a map-style dataset so that sample ``(epoch, index)`` is drawn with RNGs seeded by
    ``(seed, epoch, index)``: python ``random``, numpy and torch, so torchvision / timm / PIL
    augmentations are reproducible whichever worker loads the sample.

    On the main process (``num_workers=0``) the global RNG states are restored afterwards, so that
    loading does not perturb the training step's randomness.
    """

    def __init__(self, base: Dataset, seed: int = 0):
        self.base, self.seed = base, int(seed)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        in_main = torch.utils.data.get_worker_info() is None
        if in_main:
            saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        _seed_all(derive_seed(self.seed, _SAMPLE_SALT, epoch, index))
        try:
            return self.base[index]
        finally:
            if in_main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class ResumableLoader:
    """A :class:`~torch.utils.data.DataLoader` over :class:`SeededDataset` with a
    :class:`ResumableBatchSampler`; ``len(loader)`` is the full number of batches of an epoch.

    Use :meth:`set_epoch` ``(epoch, start_batch)`` before iterating; iteration then yields the batches
    ``start_batch, ..., len(self) - 1`` of that epoch.
    """

    def __init__(self, dataset: Dataset, batch_sampler: ResumableBatchSampler, **loader_kwargs: Any):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        # a private generator for the workers' base seeds: iterating must not consume the global RNG
        # (the samples are seeded by SeededDataset, so these base seeds do not affect any sample)
        self._loader = DataLoader(SeededDataset(dataset, batch_sampler.seed), batch_sampler=batch_sampler,
                                  generator=torch.Generator().manual_seed(batch_sampler.seed), **loader_kwargs)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.batch_sampler.set_epoch(epoch, start_batch)

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch

    @property
    def start_batch(self) -> int:
        return self.batch_sampler.start_batch

    def __len__(self) -> int:
        return self.batch_sampler.batches_per_epoch

    def __iter__(self) -> Iterator[Any]:
        return iter(self._loader)


def build_loader(dataset: Dataset, *, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = 0, collate_fn: Callable[[Sequence[Any]], Any] | None = None,
                 pin_memory: bool = False, persistent_workers: bool = False, rank: int | None = None,
                 world_size: int | None = None, batch_size_key: str = "train.batch_size",
                 name: str = "training set") -> ResumableLoader:
    """A resumable training loader (see the module docstring); checks the dataset holds one batch.

    Args:
        dataset: map-style dataset (``len`` and ``__getitem__(int)``).
        batch_size: per-rank batch size.
        batch_size_key, name: used in the error when the dataset is smaller than one global batch.

    Raises:
        ValueError: from :func:`check_dataset_size`.
    """
    ws = dist.get_world_size() if world_size is None else int(world_size)
    check_dataset_size(len(dataset), batch_size, world_size=ws, drop_last=drop_last, key=batch_size_key,  # type: ignore[arg-type]
                       name=name)
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed=seed, shuffle=shuffle,  # type: ignore[arg-type]
                                    drop_last=drop_last, rank=rank, world_size=ws)
    kwargs: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate_fn)
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
    return ResumableLoader(dataset, sampler, **kwargs)

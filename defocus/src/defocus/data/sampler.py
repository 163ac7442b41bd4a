"""Resumable training loaders: ``repro_shared.data.build_loader`` and a resumable repeated-augmentation sampler.

Every random number of a training epoch is a function of ``(seed, epoch, index)`` (sample order and each
sample's augmentation, see ``repro_shared.data``), so a run killed in the middle of an epoch and resumed
with ``loader.set_epoch(epoch, start_batch)`` sees exactly the batches the uninterrupted run saw.

Repeated augmentation (DeiT's ``RASampler``, used by the official ImageNet-1k recipe, spec §3.4): every
sample of the epoch's permutation appears ``repeats`` times in a row, the copies go to different ranks,
and each rank keeps ``floor(N // 256 * 256 / world_size)`` samples. The copies are distinct keys
``r * N + i`` of a :class:`RepeatedDataset` view, so each copy gets its own augmentation seed
``(seed, epoch, r * N + i)`` (with the plain index the three copies would be identical).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from repro_shared import dist
from repro_shared.data import (ResumableBatchSampler, ResumableLoader, SkipNoneCollate, build_loader,
                               check_dataset_size, derive_seed)

__all__ = ["RepeatedDataset", "RepeatAugBatchSampler", "build_train_loader"]


class RepeatedDataset(Dataset):
    """View of ``base`` with ``repeats`` copies: item ``r * N + i`` is ``base[i]`` (N = ``len(base)``)."""

    def __init__(self, base: Dataset, repeats: int):
        self.base, self.repeats, self.n = base, int(repeats), len(base)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n * self.repeats

    def __getitem__(self, key: int) -> Any:
        return self.base[key % self.n]


class RepeatAugBatchSampler(ResumableBatchSampler):
    """Batches of ``(epoch, r * N + i)`` keys in DeiT's repeated-augmentation order, seeded by ``(seed, epoch)``.

    Args:
        num_samples: N, the length of the base dataset (the sampler draws keys of a ``RepeatedDataset``).
        repeats: copies of each sample per epoch (3 officially).
        selected_round: each rank keeps ``floor(N // selected_round * selected_round / world_size)`` samples
            (DeiT / official: 256); datasets smaller than ``selected_round`` keep ``ceil(N / world_size)``
            (timm's fallback).

    Raises:
        ValueError: when a rank's share holds less than one batch (numbers and keys named).
    """

    def __init__(self, num_samples: int, batch_size: int, *, repeats: int = 3, selected_round: int = 256,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None):
        super().__init__(num_samples, batch_size, seed=seed, shuffle=True, drop_last=True, rank=rank,
                         world_size=world_size)
        self.repeats, self.selected_round = int(repeats), int(selected_round)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"repeated augmentation keeps {self.samples_per_rank} of the {num_samples} training samples per "
                f"process, fewer than one batch of {batch_size}; lower train.batch_size or set data.repeated_aug=false")

    @property
    def samples_per_rank(self) -> int:
        n, w, r = self.num_samples, self.world_size, self.selected_round
        per_rank_total = -(-n * self.repeats // w)
        kept = n // r * r // w if (r and n >= r) else -(-n // w)
        return min(kept, per_rank_total)

    def _rank_indices(self) -> list[int]:
        n, w = self.num_samples, self.world_size
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g).tolist()
        keys = [r * n + i for i in order for r in range(self.repeats)]  # copies adjacent -> different ranks
        total = -(-n * self.repeats // w) * w
        return [keys[j % len(keys)] for j in range(self.rank, total, w)][: self.samples_per_rank]


def build_train_loader(dataset: Dataset, *, batch_size: int, seed: int, num_workers: int = 0,
                       repeated_aug: bool = False, skip_corrupt: bool = False,
                       collate_fn: Callable[[Sequence[Any]], Any] | None = None,
                       pin_memory: bool = False, batch_size_key: str = "train.batch_size") -> ResumableLoader:
    """Resumable training loader over ``dataset`` (per-rank ``batch_size``, drop_last).

    ``skip_corrupt`` wraps the collate in :class:`SkipNoneCollate` (unreadable samples come back as None
    from the dataset and are dropped from their batch). Repeated augmentation as in the module docstring.

    Raises:
        ValueError: the dataset is smaller than one global batch (``check_dataset_size``: both numbers and
            the key ``batch_size_key``), or the repeated-augmentation share of a rank is.
    """
    if skip_corrupt:
        collate_fn = SkipNoneCollate(collate_fn or default_collate)
    if not repeated_aug:
        return build_loader(dataset, batch_size=batch_size, seed=seed, num_workers=num_workers, collate_fn=collate_fn,
                            pin_memory=pin_memory, batch_size_key=batch_size_key)
    world = dist.get_world_size()
    check_dataset_size(len(dataset), batch_size, world_size=world, key=batch_size_key)  # type: ignore[arg-type]
    sampler = RepeatAugBatchSampler(len(dataset), batch_size, repeats=3, seed=seed,  # type: ignore[arg-type]
                                    world_size=world)
    kwargs: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate_fn)
    return ResumableLoader(RepeatedDataset(dataset, 3), sampler, **kwargs)

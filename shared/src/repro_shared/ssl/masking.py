"""BEiT block-wise masking with SiameseIM's fixed-count top-up.

The generator draws rectangular blocks of patches until ``num_masking_patches`` are masked, then (with
``fixed_count=True``, SiameseIM's setting) masks randomly chosen remaining cells so that *every* mask has
exactly ``num_masking_patches`` ones. A fixed count lets a batch drop the masked tokens with one reshape.

Algorithm (BEiT ``MaskingGenerator``, SiameseIM ``util/masking_generator.py``; spec sim.md section 2.5).
With ``cap = min(num_masking_patches - count, max_num_patches)``, repeat until ``count`` reaches the target:

1. up to 10 attempts: ``area = uniform(min_num_patches, cap)``, ``aspect = exp(uniform(log a0, log a1))``,
   ``h = round(sqrt(area * aspect))``, ``w = round(sqrt(area / aspect))`` (Python rounding, half to even);
   if ``h < H`` and ``w < W``: ``top = randint(0, H - h)``, ``left = randint(0, W - w)`` (inclusive) and,
   if the box adds between 1 and ``cap`` new cells, mask them; stop at the first attempt that masked some;
2. if no attempt masked anything, leave the loop.

Top-up: shuffle the indices of the unmasked cells (row-major order) with ``shuffle`` and mask the first
``num_masking_patches - count`` of them.

The random calls are made in exactly this order (``uniform``, ``uniform``, then ``randint``, ``randint``
only when the size check passes, then one ``shuffle``) on Python's ``random`` module or on a given
``random.Random``, so that a seeded stream reproduces the official masks bit for bit.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

import numpy as np

__all__ = ["BlockMaskGenerator"]


class _PyRandom(Protocol):  # the part of random.Random the generator uses
    def uniform(self, a: float, b: float) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def shuffle(self, x: list) -> None: ...


class BlockMaskGenerator:
    """Block-wise patch mask on an ``(H, W)`` grid; ``1`` = masked (hidden from the online encoder).

    Args:
        grid_size: ``G`` (square grid) or ``(H, W)``, e.g. 14 for 224 px images with 16 px patches.
        num_masking_patches: number of cells to mask (SiameseIM ViT-B: 118 of 196).
        min_num_patches: lower bound of one block's area in cells (BEiT default 4; SiameseIM passes 16).
        max_num_patches: upper bound of one block's area; default ``num_masking_patches``.
        min_aspect: lower bound of a block's aspect ratio h/w; the upper bound is ``max_aspect`` or
            ``1 / min_aspect``. Drawn log-uniformly.
        fixed_count: top up with random cells so that every mask has exactly ``num_masking_patches``
            ones (SiameseIM); ``False`` is BEiT's plain generator (the block phase may stop a few short).

    Raises:
        ValueError: a count outside ``1..H*W``, ``min_num_patches < 1`` or a non-positive aspect bound.
    """

    def __init__(self, grid_size: int | tuple[int, int], num_masking_patches: int, *, min_num_patches: int = 4,
                 max_num_patches: int | None = None, min_aspect: float = 0.3, max_aspect: float | None = None,
                 fixed_count: bool = True):
        self.height, self.width = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        n = self.height * self.width
        if not 1 <= num_masking_patches <= n:
            raise ValueError(f"num_masking_patches must be in 1..{n} for a {self.height}x{self.width} grid, "
                             f"got {num_masking_patches}")
        if min_num_patches < 1:
            raise ValueError(f"min_num_patches must be >= 1, got {min_num_patches}")
        max_aspect = max_aspect or 1.0 / min_aspect
        if min_aspect <= 0 or max_aspect <= 0:
            raise ValueError(f"aspect bounds must be positive, got {min_aspect}, {max_aspect}")
        self.num_masking_patches = int(num_masking_patches)
        self.min_num_patches = int(min_num_patches)
        self.max_num_patches = int(num_masking_patches if max_num_patches is None else max_num_patches)
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self.fixed_count = bool(fixed_count)

    def __repr__(self) -> str:
        return (f"BlockMaskGenerator({self.height}x{self.width}, count={self.num_masking_patches}, "
                f"block area {self.min_num_patches}..{self.max_num_patches}, fixed_count={self.fixed_count})")

    def _add_block(self, mask: np.ndarray, cap: int, rng: _PyRandom) -> int:
        """Mask one block of at most ``cap`` new cells (10 attempts); returns the number of new cells."""
        for _ in range(10):
            area = rng.uniform(self.min_num_patches, cap)
            aspect = math.exp(rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                box = mask[top:top + h, left:left + w]
                new = h * w - int(box.sum())
                if 0 < new <= cap:
                    box[...] = 1
                    return new
        return 0

    def __call__(self, rng: _PyRandom | None = None) -> np.ndarray:
        """One mask.

        Args:
            rng: a ``random.Random`` (or anything with ``uniform``/``randint``/``shuffle``); default the
                global ``random`` module, as the official code uses (seeded per sample by
                ``repro_shared.data.SeededDataset``).

        Returns:
            int64 array ``(H, W)`` with ``1`` = masked; exactly ``num_masking_patches`` ones when
            ``fixed_count``.
        """
        rng = random if rng is None else rng
        mask = np.zeros((self.height, self.width), dtype=np.int64)
        count = 0
        while count < self.num_masking_patches:
            cap = min(self.num_masking_patches - count, self.max_num_patches)
            new = self._add_block(mask, cap, rng)
            if new == 0:
                break
            count += new
        if self.fixed_count and count < self.num_masking_patches:
            free = np.flatnonzero(mask.reshape(-1) == 0)  # row-major, as numpy's nonzero()
            order = list(range(free.size))
            rng.shuffle(order)
            mask.reshape(-1)[free[order[:self.num_masking_patches - count]]] = 1
        return mask

"""Morphology on (N, C, H, W) maps: 3x3 erosion, square dilation, binary boundary (spec §3.1, §3.2).

Each op has the official form (one square max-pool) and an exact separable form (a 1-D max-pool along
H, then along W); the separable form is the default because it costs 2k instead of k^2 comparisons per
pixel. Forward values are identical; gradients are identical except where a window holds ties (the
arg-max chosen by the two pools may differ).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def erode3x3(z: torch.Tensor, separable: bool = True) -> torch.Tensor:
    """3x3 min-filter of (N, C, H, W) ``z``, pixels outside the image count as 1 (spec §3.2, BF1~).

    Official form: ``-maxpool3x3(-pad(z, 1, value=1))``.
    """
    zp = F.pad(z, (1, 1, 1, 1), value=1.0)
    if separable:
        return -F.max_pool2d(F.max_pool2d(-zp, (3, 1), 1), (1, 3), 1)
    return -F.max_pool2d(-zp, 3, 1)


def dilate(z: torch.Tensor, radius: int, separable: bool = True) -> torch.Tensor:
    """Max-filter of (N, C, H, W) ``z`` over the (2r+1)^2 Chebyshev ball, zero padding (spec §3.1 D_r)."""
    r = int(radius)
    if r <= 0:
        return z
    k = 2 * r + 1
    if separable:
        return F.max_pool2d(F.max_pool2d(z, (k, 1), 1, (r, 0)), (1, k), 1, (0, r))
    return F.max_pool2d(z, k, 1, r)


def binary_boundary(m: torch.Tensor) -> torch.Tensor:
    """Inner boundary of a binary (N, C, H, W) float map: m = 1 with an 8-neighbour m = 0 (spec §3.1 B).

    Image borders are not boundaries. Equal to the official ``m * (m != avgpool3x3(m))`` (avg-pool with
    ``count_include_pad=False``) and to the loss form ``[erode(m) != m]`` for binary m.
    """
    return m * (1.0 - erode3x3(m))

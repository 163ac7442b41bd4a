"""CutMix of the online views -- EXPERIMENTAL, our design (spec §3.8: the 800-epoch UniGrad + CutMix recipe is
not released): one box and one batch permutation per step, applied to both views."""

from __future__ import annotations

import math

import torch

__all__ = ["cutmix_views"]


def cutmix_views(x1: torch.Tensor, x2: torch.Tensor, alpha: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Paste a box of image ``perm[i]`` into image ``i`` of both views (n, 3, H, W).

    ``lam ~ Beta(alpha, alpha)`` sets the box area ``(1 - lam) H W`` (CutMix); its centre is uniform and the box
    is clipped to the image, after which ``lam`` is recomputed as the exact kept fraction. Randomness comes from
    the global torch RNG (reseeded every step by ``repro_shared.data.seed_step``).

    Returns:
        ``(x1_mixed, x2_mixed, perm (n,) int64, lam)``; the inputs are not modified.
    """
    n, _, h, w = x1.shape
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(n, device=x1.device)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1_ = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = []
    for x in (x1, x2):
        x = x.clone()
        x[:, :, y0:y1, x0:x1_] = x[perm, :, y0:y1, x0:x1_]
        out.append(x)
    lam = 1.0 - (y1 - y0) * (x1_ - x0) / (h * w)
    return out[0], out[1], perm, lam

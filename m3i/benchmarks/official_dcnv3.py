"""A literal re-implementation of the official pure-PyTorch DCNv3 core (``dcnv3_core_pytorch`` of
OpenGVLab/InternImage, ``ops_dcnv3/functions/dcnv3_func.py``), step for step, written for comparison only.

The official steps, in its order: zero-pad the channels-last input with ``F.pad(x, [0, 0, pad_h, pad_h, pad_w,
pad_w])`` (W padded by ``pad_h``, H by ``pad_w``); reference points ``(c + 0.5 + k*stride) / size`` of the padded
map from ``linspace``/``meshgrid``; the kernel grid ``(-c + i*d) / size`` (x-major meshgrid), repeated per group;
``(ref + grid * offset_scale)`` repeated over the batch; the centre removed by index; offsets added as
``offset * offset_scale / [W_in, H_in]``; ``grid_sample`` on ``2 loc - 1``; masks multiplied and summed over points.

Used by ``benchmarks/bench_dcnv3.py`` (speed of our reference against this formulation) and by the tests
(our reference equals it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["official_dcnv3_core"]


def official_dcnv3_core(input, offset, mask, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                        dilation_w, group, group_channels, offset_scale, remove_center):
    """``(N, H, W, C)`` -> ``(N, Ho, Wo, C)`` exactly as the official reference computes it."""
    x = F.pad(input, [0, 0, pad_h, pad_h, pad_w, pad_w])
    n, hin, win, _ = x.shape
    _, hout, wout, _ = offset.shape
    dev = x.device
    ch, cw = (dilation_h * (kernel_h - 1)) // 2, (dilation_w * (kernel_w - 1)) // 2
    # reference points of the padded map, normalised to [0, 1]
    ry, rx = torch.meshgrid(
        torch.linspace(ch + 0.5, ch + 0.5 + (hout - 1) * stride_h, hout, dtype=torch.float32, device=dev),
        torch.linspace(cw + 0.5, cw + 0.5 + (wout - 1) * stride_w, wout, dtype=torch.float32, device=dev),
        indexing="ij")
    ref = torch.stack((rx.reshape(-1)[None] / win, ry.reshape(-1)[None] / hin), -1).reshape(1, hout, wout, 1, 2)
    # kernel grid, x-major, one copy per group
    gx, gy = torch.meshgrid(
        torch.linspace(-cw, -cw + (kernel_w - 1) * dilation_w, kernel_w, dtype=torch.float32, device=dev),
        torch.linspace(-ch, -ch + (kernel_h - 1) * dilation_h, kernel_h, dtype=torch.float32, device=dev),
        indexing="ij")
    grid = torch.stack([gx / win, gy / hin], -1).reshape(-1, 1, 2).repeat(1, group, 1).permute(1, 0, 2)
    grid = grid.reshape(1, 1, 1, group * kernel_h * kernel_w, 2)
    norm = torch.tensor([win, hin]).reshape(1, 1, 1, 2).repeat(1, 1, 1, group * (kernel_h * kernel_w - remove_center))
    loc = (ref + grid * offset_scale).repeat(n, 1, 1, 1, 1)
    if remove_center:
        c = (kernel_w * kernel_h - 1) // 2
        keep = [i for i in range(loc.shape[-2]) if i != c and (i - c) % (c * 2 + 1) != 0]
        loc = loc[:, :, :, keep, :]
    loc = loc.flatten(3, 4) + offset * offset_scale / norm.to(dev)
    p = kernel_h * kernel_w - remove_center
    grids = 2 * loc - 1
    values = x.view(n, hin * win, group * group_channels).transpose(1, 2).reshape(n * group, group_channels, hin, win)
    grids = grids.view(n, hout * wout, group, p, 2).transpose(1, 2).flatten(0, 1)
    sampled = F.grid_sample(values, grids, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = mask.view(n, hout * wout, group, p).transpose(1, 2).reshape(n * group, 1, hout * wout, p)
    out = (sampled * m).sum(-1).view(n, group * group_channels, hout * wout)
    return out.transpose(1, 2).reshape(n, hout, wout, -1).contiguous()

"""The pure-PyTorch DCNv3 core: the CPU path and the ground truth of the fast kernel.

Same sum as the official ``dcnv3_core_pytorch`` (one ``F.grid_sample`` over ``(N*G, Cg, ...)``), written
without its two copies: the sampling positions are computed in pixel units directly from the offsets, so
there is neither a zero-padded copy of the input (``grid_sample``'s zero padding covers every padded pixel,
and beyond) nor a batch-repeated table of reference points. ``swap_pad=True`` (the default here) reproduces
the official reference's padding of W by ``pad_h`` and H by ``pad_w`` (see :mod:`.dcnv3_common`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dcnv3_common import DCNv3Geometry, check_inputs

__all__ = ["dcnv3_reference"]


def dcnv3_reference(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, kernel_h: int, kernel_w: int,
                    stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
                    group: int, group_channels: int, offset_scale: float, remove_center: int = 0, *,
                    swap_pad: bool = True) -> torch.Tensor:
    """DCNv3 core by ``F.grid_sample`` (equation in :mod:`.dcnv3_common`); autograd gives the backward.

    Args:
        input: ``(N, H, W, G*Cg)`` channels-last values (already ``input_proj``-ected).
        offset: ``(N, Ho, Wo, G*P*2)``, interleaved ``(x, y)`` per point, points x-major, in pixels.
        mask: ``(N, Ho, Wo, G*P)`` point weights (softmax over P inside each group, done by the caller).
        kernel_h ... remove_center: the official argument list (``remove_center`` 0 or 1).
        swap_pad: follow the official pure-PyTorch padding quirk (W padded by ``pad_h``); ``False`` is the CUDA
            kernel's convention. Irrelevant when ``pad_h == pad_w``.

    Returns:
        ``(N, Ho, Wo, G*Cg)`` in ``input.dtype``; float16 / bfloat16 inputs are computed in float32.

    Raises:
        ValueError: inconsistent shapes (:func:`.dcnv3_common.check_inputs`) or an invalid geometry.
    """
    geo = DCNv3Geometry(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                        group_channels, float(offset_scale), int(remove_center), swap_pad)
    ho, wo = check_inputs(input, offset, mask, geo)
    n, h, w, _ = input.shape
    g, cg, p = group, group_channels, geo.points
    ct = torch.promote_types(torch.promote_types(input.dtype, offset.dtype), torch.float32)
    (cy, cx), (py, px) = geo.centre, geo.pads
    dev = input.device
    # sampling position in pixels of the unpadded map, (N, Ho, Wo, G, P) each
    pts = geo.kernel_points(dev, ct)                                                    # (P, 2) = (x, y)
    base_x = (cx - px + stride_w * torch.arange(wo, device=dev, dtype=ct)).view(1, 1, wo, 1, 1)
    base_y = (cy - py + stride_h * torch.arange(ho, device=dev, dtype=ct)).view(1, ho, 1, 1, 1)
    off = offset.to(ct).view(n, ho, wo, g, p, 2)
    x = base_x + offset_scale * (pts[:, 0] + off[..., 0])
    y = base_y + offset_scale * (pts[:, 1] + off[..., 1])
    # grid_sample(align_corners=False) reads pixel u at normalised 2 (u + 0.5) / size - 1
    grid = torch.stack([(2.0 * x + 1.0) / w - 1.0, (2.0 * y + 1.0) / h - 1.0], dim=-1)  # (N, Ho, Wo, G, P, 2)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(n * g, ho * wo, p, 2)
    values = input.to(ct).reshape(n, h * w, g, cg).permute(0, 2, 3, 1).reshape(n * g, cg, h, w)
    samples = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weights = mask.to(ct).view(n, ho * wo, g, p).transpose(1, 2).reshape(n * g, 1, ho * wo, p)
    out = (samples * weights).sum(-1)                                                    # (N*G, Cg, Ho*Wo)
    return out.view(n, g * cg, ho * wo).transpose(1, 2).reshape(n, ho, wo, g * cg).to(input.dtype)

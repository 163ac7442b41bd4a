"""The pure-PyTorch DCNv3 core: the CPU path and the ground truth of the fast kernel.

The same sum as the official ``dcnv3_core_pytorch``, computed as a weighted gather instead of ``F.grid_sample``:
every output vector ``y[n, h, w, g]`` is a bag of ``4 P`` rows of the input (the four bilinear corners of each of
the ``P`` points), weighted by ``mask * bilinear weight``, i.e. one ``F.embedding_bag(mode="sum",
per_sample_weights=...)`` over the channels-last input viewed as a table of ``N*H*W*G`` rows of ``Cg`` channels.
Compared with the official formulation this needs no transposed or zero-padded copy of the input (corners
outside the map get weight 0), never materialises the ``(N*G, Cg, Ho*Wo, P)`` tensor of samples, and writes
the output channels-last directly. Autograd gives the backward: ``embedding_bag`` differentiates the table (input
gradient) and the per-sample weights, through which the mask and offset gradients flow (the bilinear weights
are differentiable functions of the sampling position; the corner indices are not).

``swap_pad=True`` (the default here) reproduces the official reference's padding of W by ``pad_h`` and H by
``pad_w`` (see :mod:`.dcnv3_common`).
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
    """DCNv3 core as a weighted gather (equation in :mod:`.dcnv3_common`); autograd gives the backward.

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
    # the four corners: integer pixels, bilinear weights (differentiable in x, y), validity
    x0, y0 = torch.floor(x.detach()), torch.floor(y.detach())
    fx, fy = x - x0, y - y0
    cx_ = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=-1)                                 # (N, Ho, Wo, G, P, 4)
    cy_ = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=-1)
    bil = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    valid = (cx_ >= 0) & (cx_ <= w - 1) & (cy_ >= 0) & (cy_ <= h - 1)
    weights = bil * mask.to(ct).view(n, ho, wo, g, p, 1) * valid
    # rows of the (N*H*W*G, Cg) table: ((n*H + y)*W + x)*G + g, row 0 for invalid corners (weight 0)
    nn_ = torch.arange(n, device=dev).view(n, 1, 1, 1, 1, 1)
    gg = torch.arange(g, device=dev).view(1, 1, 1, g, 1, 1)
    rows = ((nn_ * h + cy_.long().clamp(0, h - 1)) * w + cx_.long().clamp(0, w - 1)) * g + gg
    rows = torch.where(valid, rows, torch.zeros_like(rows))
    table = input.to(ct).reshape(n * h * w * g, cg)
    out = F.embedding_bag(rows.reshape(-1, 4 * p), table, per_sample_weights=weights.reshape(-1, 4 * p),
                          mode="sum")                                                   # (N*Ho*Wo*G, Cg)
    return out.view(n, ho, wo, g * cg).to(input.dtype)

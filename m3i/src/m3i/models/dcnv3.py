"""The DCNv3 module of InternImage (spec m3i.md section 2.4), official parameter names.

``x (N, H, W, C)`` channels last::

    v = input_proj(x)                                             Linear(C, C), Xavier-uniform, bias 0
    q = GELU(LN(DWConv_{dw x dw}(x)))                             depthwise conv, padding (dw-1)/2
    offset = offset(q)          Linear(C, G*P*2), zero-initialised
    mask = softmax_P(mask(q))   Linear(C, G*P), zero-initialised (uniform 1/P at init); cast to v's dtype
    y = dcnv3_core(v, offset, mask)
    center_feature_scale (H/G): s = sigmoid(q W_c^T + b_c) per group (W_c, b_c zero: s = 0.5 at init),
                                y = y (1 - s) + v s
    out = output_proj(y)                                          Linear(C, C), Xavier-uniform, bias 0

One class serves both official core ops: ``impl="auto"`` (official ``core_op='DCNv3'``: the Triton kernel on
CUDA, the reference elsewhere) and ``impl="reference"`` (``core_op='DCNv3_pytorch'``); the weights and names
are the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import dcnv3_core
from .layers import build_act_layer, build_norm_layer

__all__ = ["DCNv3", "CORE_OPS"]

#: official ``core_op`` names -> our dispatch
CORE_OPS = {"DCNv3": "auto", "DCNv3_pytorch": "reference", "DCNv3_triton": "triton"}


class DCNv3(nn.Module):
    """Deformable convolution v3 (official ``DCNv3`` / ``DCNv3_pytorch``).

    Args:
        channels: ``C`` (divisible by ``group``).
        kernel_size, stride, pad, dilation: of the sampling grid (InternImage: 3, 1, 1, 1).
        dw_kernel_size: depthwise conv of the offset/mask branch (default ``kernel_size``; 5 for H/G).
        group: ``G``; ``C/G`` channels per group (16 in every released model, 32 in G).
        offset_scale: scales the kernel grid and the offsets.
        act_layer, norm_layer: of the offset/mask branch.
        center_feature_scale: the H/G gate between the sampled and the projected features.
        remove_center: drop the centre point (P = k*k - 1).
        impl: ``"auto"``, ``"reference"`` or ``"triton"`` (:func:`m3i.ops.dcnv3_core`).

    Raises:
        ValueError: ``channels`` not divisible by ``group``, ``remove_center`` with an even kernel, an unknown impl.
    """

    def __init__(self, channels: int = 64, kernel_size: int = 3, dw_kernel_size: int | None = None, stride: int = 1,
                 pad: int = 1, dilation: int = 1, group: int = 4, offset_scale: float = 1.0, act_layer: str = "GELU",
                 norm_layer: str = "LN", center_feature_scale: bool = False, remove_center: bool = False,
                 impl: str = "auto"):
        super().__init__()
        if channels % group:
            raise ValueError(f"channels must be divisible by group, got {channels} and {group}")
        if remove_center and kernel_size % 2 == 0:
            raise ValueError("remove_center is only compatible with an odd kernel size")
        if impl not in ("auto", "reference", "triton"):
            raise ValueError(f"unknown DCNv3 impl {impl!r}; known: auto, reference, triton")
        dw_kernel_size = dw_kernel_size if dw_kernel_size is not None else kernel_size
        self.channels, self.kernel_size, self.dw_kernel_size = channels, kernel_size, dw_kernel_size
        self.stride, self.dilation, self.pad, self.group = stride, dilation, pad, group
        self.group_channels, self.offset_scale = channels // group, offset_scale
        self.center_feature_scale, self.remove_center, self.impl = center_feature_scale, int(remove_center), impl
        points = kernel_size * kernel_size - self.remove_center
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, stride=1, padding=(dw_kernel_size - 1) // 2, groups=channels),
            build_norm_layer(channels, norm_layer, "channels_first", "channels_last"),
            build_act_layer(act_layer))
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Official init: offset and mask Linears zero, input/output projections Xavier-uniform with bias 0."""
        for lin in (self.offset, self.mask):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, C) -> (N, H, W, C)``."""
        n, h, w, _ = input.shape
        x = self.input_proj(input)
        x_proj = x
        q = self.dw_conv(input.permute(0, 3, 1, 2))                       # (N, H, W, C)
        offset = self.offset(q)
        mask = F.softmax(self.mask(q).reshape(n, h, w, self.group, -1), -1).reshape(n, h, w, -1).to(x.dtype)
        x = dcnv3_core(x, offset, mask, self.kernel_size, self.kernel_size, self.stride, self.stride, self.pad,
                       self.pad, self.dilation, self.dilation, self.group, self.group_channels, self.offset_scale,
                       self.remove_center, impl=self.impl)
        if self.center_feature_scale:
            s = F.linear(q, self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias).sigmoid()
            s = s.repeat_interleave(self.group_channels, dim=-1)          # (N, H, W, G) -> (N, H, W, C), group-major
            x = x * (1 - s) + x_proj * s
        return self.output_proj(x)

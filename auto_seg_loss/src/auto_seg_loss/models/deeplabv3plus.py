"""DeepLabv3+ with a dilated ResNet-V1c backbone and an auxiliary FCN head (spec §2).

Backbone: timm ``resnet50c`` / ``resnet101c`` (deep stem 3x3 convs 32-32-64 + max-pool, no avg-down: the
ResNetV1c of mmseg), ``output_stride=8`` (stage strides 1,2,1,1; dilations 1,1,2,4; timm gives the first
block of a dilated stage the previous dilation, which equals mmseg's ``contract_dilation=True``).
A ``tiny`` backbone (1 BasicBlock per stage, widths 16-32-64-128) serves the CPU default.

Decode head = mmseg ``DepthwiseSeparableASPPHead``; auxiliary head = ``FCNHead`` (1 conv) on C4. Module
names follow mmseg's (``image_pool``, ``aspp_modules``, ``bottleneck``, ``c1_bottleneck``,
``sep_bottleneck``, ``conv_seg``; ``conv``/``bn`` inside ConvModule) so state dicts map by name.
"""

from __future__ import annotations

from typing import Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

BACKBONES = {
    "resnet50": dict(model_name="resnet50c"),
    "resnet101": dict(model_name="resnet101c"),
    "tiny": dict(model_name="resnet18", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16,
                 stem_type="deep"),
}


class ConvModule(nn.Module):
    """conv (no bias) -> BN -> ReLU, as mmcv's ConvModule."""

    def __init__(self, cin: int, cout: int, k: int, padding: int = 0, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


def mmseg_head_init(head: nn.Module) -> None:
    """mmcv/mmseg head initialisation: ConvModule convs kaiming-normal (fan_out, relu), BN 1/0,
    classifier ``conv_seg`` normal(0, 0.01) with zero bias."""
    for m in head.modules():
        if isinstance(m, ConvModule):
            nn.init.kaiming_normal_(m.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.ones_(m.bn.weight)
            nn.init.zeros_(m.bn.bias)
    nn.init.normal_(head.conv_seg.weight, 0.0, 0.01)
    nn.init.zeros_(head.conv_seg.bias)


class DepthwiseSeparableConvModule(nn.Module):
    """depthwise k x k ConvModule -> pointwise 1x1 ConvModule."""

    def __init__(self, cin: int, cout: int, k: int, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, k, padding, dilation, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))


class DepthwiseSeparableASPPHead(nn.Module):
    """ASPP on C5 + low-level C2 fusion (DeepLabv3+ decoder); output (B, K, H/4, W/4).

    Args:
        in_channels: C5 channels (2048 for ResNet-50/101).
        c1_in_channels: C2 channels (256).
        channels: width of ASPP / decoder convs (512).
        c1_channels: width of the projected low-level feature (48).
        dilations: ASPP rates; the first (1) is a 1x1 conv, the others depthwise-separable 3x3 (1, 12, 24, 36).
    """

    def __init__(self, in_channels: int, c1_in_channels: int, channels: int, c1_channels: int, num_classes: int,
                 dilations: Sequence[int] = (1, 12, 24, 36), dropout: float = 0.1):
        super().__init__()
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(in_channels, channels, 1))
        self.aspp_modules = nn.ModuleList(
            ConvModule(in_channels, channels, 1) if d == 1
            else DepthwiseSeparableConvModule(in_channels, channels, 3, padding=d, dilation=d)
            for d in dilations
        )
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3, padding=1)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(channels + c1_channels, channels, 3, padding=1),
            DepthwiseSeparableConvModule(channels, channels, 3, padding=1),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, c1: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(c5), size=c5.shape[2:], mode="bilinear", align_corners=False)
        x = self.bottleneck(torch.cat([pooled] + [m(c5) for m in self.aspp_modules], dim=1))
        x = F.interpolate(x, size=c1.shape[2:], mode="bilinear", align_corners=False)
        x = self.sep_bottleneck(torch.cat([x, self.c1_bottleneck(c1)], dim=1))
        return self.conv_seg(self.dropout(x))


class FCNHead(nn.Module):
    """Auxiliary head on C4: 3x3 ConvModule -> Dropout2d(0.1) -> 1x1 conv to K classes."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(x)))


class DeepLabV3Plus(nn.Module):
    """Encoder-decoder segmenter. forward(img (B, 3, H, W)) -> dict ``out`` (B, K, H/4, W/4) and, in
    training mode with an auxiliary head, ``aux`` (B, K, H/8, W/8). Logits are resized to the label size
    by the caller (bilinear, ``align_corners=False``). ``head_init``: ``"mmseg"`` (official) or ``"torch"``
    (PyTorch defaults; used by the tiny CPU config, where the near-uniform start of the mmseg classifier
    init stalls the boundary surrogates for the first ~100 iterations)."""

    def __init__(self, num_classes: int, backbone: str = "resnet101", channels: int = 512, c1_channels: int = 48,
                 aux_channels: int = 256, dilations: Sequence[int] = (1, 12, 24, 36), aux_head: bool = True,
                 dropout: float = 0.1, head_init: str = "mmseg"):
        super().__init__()
        if head_init not in ("mmseg", "torch"):
            raise ValueError(f"head_init must be 'mmseg' or 'torch', got {head_init!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)}")
        spec = dict(BACKBONES[backbone])
        self.backbone = timm.create_model(spec.pop("model_name"), pretrained=False, features_only=True,
                                          output_stride=8, out_indices=(1, 3, 4), **spec)
        c2, c4, c5 = self.backbone.feature_info.channels()
        self.decode_head = DepthwiseSeparableASPPHead(c5, c2, channels, c1_channels, num_classes, dilations, dropout)
        self.auxiliary_head = FCNHead(c4, aux_channels, num_classes, dropout) if aux_head else None
        if head_init == "mmseg":
            for head in (self.decode_head, self.auxiliary_head):
                if head is not None:
                    mmseg_head_init(head)

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        c2, c4, c5 = self.backbone(img)
        out = {"out": self.decode_head(c2, c5)}
        if self.auxiliary_head is not None and self.training:
            out["aux"] = self.auxiliary_head(c4)
        return out


def build_segmenter(num_classes: int, backbone: str = "resnet101", channels: int = 512, c1_channels: int = 48,
                    aux_channels: int = 256, dilations: Sequence[int] = (1, 12, 24, 36), aux_head: bool = True,
                    dropout: float = 0.1, head_init: str = "mmseg") -> DeepLabV3Plus:
    """Build :class:`DeepLabV3Plus` with random weights (ImageNet weights: :mod:`auto_seg_loss.weights`)."""
    return DeepLabV3Plus(num_classes, backbone, channels, c1_channels, aux_channels, dilations, aux_head, dropout,
                         head_init)

"""Image backbones (3 taps at strides 8/16/32), FPN (5 levels) and GridMask (spec §2.2, §3.6).

Backbones: ``tiny`` (4-stage plain CNN of the CPU plan, spec §8), ``resnet18/34/50/101`` (torchvision,
pytorch style: the stride of a stage's first bottleneck sits in its 3x3 conv), ``resnet50_caffe`` /
``resnet101_caffe`` (mmdet ``style='caffe'``, as the official R50 and the COCO FCOS checkpoints it starts
from: the stride sits in the first 1x1 conv), and any timm model with ``features_only``
(``timm:convnext_base``, ``timm:ese_vovnet99b``, ``timm:dla34`` ...). InternImage needs the DCNv3 op and is
not provided. The input normalisation of every backbone is the official caffe one (``data/dataset.py``:
BGR, mean (103.53, 116.28, 123.675) subtracted, std 1), which is what caffe-style weights expect.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyCNN(nn.Module):
    """Stem (s2) + 4 stages of [3x3 s2 conv-BN-ReLU, 3x3 conv-BN-ReLU]; taps of stages 2-4 (strides 8/16/32)."""

    def __init__(self, channels=(16, 32, 64, 128)):
        super().__init__()

        def cbr(i, o, s):
            return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.stem = nn.Sequential(*cbr(3, channels[0], 2))
        cin = channels[0]
        self.stages = nn.ModuleList()
        for c in channels:
            self.stages.append(nn.Sequential(*cbr(cin, c, 2), *cbr(c, c, 1)))
            cin = c
        self.out_channels = list(channels[1:])

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= 1:
                outs.append(x)
        return outs


class TorchvisionResNet(nn.Module):
    """torchvision ResNet returning C3, C4, C5 (``out_indices=(1, 2, 3)``); parameter names = mmdet's ResNet.

    ``style="caffe"`` (bottleneck depths only) moves the stride of each stage's first bottleneck from its 3x3
    conv (``conv2``, pytorch style) to its first 1x1 conv (``conv1``), as mmdet's ``style='caffe'``; shapes and
    names are unchanged, so official caffe-style weights load either way, but only the caffe variant computes
    what they were trained for.
    """

    def __init__(self, depth: int = 50, pretrained: bool = False, style: str = "pytorch"):
        super().__init__()
        import torchvision

        if style not in ("pytorch", "caffe"):
            raise ValueError(f"unknown ResNet style {style!r}; known: pytorch, caffe")
        if style == "caffe" and (depth < 50 or pretrained):
            raise ValueError("the caffe-style ResNet exists for depth 50/101 and starts from converted official "
                             "weights (init.path), not from torchvision's pytorch-style ImageNet weights")
        weights = "DEFAULT" if pretrained else None
        net = getattr(torchvision.models, f"resnet{depth}")(weights=weights)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if style == "caffe":
            for layer in (self.layer2, self.layer3, self.layer4):
                first = layer[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
        self.style = style
        mult = 4 if depth >= 50 else 1
        self.out_channels = [128 * mult, 256 * mult, 512 * mult]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class TimmBackbone(nn.Module):
    """Any timm model with ``features_only``; taps the three maps at strides 8/16/32."""

    def __init__(self, name: str, pretrained: bool = False):
        super().__init__()
        import timm

        probe = timm.create_model(name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        idx = [probe.feature_info.out_indices[reductions.index(s)] for s in (8, 16, 32)]  # timm's own indices
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, out_indices=idx)
        self.out_channels = self.body.feature_info.channels()

    def forward(self, x):
        return list(self.body(x))


RESNETS = {"resnet18": (18, "pytorch"), "resnet34": (34, "pytorch"), "resnet50": (50, "pytorch"),
           "resnet101": (101, "pytorch"), "resnet50_caffe": (50, "caffe"), "resnet101_caffe": (101, "caffe")}


def check_backbone(name: str) -> None:
    """Raise ``ValueError`` listing the known backbones when ``name`` is not one (cheap: builds nothing)."""
    if name == "tiny" or name in RESNETS:
        return
    if name.startswith("timm:"):
        import timm

        if timm.is_model(name[5:]):
            return
        raise ValueError(f"unknown timm model {name[5:]!r} in model.backbone={name!r}; timm.list_models('<pattern>') "
                         f"lists timm's names (e.g. timm:ese_vovnet99b, timm:convnext_base, timm:dla34)")
    raise ValueError(f"unknown backbone {name!r}; known: tiny, {', '.join(RESNETS)}, "
                     f"timm:<model> (e.g. timm:ese_vovnet99b, timm:convnext_base, timm:dla34)")


def build_backbone(name: str, pretrained: bool = False, tiny_channels=(16, 32, 64, 128)) -> nn.Module:
    """``tiny`` | ``resnet{18,34,50,101}`` | ``resnet{50,101}_caffe`` | ``timm:<name>``.

    Raises:
        ValueError: an unknown name (the known ones are listed, see :func:`check_backbone`).
    """
    check_backbone(name)
    if name == "tiny":
        return TinyCNN(tiny_channels)
    if name in RESNETS:
        return TorchvisionResNet(*RESNETS[name][:1], pretrained=pretrained, style=RESNETS[name][1])
    return TimmBackbone(name[5:], pretrained)  # "timm:<name>", checked above


class ConvModule(nn.Module):
    """mmcv ConvModule without norm (bias, no activation): keeps the ``.conv`` key of the official names."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2)

    def forward(self, x):
        return self.conv(x)


class FPN(nn.Module):
    """mmdet FPN, ``add_extra_convs='on_output'``, ``relu_before_extra_convs`` (spec §2.2); 5 outputs."""

    def __init__(self, in_channels, out_channels: int = 256, num_outs: int = 5):
        super().__init__()
        self.lateral_convs = nn.ModuleList([ConvModule(c, out_channels, 1) for c in in_channels])
        self.fpn_convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3) for _ in in_channels])
        for _ in range(num_outs - len(in_channels)):
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, 2))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.num_ins = len(in_channels)

    def forward(self, feats):
        lat = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
        outs = [self.fpn_convs[i](lat[i]) for i in range(self.num_ins)]
        for k, conv in enumerate(self.fpn_convs[self.num_ins:]):
            outs.append(conv(F.relu(outs[-1]) if k > 0 else outs[-1]))  # P6 on P5-out, P7 on ReLU(P6)
        return outs


class GridMask(nn.Module):
    """GridMask (p=0.7, ratio 0.5, mode 1, no rotation/offset): one mask for all images of a batch (spec §3.6)."""

    def __init__(self, prob: float = 0.7, ratio: float = 0.5):
        super().__init__()
        self.prob, self.ratio = prob, ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, C, H, W) -> masked x (training only)."""
        if not self.training or np.random.rand() > self.prob:
            return x
        H, W = x.shape[-2:]
        d = np.random.randint(2, H)
        length = min(max(int(d * self.ratio + 0.5), 1), d - 1)
        st_h, st_w = np.random.randint(d), np.random.randint(d)
        ys = (torch.arange(H, device=x.device) - st_h) % d < length
        xs = (torch.arange(W, device=x.device) - st_w) % d < length
        keep = (ys[:, None] | xs[None, :]).to(x.dtype)  # mode 1: keep the stripes' union, drop grid squares
        return x * keep

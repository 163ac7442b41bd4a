"""ResNet-FPN backbones for the detectors (torchvision building blocks).

* ``resnet50`` / ``resnet18``: torchvision ResNets, frozen BatchNorm, ``trainable_layers=3`` freezes the
  stem and stage 1 (mmdet ``frozen_stages=1``, ``norm_eval=True``); ImageNet weights from config.
* ``tiny``: a small BasicBlock ResNet (widths w, 2w, 4w, 8w, trainable BN) for CPU runs from scratch.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

BACKBONES = ("resnet50", "resnet18", "tiny")


class TinyResNet(nn.Module):
    """Stem (3x3 s2 conv) + four stages of one BasicBlock each; C2..C5 at strides 4, 8, 16, 32.

    Input (B, 3, H, W) -> ``layer4`` output (B, 8w, H/32, W/32); intermediate stages via ``layer1..4``.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        chans = [width, width, 2 * width, 4 * width, 8 * width]
        for i in range(4):
            stride = 2
            down = nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(chans[i + 1]))
            setattr(self, f"layer{i + 1}", BasicBlock(chans[i], chans[i + 1], stride=stride, downsample=down))
        self.channels = chans[1:]

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _extra_block(kind: str | None, c5_channels: int, out_channels: int) -> ExtraFPNBlock | None:
    if kind is None or kind == "none":
        return None
    if kind == "p6p7_on_input":  # mmdet add_extra_convs='on_input': P6 from C5
        return LastLevelP6P7(c5_channels, out_channels)
    if kind == "maxpool":  # Faster R-CNN P6 = max-pool of P5
        return LastLevelMaxPool()
    raise ValueError(f"unknown FPN extra block {kind!r}; use 'p6p7_on_input', 'maxpool' or 'none'")


def build_backbone(name: str = "resnet50", weights: str | None = None, trainable_layers: int = 3,
                   returned_layers: tuple[int, ...] = (2, 3, 4), out_channels: int = 256,
                   extra_blocks: str | None = "p6p7_on_input", width: int = 16) -> BackboneWithFPN:
    """ResNet + FPN. ``returned_layers`` (1..4) pick C2..C5; ``weights`` e.g. ``"IMAGENET1K_V1"`` or None."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if name == "tiny":
        body = TinyResNet(width)
        chans = [body.channels[i - 1] for i in returned_layers]
        return BackboneWithFPN(body, {f"layer{i}": str(k) for k, i in enumerate(returned_layers)}, chans, out_channels,
                               extra_blocks=_extra_block(extra_blocks, body.channels[-1], out_channels))
    ctor = resnet50 if name == "resnet50" else resnet18
    body = ctor(weights=weights, norm_layer=FrozenBatchNorm2d)
    c5 = 2048 if name == "resnet50" else 512
    return _resnet_fpn_extractor(body, trainable_layers, returned_layers=list(returned_layers),
                                 extra_blocks=_extra_block(extra_blocks, c5, out_channels), norm_layer=None)

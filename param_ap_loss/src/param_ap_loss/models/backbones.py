"""ResNet-FPN backbones for the detectors (torchvision building blocks).

* ``resnet50`` / ``resnet18``: torchvision ResNets, frozen BatchNorm, ``trainable_layers=3`` freezes the
  stem and stage 1 (mmdet ``frozen_stages=1``, ``norm_eval=True``); ImageNet weights from config.
* ``tiny``: a small BasicBlock ResNet (widths w, 2w, 4w, 8w, trainable BN) for CPU runs from scratch.

Paper-row configs start the ResNet from a local ImageNet weights file (``init.path``, checked by
``repro_shared.run.check_required_init``), loaded with ``weights_only=True`` by
:func:`load_backbone_weights`; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from repro_shared.checkpoint import load_state_dict_remapped, load_weights_file

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


def _resnet(name: str, width: int) -> tuple[nn.Module, list[int]]:
    """The ResNet trunk and its C2..C5 channels."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    if name == "tiny":
        body = TinyResNet(width)
        return body, body.channels
    if name == "resnet50":
        return resnet50(weights=None, norm_layer=FrozenBatchNorm2d), [256, 512, 1024, 2048]
    return resnet18(weights=None, norm_layer=FrozenBatchNorm2d), [64, 128, 256, 512]


def _freeze(body: nn.Module, trainable_layers: int) -> None:
    """torchvision's rule: train the last ``trainable_layers`` of layer4, layer3, layer2, layer1, stem."""
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, p in body.named_parameters():
        if all(not name.startswith(t) for t in trainable):
            p.requires_grad_(False)


def build_backbone(name: str = "resnet50", trainable_layers: int = 3, returned_layers: tuple[int, ...] = (2, 3, 4),
                   out_channels: int = 256, extra_blocks: str | None = "p6p7_on_input", width: int = 16
                   ) -> BackboneWithFPN:
    """ResNet + FPN (random init; see :func:`load_backbone_weights`). ``returned_layers`` (1..4) pick C2..C5.

    Raises:
        ValueError: unknown backbone or FPN extra block (lists the known ones).
    """
    body, chans = _resnet(name, width)
    if name == "tiny":
        return BackboneWithFPN(body, {f"layer{i}": str(k) for k, i in enumerate(returned_layers)},
                               [chans[i - 1] for i in returned_layers], out_channels,
                               extra_blocks=_extra_block(extra_blocks, chans[-1], out_channels))
    return _resnet_fpn_extractor(body, trainable_layers, returned_layers=list(returned_layers),
                                 extra_blocks=_extra_block(extra_blocks, chans[-1], out_channels), norm_layer=None)


class ResNetBody(nn.Module):
    """A ResNet without FPN returning the feature maps of ``returned_layers`` (Deformable DETR's C3..C5).

    ``body`` keeps the ResNet's own parameter names (``body.layer2...``), as in :func:`build_backbone`.
    Input (B, 3, H, W) -> dict ``{"0": C_{l0}, "1": ...}``; ``num_channels`` lists their widths.
    """

    def __init__(self, name: str = "resnet50", trainable_layers: int = 3, returned_layers: tuple[int, ...] = (2, 3, 4),
                 width: int = 16):
        super().__init__()
        trunk, chans = _resnet(name, width)
        if name != "tiny":
            _freeze(trunk, trainable_layers)
        self.body = IntermediateLayerGetter(trunk, {f"layer{i}": str(k) for k, i in enumerate(returned_layers)})
        self.num_channels = [chans[i - 1] for i in returned_layers]

    def forward(self, x):
        return self.body(x)


def load_backbone_weights(backbone: nn.Module, path: str | Path, log=None) -> None:
    """Load a torchvision-format ResNet state dict (e.g. ``resnet50-0676ba61.pth``, ImageNet) into
    ``backbone.body`` with ``weights_only=True``; the classifier (``fc.*``) is not used.

    Raises:
        repro_shared.checkpoint.CheckpointError: unreadable file, or a tensor of the trunk missing /
            of the wrong shape (the file is not a ResNet of this depth).
    """
    sd = load_weights_file(path)
    report = load_state_dict_remapped(backbone.body, sd, drop=[r"^fc\.", r"num_batches_tracked$"], strict=True)
    if log is not None:
        log.info("initial backbone weights from %s: %d tensors", path, len(report.loaded))

"""Backbones as the official code builds them: a torchvision ResNet without ``fc``, as one ``nn.Sequential``.

The official ``SiameseNet`` keeps ``Sequential(conv1, bn1, relu, maxpool, layer1..layer4, avgpool, Flatten)``,
so its state-dict keys are ``encoder.0.weight`` (conv1), ``encoder.1.*`` (bn1), ``encoder.4.*`` (layer1) ...
``encoder.7.*`` (layer4). We build the same structure, so released checkpoints load after stripping
``module.`` (see :mod:`unigrad.models.convert`).
"""

from __future__ import annotations

import torchvision
from torch import nn

__all__ = ["ENCODERS", "build_encoder", "TinyCNN"]

#: encoder name -> output feature dimension
ENCODERS = {"resnet50": 2048, "resnet18": 512, "tiny_cnn": 128}


class TinyCNN(nn.Sequential):
    """A small CPU encoder for 16-32 px images: three conv-BN-ReLU stages (stride 1, 2, 2), global average pool.

    Input (B, 3, H, W) -> output (B, ``widths[-1]``). Not in the paper; used by the tiny default run only.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128)):
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(widths):
            layers += [nn.Conv2d(c_in, c, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        super().__init__(*layers)
        self.out_dim = widths[-1]


def build_encoder(name: str, *, zero_init_residual: bool = True, tiny_widths: tuple[int, int, int] = (32, 64, 128)
                  ) -> tuple[nn.Sequential, int]:
    """The backbone ``f`` of the siamese network and its feature dimension.

    Args:
        name: ``resnet50`` (paper), ``resnet18`` or ``tiny_cnn`` (CPU runs).
        zero_init_residual: torchvision's option (last BN of each residual block starts at 0), as the
            official code sets it.
        tiny_widths: channels of the three ``tiny_cnn`` stages.

    Returns:
        ``(encoder, dim)``: encoder maps (B, 3, H, W) -> (B, dim).

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    if name == "tiny_cnn":
        net = TinyCNN(tuple(tiny_widths))
        return net, net.out_dim
    resnet = getattr(torchvision.models, name)(weights=None, zero_init_residual=zero_init_residual)
    encoder = nn.Sequential(*list(resnet.children())[:-1], nn.Flatten(1))  # drop fc, keep official indices
    return encoder, resnet.fc.in_features

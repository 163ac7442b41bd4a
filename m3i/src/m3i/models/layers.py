"""Norm / activation builders with the official InternImage module structure (so state-dict keys match).

The official ``build_norm_layer`` wraps a LayerNorm or BatchNorm in an ``nn.Sequential`` together with the
permutes its input / output formats need; the position of the norm inside that Sequential is part of every
released key (``patch_embed.norm1.1.weight``, ``levels.0.blocks.0.norm1.0.weight``, ``conv_head.1.0.weight``).
"""

from __future__ import annotations

from torch import nn

__all__ = ["Permute", "build_norm_layer", "build_act_layer"]


class Permute(nn.Module):
    """``x.permute(*dims)``; ``Permute(0, 3, 1, 2)``: channels last -> first, ``Permute(0, 2, 3, 1)``: back."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def build_norm_layer(dim: int, norm_layer: str, in_format: str = "channels_last", out_format: str = "channels_last",
                     eps: float = 1e-6) -> nn.Sequential:
    """``"LN"`` (LayerNorm over channels, ``eps``) or ``"BN"`` (BatchNorm2d) between the given tensor formats.

    Raises:
        ValueError: an unknown norm or format name.
    """
    formats = ("channels_last", "channels_first")
    if in_format not in formats or out_format not in formats:
        raise ValueError(f"formats must be one of {formats}, got {in_format!r}, {out_format!r}")
    layers: list[nn.Module] = []
    if norm_layer == "BN":
        if in_format == "channels_last":
            layers.append(Permute(0, 3, 1, 2))
        layers.append(nn.BatchNorm2d(dim))
        if out_format == "channels_last":
            layers.append(Permute(0, 2, 3, 1))
    elif norm_layer == "LN":
        if in_format == "channels_first":
            layers.append(Permute(0, 2, 3, 1))
        layers.append(nn.LayerNorm(dim, eps=eps))
        if out_format == "channels_first":
            layers.append(Permute(0, 3, 1, 2))
    else:
        raise ValueError(f"unknown norm_layer {norm_layer!r}; known: LN, BN")
    return nn.Sequential(*layers)


def build_act_layer(act_layer: str) -> nn.Module:
    """``"GELU"``, ``"ReLU"`` or ``"SiLU"``.

    Raises:
        ValueError: an unknown activation name.
    """
    acts = {"GELU": nn.GELU, "ReLU": lambda: nn.ReLU(inplace=True), "SiLU": lambda: nn.SiLU(inplace=True)}
    if act_layer not in acts:
        raise ValueError(f"unknown act_layer {act_layer!r}; known: {', '.join(acts)}")
    return acts[act_layer]()

"""The MAE linear-probe head and parameter freezing."""

from __future__ import annotations

from typing import Iterable

from torch import nn

__all__ = ["BNLinearHead", "freeze_except"]


class BNLinearHead(nn.Sequential):
    """``BatchNorm1d(dim, affine=False, eps=1e-6)`` then ``Linear(dim, num_classes)`` (MAE linear probing:
    the BN standardises the frozen features, weight ``trunc_normal(std=0.01)``, bias 0).

    Forward: ``(B, dim)`` -> ``(B, num_classes)``. The linear layer is ``self[1]`` (state-dict key ``1.weight``).
    """

    def __init__(self, dim: int, num_classes: int, init_std: float = 0.01):
        linear = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(linear.weight, std=init_std)
        nn.init.zeros_(linear.bias)
        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=1e-6), linear)


def freeze_except(model: nn.Module, trainable_prefixes: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter whose name starts with none of ``trainable_prefixes``.

    Returns:
        The names of the parameters left trainable.

    Raises:
        ValueError: no parameter matches any prefix (a typo would otherwise train nothing).
    """
    prefixes = tuple(trainable_prefixes)
    kept = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        if p.requires_grad:
            kept.append(name)
    if not kept:
        raise ValueError(f"no parameter name starts with any of {prefixes}")
    return kept



"""Pieces every objective shares: the "gradient as loss" surrogate, target selection, collectives.

The gradient-as-loss trick (spec §3.1): a method is specified by a per-sample gradient ``g_i`` (computed
without autograd); the surrogate ``L1 = (1/n) sum_i <u1_i, sg(g1_i)>`` has ``dL1/du1_i = g1_i / n`` exactly.
The total loss is symmetric, ``L = (L1 + L2) / 2``, hence ``dL/du1_i = g1_i / (2n)``; DDP's gradient average
makes it ``g1_i / (2N)`` over the global batch N. The surrogate's VALUE is not the method's loss (for the
BYOL form it is ~0): compare gradients, never surrogate values.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn

from ..models.siamese import SiameseOutput

__all__ = ["TARGETS", "promote", "normalize", "grad_as_loss", "symmetric_grad_loss", "positive_similarity", "gather",
           "gather_with_grad", "all_reduce_mean_", "rank", "SiameseLoss"]

#: where the target embeddings come from: the momentum branch, the online branch detached (the "w/o
#: momentum encoder" rows), or the online branch with gradient (original SimCLR / Barlow Twins / VICReg)
TARGETS = ("momentum", "stopgrad", "online")


def promote(z: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors (autocast outputs) as float32; float32 / float64 unchanged."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def normalize(z: torch.Tensor) -> torch.Tensor:
    """Rows of ``promote(z)`` (n, C) scaled to unit l2 norm (``F.normalize``, eps 1e-12, as the official code)."""
    return F.normalize(promote(z), dim=1)


def grad_as_loss(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``mean_i <u_i, sg(g_i)>`` for u, g (n, C): a scalar whose gradient w.r.t. ``u_i`` is ``g_i / n``."""
    return (u * g.detach()).sum(-1).mean()


def symmetric_grad_loss(u1: torch.Tensor, g1: torch.Tensor, u2: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """``(grad_as_loss(u1, g1) + grad_as_loss(u2, g2)) / 2``: ``dL/du1_i = g1_i / (2n)`` (spec §3.1)."""
    return 0.5 * (grad_as_loss(u1, g1) + grad_as_loss(u2, g2))


@torch.no_grad()
def positive_similarity(u1: torch.Tensor, u2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """The logged monitor ``(mean <u1, t2> + mean <u2, t1>) / 2`` of unit vectors (n, C)."""
    return 0.5 * ((u1 * t2).sum(-1).mean() + (u2 * t1).sum(-1).mean())


def _world() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` (n, C) concatenated in rank order, (W n, C), without gradient (official
    ``concat_all_gather``). Every rank must pass the same n. Single process: ``x`` itself."""
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    tdist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """As :func:`gather`, but the local slice keeps its gradient and the backward sums every rank's
    contribution to it (``torch.distributed.nn.functional.all_gather``): used by the ORIGINAL losses, which
    every rank evaluates on the whole global batch."""
    if _world() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


@torch.no_grad()
def all_reduce_mean_(x: torch.Tensor) -> torch.Tensor:
    """In place: ``x`` <- mean of ``x`` over ranks (sum all-reduce / W); returns ``x``."""
    w = _world()
    if w > 1:
        tdist.all_reduce(x)
        x.div_(w)
    return x


class SiameseLoss(nn.Module):
    """Base of every objective: holds ``target`` and picks the target embeddings from a :class:`SiameseOutput`.

    Args:
        target: ``momentum`` | ``stopgrad`` | ``online`` (see :data:`TARGETS`); each objective lists the
            ones it accepts in ``allowed_targets``.

    Subclasses implement ``forward(out) -> dict`` with at least ``loss`` (the scalar to back-propagate) and
    ``pos_sim`` (the monitor), every value a tensor so the training loop can check them all for NaN.

    Raises:
        ValueError: ``target`` is not one this objective accepts.
    """

    allowed_targets: tuple[str, ...] = ("momentum", "stopgrad")

    def __init__(self, target: str = "momentum"):
        super().__init__()
        if target not in self.allowed_targets:
            raise ValueError(f"{type(self).__name__} takes target in {self.allowed_targets}, got {target!r}")
        self.target = target

    def targets(self, out: SiameseOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw target embeddings ``(t1, t2)``, each (n, C): of views 1 and 2.

        Raises:
            ValueError: ``target == "momentum"`` but the network has no momentum branch.
        """
        if self.target == "momentum":
            if out.z1m is None or out.z2m is None:
                raise ValueError("target=momentum needs a network with a momentum branch (SiameseNet(momentum=True))")
            return out.z1m, out.z2m
        if self.target == "stopgrad":
            return out.z1.detach(), out.z2.detach()
        return out.z1, out.z2

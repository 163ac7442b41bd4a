"""Classification objective of De-focus networks (spec §3.1): CLS loss + auxiliary loss on image tokens.

    L = (1 - w) * SoftCE(head(CLS), t) + w * L_aux,      w = aux_weight = 0.5 (official: 1/2, 1/2)

L_aux is either the official per-token CE averaged over all image tokens and the batch
("token_ce", aux logits (b, L-1, C)) or the paper's CE of the pooled image tokens ("pooled_ce",
aux logits (b, C)). With no aux logits the loss is the plain CLS cross entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["soft_cross_entropy", "defocus_loss"]


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over leading dims of -sum_c t_c log softmax(o)_c; logits (..., C), target (..., C)."""
    return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def _as_soft(target: Tensor, num_classes: int) -> Tensor:
    if target.dtype in (torch.int64, torch.int32):
        return torch.nn.functional.one_hot(target, num_classes).float()
    return target.float()


def defocus_loss(logits: Tensor, aux_logits: Tensor | None, target: Tensor, aux_weight: float = 0.5) -> dict:
    """logits (b, C); aux_logits (b, L-1, C) | (b, C) | None; target (b,) labels or (b, C) soft.

    Returns {"loss", "loss_cls", "loss_aux"} (loss_aux absent without aux logits).
    """
    t = _as_soft(target, logits.shape[-1])
    loss_cls = soft_cross_entropy(logits, t)
    if aux_logits is None:
        return {"loss": loss_cls, "loss_cls": loss_cls}
    if aux_logits.dim() == 3:  # per token: every image token gets the image's target
        t_aux = t[:, None, :].expand(-1, aux_logits.shape[1], -1)
    else:
        t_aux = t
    loss_aux = soft_cross_entropy(aux_logits, t_aux)
    loss = (1.0 - aux_weight) * loss_cls + aux_weight * loss_aux
    return {"loss": loss, "loss_cls": loss_cls, "loss_aux": loss_aux}

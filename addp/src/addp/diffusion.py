"""One ADDP training iteration in the order of the official code (spec §3.2).

1. ``z_0 = VQ.encode(x_0)``: ids (B, N) and code vectors (no gradient);
2. nested masks ``m_t ⊆ m_{t+1}`` (one mask ratio for the whole local batch, spec §3.1);
3.-4. the frozen token predictor on ``z_0 ⊙ ¬m_{t+1}`` (soft "unreliable" inputs) and on ``z_0 ⊙ ¬m_t``
   (soft targets ``q``), both in one batched forward;
5. token-to-pixel: ``x_t = VQ.decode(where(m_t, E_q[codebook], z_0))``;
6. pixel-to-token: ``logits = G(E(x_t), z_0, m_t)``;
7. soft cross-entropy with label smoothing over the full vocabulary, on the masked positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .losses import addp_soft_ce
from .masking import nested_masks, sample_mask_counts
from .models.mage import MAGE
from .models.vqgan import VQGAN

__all__ = ["ForwardProcess", "forward_process", "addp_train_step", "TEACHER_DROPOUT_MODES"]

TEACHER_DROPOUT_MODES = ("official", "off")


@dataclass
class ForwardProcess:
    """The frozen part of a training step: ``x_t`` (B, 3, H, W), ``ids`` (B, N) of ``z_0``, the soft
    targets ``q`` (B, N, K), the masks ``m_t`` and ``m_{t+1}`` (B, N) bool."""

    x_t: torch.Tensor
    ids: torch.Tensor
    q: torch.Tensor
    mask_t: torch.Tensor
    mask_next: torch.Tensor


@torch.no_grad()
def forward_process(tokenizer: VQGAN, teacher: MAGE, x0: torch.Tensor, ratios: torch.Tensor, probs: torch.Tensor, *,
                    teacher_dropout: str = "official", max_offset: int = 5,
                    generator: torch.Generator | None = None) -> ForwardProcess:
    """Steps 1-5 of the training iteration (everything that needs no gradient).

    ``teacher_dropout="official"`` runs the token predictor in train mode (dropout 0.1 active), as the
    official loop does by calling ``model.train()`` on the whole model; ``"off"`` runs it in eval mode.

    Raises:
        ValueError: for an unknown ``teacher_dropout`` or a token grid that the teacher was not built for.
    """
    if teacher_dropout not in TEACHER_DROPOUT_MODES:
        raise ValueError(f"unknown teacher_dropout {teacher_dropout!r}; known: {', '.join(TEACHER_DROPOUT_MODES)}")
    teacher.train(teacher_dropout == "official")
    ids, z0 = tokenizer.encode(x0)
    B, N = ids.shape
    n_t, n_next = sample_mask_counts(N, ratios, probs, max_offset, generator)
    mask_t, mask_next = nested_masks(B, N, (n_t, n_next), device=ids.device, generator=generator)
    p = teacher.sample_tokens(torch.cat([ids, ids]), torch.cat([mask_next, mask_t]))
    soft_in, q = p[:B], p[B:]
    s = z0.shape[-1]
    z_in = torch.where(mask_t.view(B, 1, s, s), tokenizer.embed_probs(soft_in).to(z0.dtype), z0)
    return ForwardProcess(tokenizer.decode(z_in), ids, q, mask_t, mask_next)


def addp_train_step(model: nn.Module, tokenizer: VQGAN, teacher: MAGE, x0: torch.Tensor, ratios: torch.Tensor,
                    probs: torch.Tensor, *, label_smoothing: float = 0.1, teacher_dropout: str = "official",
                    max_offset: int = 5, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Loss of one ADDP iteration (spec §3.2); ``model`` is the (possibly DDP-wrapped) :class:`ADDP`.

    Returns:
        ``{"loss": scalar, "logits": (B, N, V), "mask_ratio": fraction of masked tokens}``; only ``loss``
        carries a gradient.
    """
    fp = forward_process(tokenizer, teacher, x0, ratios, probs, teacher_dropout=teacher_dropout,
                         max_offset=max_offset, generator=generator)
    logits = model(fp.x_t, fp.ids, fp.mask_t)
    loss = addp_soft_ce(logits, fp.q, fp.mask_t, label_smoothing)
    return {"loss": loss, "logits": logits, "mask_ratio": fp.mask_t.float().mean()}

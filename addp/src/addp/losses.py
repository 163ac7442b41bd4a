"""Objectives: ADDP's soft-target loss, MAGE's masked-token loss, the tiny tokenizer's VQ loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["addp_soft_ce", "masked_token_ce", "vq_losses"]


def addp_soft_ce(logits: torch.Tensor, target_probs: torch.Tensor, mask: torch.Tensor,
                 label_smoothing: float = 0.1) -> torch.Tensor:
    """ADDP loss (spec §3.2 step 7): cross-entropy against the token predictor's soft targets.

    The target ``q`` over the K codes is padded with zeros to the full vocabulary V and smoothed,
    ``q' = (1 - eps) q_pad + eps / V``; ``l_i = -sum_v q'_{i,v} log_softmax(logits_i)_v``; the loss is
    averaged over the masked positions of the whole batch, ``L = sum_i m_i l_i / sum_i m_i``
    (torch ``cross_entropy`` with probability targets and ``label_smoothing``, as the official code).

    Args:
        logits: (B, N, V) grid logits.
        target_probs: (B, N, K) with K <= V (rows sum to 1).
        mask: (B, N) bool or 0/1; the positions that count (the unreliable ones, ``m_t``).

    Returns:
        scalar loss (fp32).
    """
    B, N, V = logits.shape
    q = F.pad(target_probs.float(), (0, V - target_probs.shape[-1]))
    per_token = F.cross_entropy(logits.float().reshape(B * N, V), q.reshape(B * N, V), reduction="none",
                                label_smoothing=label_smoothing).view(B, N)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum()


def masked_token_ce(logits: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor,
                    label_smoothing: float = 0.1) -> torch.Tensor:
    """MAGE pre-training loss: label-smoothed CE against the true ids, averaged over masked positions.

    Shapes: logits (B, N, V), target_ids (B, N) int64, mask (B, N) -> scalar.
    """
    B, N, V = logits.shape
    per_token = F.cross_entropy(logits.float().reshape(B * N, V), target_ids.reshape(B * N), reduction="none",
                                label_smoothing=label_smoothing).view(B, N)
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum()


def vq_losses(x: torch.Tensor, x_rec: torch.Tensor, z: torch.Tensor, z_q: torch.Tensor,
              beta: float = 0.25) -> dict[str, torch.Tensor]:
    """VQ-VAE objective of the tiny tokenizer (spec §8; the released tokenizer's recipe is unpublished).

    ``rec = mean((x_rec - x)^2)``, ``codebook = mean((z_q - sg[z])^2)``, ``commit = mean((z - sg[z_q])^2)``,
    ``loss = rec + codebook + beta * commit``. ``x_rec`` must come from the straight-through code
    vectors ``z + sg[z_q - z]`` so that the reconstruction gradient reaches the encoder.

    Shapes: x, x_rec (B, 3, H, W); z, z_q (B, C, h, w).
    """
    rec = F.mse_loss(x_rec, x)
    codebook = F.mse_loss(z_q, z.detach())
    commit = F.mse_loss(z, z_q.detach())
    return {"loss": rec + codebook + beta * commit, "rec": rec, "codebook": codebook, "commit": commit}

"""The SiameseIM objective (spec sim.md section 3.1) and a collapse diagnostic.

``L = (mean_m ||p_m - t_m||^2 + lambda mean_m p_m^T F p_m) / Dd`` with LayerNormed targets and the target
correlation ``F`` all-reduced over ranks: :func:`repro_shared.ssl.dense_unigrad.dense_unigrad_terms`, which
computes the negative term row-wise (the official code forms the ``M x M`` matrix).
"""

from __future__ import annotations

import torch

from repro_shared.ssl.dense_unigrad import dense_unigrad_terms

from .models.siameseim import SiameseIMOutput

__all__ = ["siameseim_loss", "effective_rank"]


def siameseim_loss(out: SiameseIMOutput, neg_weight: float = 0.02) -> dict[str, torch.Tensor]:
    """Loss terms of one step.

    Args:
        out: the model's ``(pred, target)``, each ``(B, N, Dd)``.
        neg_weight: ``lambda`` (0.02).

    Returns:
        ``{"loss": (pos + lambda neg) / Dd, "loss_pos": pos / Dd, "loss_neg": lambda neg / Dd}`` (float32
        scalars; ``loss`` is the one to back-propagate) and ``"correlation"``: ``F`` ``(Dd, Dd)``, detached.
    """
    terms = dense_unigrad_terms(out.pred, out.target, neg_weight)
    d = out.pred.shape[-1]
    return {"loss": terms.loss, "loss_pos": terms.pos.detach() / d, "loss_neg": neg_weight * terms.neg.detach() / d,
            "correlation": terms.correlation}


def effective_rank(corr: torch.Tensor) -> float:
    """``exp(H(lambda / sum lambda))`` of the eigenvalues of a symmetric PSD matrix (Roy & Vetterli 2007):
    between 1 (one direction) and ``D`` (isotropic). Used to compare lambda = 0.02 with lambda = 0."""
    ev = torch.linalg.eigvalsh(corr.double()).clamp(min=0)
    p = ev / ev.sum().clamp(min=1e-300)
    h = -(p[p > 0] * p[p > 0].log()).sum()
    return float(h.exp())

"""The original losses, for the "original vs gradient form" rows (spec §3.2, first column of the table).

Unlike the gradient forms, these back-propagate through their own formula, including (with
``target="online"``) through the target branch. Under DDP every rank evaluates the loss on the whole
all-gathered batch (:func:`~unigrad.losses.common.gather_with_grad`), as the original implementations do.

Shapes: raw projector outputs ``z1, z2`` (n, C), predictor outputs ``p1, p2`` (n, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.siamese import SiameseOutput
from .common import SiameseLoss, gather, gather_with_grad, normalize, positive_similarity, promote, rank

__all__ = ["InfoNCELoss", "BYOLLoss", "BarlowTwinsLoss", "VICRegLoss"]


def _gather_targets(t: torch.Tensor) -> torch.Tensor:
    return gather_with_grad(t) if t.requires_grad else gather(t)


class InfoNCELoss(SiameseLoss):
    """InfoNCE over the global batch (SimCLR's NT-Xent with ``target="online"``).

    For anchor ``u1_i`` the candidates are V = all-gathered ``cat(t1, t2)`` (2N, C), the positive is ``t2_i``:
    ``L1 = mean_i -log softmax(u1_i V^T / tau)[pos_i]``, ``L = (L1 + L2) / 2``. With ``target="online"`` the
    anchor's similarity to itself is masked out (NT-Xent). With a detached V (``momentum`` / ``stopgrad``) the
    gradient w.r.t. ``u1_i`` is exactly :class:`~unigrad.losses.SimCLRGradLoss`'s ``g1_i / (2n)``.

    Args:
        tau: temperature (0.2, the gradient form's).
    """

    allowed_targets = ("online", "momentum", "stopgrad")

    def __init__(self, tau: float = 0.2, target: str = "online"):
        super().__init__(target)
        self.tau = float(tau)

    def forward(self, out: SiameseOutput) -> dict[str, torch.Tensor]:
        u1, u2 = normalize(out.z1), normalize(out.z2)
        t1, t2 = (u1, u2) if self.target == "online" else (normalize(t).detach() for t in self.targets(out))
        n = u1.shape[0]
        v = _gather_targets(torch.cat([t1, t2]))
        base = rank() * 2 * n  # this rank's block inside V: [t1 (n); t2 (n)]
        idx = torch.arange(n, device=u1.device)
        losses = []
        for u, own, pos in ((u1, base + idx, base + n + idx), (u2, base + n + idx, base + idx)):
            logits = u @ v.T / self.tau
            if self.target == "online":
                logits = logits.index_put((idx, own), torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device))
            losses.append(F.cross_entropy(logits, pos))
        return {"loss": 0.5 * (losses[0] + losses[1]), "pos_sim": positive_similarity(u1, u2, t1.detach(), t2.detach())}


class BYOLLoss(SiameseLoss):
    """BYOL with its learned predictor: ``L = mean(2 - 2 cos(p1, t2)) + mean(2 - 2 cos(p2, t1))`` (BYOL's sum
    of both directions). ``target="stopgrad"`` is SimSiam's formulation (same gradient direction).

    Raises:
        ValueError: the network has no predictor (set ``model.predictor_hidden_dim``).
    """

    def forward(self, out: SiameseOutput) -> dict[str, torch.Tensor]:
        if out.p1 is None or out.p2 is None:
            raise ValueError("the original BYOL loss needs a learned predictor: set model.predictor_hidden_dim "
                             "(BYOL: 4096)")
        p1, p2 = normalize(out.p1), normalize(out.p2)
        t1, t2 = (normalize(t).detach() for t in self.targets(out))
        loss = (2 - 2 * (p1 * t2).sum(-1)).mean() + (2 - 2 * (p2 * t1).sum(-1)).mean()
        return {"loss": loss, "pos_sim": positive_similarity(normalize(out.z1), normalize(out.z2), t1, t2)}


def _standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Batch standardisation of (N, C) columns, as ``BatchNorm1d(affine=False)`` in train mode (biased var)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


class BarlowTwinsLoss(SiameseLoss):
    """Barlow Twins: ``sum_i (1 - c_ii)^2 + lambda sum_{i != j} c_ij^2``, ``c = z1n^T z2n / N`` of the
    batch-standardised global batch; ``L = (L(z1, t2) + L(z2, t1)) / 2`` (equal to one term when
    ``target="online"``, as c only transposes).

    Args:
        lambd: 0.0051 (Barlow Twins' value for its 8192-d projector).
    """

    allowed_targets = ("online", "momentum", "stopgrad")

    def __init__(self, lambd: float = 0.0051, target: str = "online"):
        super().__init__(target)
        self.lambd = float(lambd)

    def _one(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = _standardize(a), _standardize(b)
        c = a.T @ b / a.shape[0]
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on + self.lambd * off

    def forward(self, out: SiameseOutput) -> dict[str, torch.Tensor]:
        t1, t2 = self.targets(out)
        z1, z2 = gather_with_grad(promote(out.z1)), gather_with_grad(promote(out.z2))
        g1, g2 = (z1, z2) if self.target == "online" else (gather(promote(t1)), gather(promote(t2)))
        loss = 0.5 * (self._one(z1, g2) + self._one(z2, g1))
        return {"loss": loss, "pos_sim": positive_similarity(normalize(out.z1), normalize(out.z2),
                                                             normalize(t1), normalize(t2))}


class VICRegLoss(SiameseLoss):
    """VICReg: ``sim * MSE(z1, t2) + var * (v(z1) + v(t2)) / 2 + cov * (c(z1) + c(t2))``, symmetrised over views,
    on the all-gathered raw embeddings; ``v(z) = mean_j relu(gamma - sqrt(Var z_j + eps))``,
    ``c(z) = sum_{i != j} Cov(z)_ij^2 / C``. Terms of detached targets carry no gradient.

    Args:
        sim_coeff, std_coeff, cov_coeff: 25, 25, 1 (VICReg). gamma: 1. eps: 1e-4.
    """

    allowed_targets = ("online", "momentum", "stopgrad")

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0, gamma: float = 1.0,
                 eps: float = 1e-4, target: str = "online"):
        super().__init__(target)
        self.sim_coeff, self.std_coeff, self.cov_coeff = float(sim_coeff), float(std_coeff), float(cov_coeff)
        self.gamma, self.eps = float(gamma), float(eps)

    def _var(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(self.gamma - torch.sqrt(z.var(0) + self.eps)).mean()

    def _cov(self, z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0)
        cov = z.T @ z / (z.shape[0] - 1)
        return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / z.shape[1]

    def _one(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.sim_coeff * F.mse_loss(a, b) + self.std_coeff * 0.5 * (self._var(a) + self._var(b))
                + self.cov_coeff * (self._cov(a) + self._cov(b)))

    def forward(self, out: SiameseOutput) -> dict[str, torch.Tensor]:
        t1, t2 = self.targets(out)
        z1, z2 = gather_with_grad(promote(out.z1)), gather_with_grad(promote(out.z2))
        g1, g2 = (z1, z2) if self.target == "online" else (gather(promote(t1)), gather(promote(t2)))
        loss = 0.5 * (self._one(z1, g2) + self._one(z2, g1))
        return {"loss": loss, "pos_sim": positive_similarity(normalize(out.z1), normalize(out.z2),
                                                             normalize(t1), normalize(t2))}

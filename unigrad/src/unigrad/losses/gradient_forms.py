"""Every siamese method written as its gradient (spec §3.2-3.5), and UniGrad.

All share the unified form ``dL/du1 = -u2^t + lambda * sum_{v in V} w_v v`` (paper, README table) and are
trained through the same surrogate (:func:`~unigrad.losses.common.symmetric_grad_loss`): each class only
computes the per-sample gradients ``g1, g2`` (n, C) from the unit-norm online embeddings ``u1, u2`` and the
unit-norm, detached targets ``t1, t2`` (momentum embeddings, or stop-gradient online ones for the
"w/o momentum encoder" rows). Notation: n per-rank batch, N global batch, W world size, C embedding dim.

Shapes: ``u1, u2, t1, t2``: (n, C) float32; the returned ``g1, g2``: (n, C).
"""

from __future__ import annotations

import abc

import torch

from ..models.siamese import SiameseOutput
from .common import SiameseLoss, all_reduce_mean_, gather, normalize, positive_similarity, symmetric_grad_loss

__all__ = ["GradientLoss", "CorrelationEMALoss", "UniGradLoss", "BYOLDirectPredGradLoss", "SimCLRGradLoss",
           "MoCoGradLoss", "BarlowTwinsGradLoss", "VICRegGradLoss", "MixInfo"]


class MixInfo:
    """How a batch was CutMix-ed: sample ``i`` holds ``lam`` of image ``i`` and ``1 - lam`` of image ``perm[i]``."""

    def __init__(self, perm: torch.Tensor, lam: float):
        self.perm, self.lam = perm, float(lam)

    def mix(self, t: torch.Tensor) -> torch.Tensor:
        """``lam * t + (1 - lam) * t[perm]`` for targets t (n, C) (no renormalisation; our design, spec §3.8)."""
        return self.lam * t + (1.0 - self.lam) * t[self.perm]


class GradientLoss(SiameseLoss, abc.ABC):
    """A method given by its gradient: ``forward`` normalises, calls :meth:`gradients` without autograd and
    returns the symmetric surrogate ``L = (mean<u1, sg g1> + mean<u2, sg g2>) / 2`` and ``pos_sim``."""

    #: whether :meth:`gradients` accepts ``mix`` (CutMix-ed online views)
    supports_mix = False

    @abc.abstractmethod
    def gradients(self, u1: torch.Tensor, u2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample gradients ``(g1, g2)`` (n, C); updates the objective's state (F, queue) if it has one."""

    def forward(self, out: SiameseOutput, mix: MixInfo | None = None) -> dict[str, torch.Tensor]:
        """``{"loss": surrogate, "pos_sim": monitor}`` of one step's network output.

        ``mix``: the online views were CutMix-ed (experimental, spec §3.8): the positive targets are mixed like
        the inputs (objectives with ``supports_mix`` only).

        Raises:
            ValueError: ``mix`` given to an objective that does not support it.
        """
        if mix is not None and not self.supports_mix:
            raise ValueError(f"{type(self).__name__} does not support CutMix-ed views")
        u1, u2 = normalize(out.z1), normalize(out.z2)
        t1, t2 = (normalize(t).detach() for t in self.targets(out))
        with torch.no_grad():
            g1, g2 = self.gradients(u1.detach(), u2.detach(), t1, t2, *(() if mix is None else (mix,)))
        p1, p2 = (t1, t2) if mix is None else (mix.mix(t1), mix.mix(t2))
        return {"loss": symmetric_grad_loss(u1, g1, u2, g2), "pos_sim": positive_similarity(u1, u2, p1, p2)}


class CorrelationEMALoss(GradientLoss):
    """Holds ``F``, the EMA of the correlation matrix of the target embeddings (spec §3.3 steps 1-2).

    Buffers (saved in the state dict, hence in every checkpoint, and moved with ``.to()``):
        F: (C, C) float32, the running estimate.
        F_initialized: bool scalar; False until the first batch, which sets ``F = F_b`` (no warm-up, no
            bias correction, as the official code).

    Args:
        dim: C.
        rho: EMA factor, ``F <- rho F + (1 - rho) F_b``.
    """

    def __init__(self, dim: int, rho: float = 0.99, target: str = "momentum"):
        super().__init__(target)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        self.rho = float(rho)
        self.register_buffer("F", torch.zeros(dim, dim, dtype=torch.float32))
        self.register_buffer("F_initialized", torch.tensor(False))

    @torch.no_grad()
    def update_correlation(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """``F_b = (t1^T t1 + t2^T t2) / (2n)``, averaged over ranks (all-reduce SUM / W), then the EMA; returns F.

        F is updated BEFORE it is used, so the current batch contributes ``1 - rho`` to the F it meets.
        """
        t = torch.cat([t1, t2]).to(self.F.dtype)
        f_b = all_reduce_mean_(t.T @ t / t.shape[0])
        # a device-side select, not a Python branch: no host sync, works on any device
        self.F.copy_(torch.where(self.F_initialized, self.rho * self.F + (1.0 - self.rho) * f_b, f_b))
        self.F_initialized.fill_(True)
        return self.F


class UniGradLoss(CorrelationEMALoss):
    """UniGrad (paper Eq. for UniGrad; official ``loss_unigrad``): ``g1 = -t2 + lambda * u1 F``, ``g2 = -t1 + lambda * u2 F``.

    The gradient of ``-cos(u1, u2^m) + (lambda/2) sum_v rho_v cos^2(u1, v)`` with ``F = sum_v rho_v v v^T``
    the EMA correlation of all past momentum embeddings. ``lambda = 0`` leaves only the positive term
    (the collapsing baseline).

    Args:
        dim: C. lambd: lambda (100 for C = 2048). rho: 0.99. target: ``momentum`` (paper) or ``stopgrad``.
    """

    supports_mix = True

    def __init__(self, dim: int, lambd: float = 100.0, rho: float = 0.99, target: str = "momentum"):
        super().__init__(dim, rho, target)
        self.lambd = float(lambd)

    def gradients(self, u1, u2, t1, t2, mix: MixInfo | None = None):
        """As :meth:`GradientLoss.gradients`; with ``mix`` the positive targets are mixed like the inputs while
        F is still estimated from the un-mixed targets."""
        F = self.update_correlation(t1, t2)
        p1, p2 = (t1, t2) if mix is None else (mix.mix(t1), mix.mix(t2))
        return -p2 + self.lambd * (u1 @ F), -p1 + self.lambd * (u2 @ F)


class BYOLDirectPredGradLoss(CorrelationEMALoss):
    """BYOL / SimSiam as a gradient with the analytic DirectPred predictor (official ``loss_byol_directpred_grad``).

    With ``F = U diag(s) U^T`` (``torch.linalg.eigh``; F is symmetric PSD, so this equals the official SVD up to
    rounding; eigenvalues are clamped at 0 before the square root) and ``s_max = max s``:

        W_p = U diag(max(sqrt(s / s_max) + eps, 1e-4)) U^T,   M = F / s_max + eps^2 I,   h = u1 W_p,
        g1 = ( -t2 W_p + [<h, t2> / <u1 M, u1>] u1 M ) / ||h||,

    the exact gradient of ``-cos(W_p u1, t2)`` with ``W_p^2`` replaced by M. ``target=stopgrad`` is the
    SimSiam row. The surrogate value is ~0 (g is orthogonal to u for symmetric W_p): log ``pos_sim``.

    Args:
        dim: C. rho: 0.99. eps: 0.3.
    """

    def __init__(self, dim: int, rho: float = 0.99, eps: float = 0.3, target: str = "momentum"):
        super().__init__(dim, rho, target)
        self.eps = float(eps)

    def predictor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_p, M)`` (C, C) from the current F."""
        s, U = torch.linalg.eigh(self.F)
        s = s.clamp(min=0.0)
        s_max = s.max()
        scale = (torch.sqrt(s / s_max) + self.eps).clamp(min=1e-4)
        w_p = (U * scale) @ U.T
        m = self.F / s_max + self.eps ** 2 * torch.eye(self.F.shape[0], device=self.F.device, dtype=self.F.dtype)
        return w_p, m

    def _direction(self, u, t, w_p, m):
        h = u @ w_p
        um = u @ m
        coef = (h * t).sum(-1, keepdim=True) / (um * u).sum(-1, keepdim=True)
        return (-(t @ w_p) + coef * um) / h.norm(dim=-1, keepdim=True)

    def gradients(self, u1, u2, t1, t2):
        self.update_correlation(t1, t2)
        w_p, m = self.predictor()
        return self._direction(u1, t2, w_p, m), self._direction(u2, t1, w_p, m)


class SimCLRGradLoss(GradientLoss):
    """SimCLR as a gradient (official ``loss_simclr_grad_mm``): ``g1 = (-t2 + softmax(u1 V^T / tau) V) / tau``.

    V = all-gathered ``cat(t1, t2)`` (2N, C): the whole global batch of targets, including the positive and
    the anchor's own other target view. The gradient of InfoNCE over V with V held constant.

    Args:
        tau: temperature, 0.2 (``moco_t``).
    """

    def __init__(self, tau: float = 0.2, target: str = "momentum"):
        super().__init__(target)
        self.tau = float(tau)

    def gradients(self, u1, u2, t1, t2):
        v = gather(torch.cat([t1, t2]))
        g1 = (-t2 + torch.softmax(u1 @ v.T / self.tau, dim=-1) @ v) / self.tau
        g2 = (-t1 + torch.softmax(u2 @ v.T / self.tau, dim=-1) @ v) / self.tau
        return g1, g2


class MoCoGradLoss(GradientLoss):
    """MoCo as a gradient (not released; our implementation of the paper's contrastive form with a memory bank).

    For anchor ``u1_i`` the candidates are its positive ``t2_i`` and the queue Q (K, C) of past targets:
    ``g1_i = (-t2_i + s_pos t2_i + sum_k s_k Q_k) / tau`` with ``s = softmax([u1_i . t2_i, u1_i Q^T] / tau)``
    (the gradient of MoCo's InfoNCE with the keys held constant). After both gradients are computed, the
    step's targets of both views, all-gathered, are enqueued (2N keys per step, oldest replaced).

    Buffers: ``queue`` (K, C), initialised with random unit vectors as MoCo; ``queue_ptr`` (int64 scalar).

    Args:
        dim: C. queue_size: K (MoCo: 65536; must be a multiple of the 2N keys enqueued per step). tau: 0.2.

    Raises:
        ValueError (at the first step): K is not a multiple of 2N.
    """

    def __init__(self, dim: int, queue_size: int = 65536, tau: float = 0.2, target: str = "momentum"):
        super().__init__(target)
        self.tau = float(tau)
        self.register_buffer("queue", normalize(torch.randn(queue_size, dim)))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _direction(self, u, pos):
        logits = torch.cat([(u * pos).sum(-1, keepdim=True), u @ self.queue.T], dim=1) / self.tau
        s = torch.softmax(logits, dim=-1)
        return (-pos + s[:, :1] * pos + s[:, 1:] @ self.queue) / self.tau

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest ``len(keys)`` queue entries by ``keys`` (2N, C)."""
        k, size = keys.shape[0], self.queue.shape[0]
        if size % k:
            raise ValueError(f"MoCo queue_size={size} must be a multiple of the {k} keys enqueued per step "
                             f"(2 views x global batch); change loss.queue_size or the batch size")
        rows = (self.queue_ptr + torch.arange(k, device=keys.device)) % size  # on device: no host sync
        self.queue.index_copy_(0, rows, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + k) % size)

    def gradients(self, u1, u2, t1, t2):
        g1, g2 = self._direction(u1, t2), self._direction(u2, t1)
        self.enqueue(torch.cat([gather(t1), gather(t2)]))  # [view-1 keys of all ranks; view-2 keys]: rank-count independent
        return g1, g2


class BarlowTwinsGradLoss(GradientLoss):
    """Barlow Twins as a gradient (official ``loss_barlow_twins_grad_mm``):

        g1 = 2 (-t2 + lambda (t2 B2t^T) B1 / N),   g2 = 2 (-t1 + lambda (t1 B1t^T) B2 / N),

    B1, B2 = all-gathered ONLINE embeddings (detached) of views 1, 2; B1t, B2t = all-gathered targets; N the
    global batch. Derived from ``-2 tr W + lambda ||W||_F^2`` with ``W = (1/N) sum_v v1 v2^T`` (the diagonal
    correction ``(1 - lambda) sum W_ii^2`` dropped), target-side features replaced by targets.

    Args:
        lambd: 50 (on unit vectors; not the original BT's 0.005).
        batch_size: N in the formula; the official code uses the config's ``whole_batch_size``; None = the
            gathered batch (the same whenever every rank holds n = N / W samples).
    """

    def __init__(self, lambd: float = 50.0, batch_size: int | None = None, target: str = "momentum"):
        super().__init__(target)
        self.lambd, self.batch_size = float(lambd), batch_size

    def gradients(self, u1, u2, t1, t2):
        b1, b2, b1t, b2t = (gather(x) for x in (u1, u2, t1, t2))
        n_all = self.batch_size or b1.shape[0]
        g1 = 2.0 * (-t2 + self.lambd * (t2 @ b2t.T) @ b1 / n_all)
        g2 = 2.0 * (-t1 + self.lambd * (t1 @ b1t.T) @ b2 / n_all)
        return g1, g2


class VICRegGradLoss(GradientLoss):
    """VICReg as a gradient -- EXPERIMENTAL, our reconstruction (no official code; spec §3.2 marks it unverified).

    VICReg's covariance term decorrelates within one branch: dropping centring and the diagonal, its gradient
    for ``u1`` is ``sum_v (u1^T v1 / N) v1`` over the same view of the batch. With targets in place of the
    batch features:

        g1 = -t2 + lambda u1 C1,   C1 = B1t^T B1t / N,   (and g2 with view 2)

    i.e. UniGrad with rho = 0 and a per-view batch correlation (trace 1 like F, hence the same lambda scale).

    Args:
        lambd: 100 (our choice, UniGrad's scale).
    """

    def __init__(self, lambd: float = 100.0, target: str = "momentum"):
        super().__init__(target)
        self.lambd = float(lambd)

    def gradients(self, u1, u2, t1, t2):
        b1t, b2t = gather(t1), gather(t2)
        # u1 C1 = (u1 B1t^T) B1t / N: n N C operations instead of N C^2 for C1 (N < C at the paper's scale)
        return (-t2 + self.lambd * (u1 @ b1t.T) @ b1t / b1t.shape[0],
                -t1 + self.lambd * (u2 @ b2t.T) @ b2t / b2t.shape[0])

"""The siamese network of the paper: encoder + 3-layer projector, and (optionally) their momentum copies.

Forward per training step (spec §2, official ``SiameseNet.forward``):

    z1 = projector(encoder(x1)); z2 = projector(encoder(x2))          online, with gradient
    with no_grad: EMA update of the momentum copies with ``mm``, THEN
    z1m = momentum_projector(momentum_encoder(x1)); z2m = ...(x2)      momentum targets

Each view is a separate forward call (per-view BatchNorm statistics), also in the momentum branch, which
runs in train mode and keeps its own BN running statistics (buffers are not EMA-ed).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from repro_shared.ssl.momentum import ema_update_, momentum_pairs

from .encoders import build_encoder

__all__ = ["projection_mlp", "prediction_mlp", "SiameseOutput", "SiameseNet"]


def projection_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """The official 3-layer projector (spec §2).

    ``Seq(Seq(Linear(in, h, bias=False), BN1d(h), ReLU), Seq(Linear(h, h, bias=False), BN1d(h), ReLU),
    Seq(Linear(h, out)))``: BN + ReLU on the two hidden layers, bias only on the output layer, no BN/ReLU
    after it. State-dict keys ``0.0.weight``, ``0.1.*``, ``1.0.weight``, ``1.1.*``, ``2.0.weight``, ``2.0.bias``
    as in the official checkpoints. Maps (B, in) -> (B, out).
    """
    return nn.Sequential(
        nn.Sequential(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Linear(hidden_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Linear(hidden_dim, out_dim)),
    )


def prediction_mlp(dim: int, hidden_dim: int) -> nn.Sequential:
    """BYOL's learned predictor ``Linear(dim, h) - BN - ReLU - Linear(h, dim)``, (B, dim) -> (B, dim).

    Only for the "original BYOL" rows; the gradient forms have no learned predictor.
    """
    return nn.Sequential(nn.Linear(dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, dim))


@dataclass
class SiameseOutput:
    """Raw (not normalised) projector outputs of one step, each (n, C).

    ``z1m``/``z2m`` are the momentum branch's outputs (no gradient), None without a momentum branch;
    ``p1``/``p2`` the learned predictor's outputs, None without one.
    """

    z1: torch.Tensor
    z2: torch.Tensor
    z1m: torch.Tensor | None = None
    z2m: torch.Tensor | None = None
    p1: torch.Tensor | None = None
    p2: torch.Tensor | None = None


class SiameseNet(nn.Module):
    """Encoder + projector (+ optional learned predictor) and, with ``momentum=True``, their EMA copies.

    Args:
        encoder: ``resnet50`` | ``resnet18`` | ``tiny_cnn`` (see :func:`~unigrad.models.encoders.build_encoder`).
        projector_hidden_dim, projector_output_dim: 2048, 2048 in the paper.
        momentum: build ``momentum_encoder``/``momentum_projector`` (deep copies, same init, no gradient).
            False for the "w/o momentum encoder" rows (targets are stop-gradient online embeddings).
        predictor_hidden_dim: build BYOL's learned predictor with this hidden width (original-BYOL rows).
        zero_init_residual: torchvision option, True as in the official code.
        tiny_widths: channels of the ``tiny_cnn`` encoder.

    The momentum parameters have ``requires_grad=False``: the official code passes them to SGD, where their
    ``.grad`` stays None and SGD skips them (no weight decay either), which is the same as leaving them out.
    """

    def __init__(self, encoder: str = "resnet50", projector_hidden_dim: int = 2048, projector_output_dim: int = 2048,
                 *, momentum: bool = True, predictor_hidden_dim: int | None = None, zero_init_residual: bool = True,
                 tiny_widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        self.encoder, self.feature_dim = build_encoder(encoder, zero_init_residual=zero_init_residual,
                                                       tiny_widths=tiny_widths)
        self.projector = projection_mlp(self.feature_dim, projector_hidden_dim, projector_output_dim)
        self.embed_dim = projector_output_dim
        self.predictor = prediction_mlp(projector_output_dim, predictor_hidden_dim) if predictor_hidden_dim else None
        self.has_momentum = bool(momentum)
        if self.has_momentum:
            self.momentum_encoder = copy.deepcopy(self.encoder)
            self.momentum_projector = copy.deepcopy(self.projector)
            for p in (*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()):
                p.requires_grad_(False)

    def online_parameters_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(momentum params, online params)`` of encoder + projector, matched by name."""
        t_enc, o_enc = momentum_pairs(self.encoder, self.momentum_encoder)
        t_proj, o_proj = momentum_pairs(self.projector, self.momentum_projector)
        return t_enc + t_proj, o_enc + o_proj

    @torch.no_grad()
    def momentum_update(self, mm: float) -> None:
        """``theta_m <- mm * theta_m + (1 - mm) * theta`` for every encoder+projector parameter (fused ``_foreach``)."""
        if self.has_momentum:
            ema_update_(*self.online_parameters_pairs(), mm)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Online projector output (B, C) of images (B, 3, H, W)."""
        return self.projector(self.encoder(x))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, mm: float | None = None) -> SiameseOutput:
        """One training forward of two views (n, 3, H, W) each.

        Args:
            mm: EMA momentum of this step, applied to the momentum copies BEFORE their forward (official
                order). Required when the network has a momentum branch.

        Raises:
            ValueError: ``mm`` is missing although the network has a momentum branch.
        """
        z1, z2 = self.embed(x1), self.embed(x2)
        out = SiameseOutput(z1, z2)
        if self.predictor is not None:
            out.p1, out.p2 = self.predictor(z1), self.predictor(z2)
        if self.has_momentum:
            if mm is None:
                raise ValueError("this network has a momentum branch: pass the step's momentum mm")
            with torch.no_grad():
                self.momentum_update(mm)
                out.z1m = self.momentum_projector(self.momentum_encoder(x1))
                out.z2m = self.momentum_projector(self.momentum_encoder(x2))
        return out

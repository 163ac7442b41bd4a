"""The SiameseIM pre-training model (spec sim.md section 2): online encoder on the visible patches of view 1, a
projector + predictor decoder that predicts view 2's dense features from view 1 and the relative geometry,
and a momentum (EMA) target branch on the full view 2.

Parameter names follow the official ``SiameseIMViT`` (and timm's ViT for the encoder: ``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``), so released
weights load with a key filter and the encoder drops into a timm ``VisionTransformer``. Blocks are timm
``Block`` (SDPA attention). Decoder norms are BatchNorm over all tokens (``PermuteBN``, keys ``normX.bn.*``;
statistics global over all ranks under DDP, as the official SyncBN) or LayerNorm.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from repro_shared.ssl.geometry import absolute_sincos_embedding, relative_sincos_embedding
from repro_shared.ssl.momentum import ema_update_

__all__ = ["ENCODER_VARIANTS", "PermuteBN", "SiameseIMOutput", "SiameseIM", "build_siameseim"]

#: encoder shapes of the official constructors (patch, width, depth, heads) plus the CPU size
ENCODER_VARIANTS = {
    "tiny": dict(patch_size=8, embed_dim=64, depth=4, num_heads=4),
    "vit_base_patch16": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch14": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
}

_LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class PermuteBN(nn.Module):
    """BatchNorm over the channels of ``(B, T, C)`` tokens with statistics over all ``B*T`` tokens, in float32
    (official ``PermuteBN``; the module is ``self.bn`` so that state-dict keys read ``...bn.weight``).

    With ``sync`` (default) and an initialised process group of more than one rank, training-mode statistics are
    global over all ranks' tokens, as the official ``SyncBatchNorm``: each rank's count, mean and centred sum of
    squares are all-gathered (differentiable, gloo or NCCL) and combined exactly (Chan et al.), so the step
    equals one process holding the whole batch. torch's ``SyncBatchNorm`` is not used because it refuses CPU
    tensors, which would leave the distributed path untestable without GPUs.
    """

    def __init__(self, dim: int, sync: bool = True, **_: object):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.sync = bool(sync)

    def _global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_gather

        bn = self.bn
        n = torch.full((1,), float(x.shape[0]), device=x.device)
        mean = x.mean(0)
        m2 = (x - mean).pow(2).sum(0)
        stats = torch.stack(all_gather(torch.cat([n, mean, m2])))          # (world, 1 + 2C)
        counts, means, m2s = stats[:, :1], stats[:, 1:1 + x.shape[1]], stats[:, 1 + x.shape[1]:]
        total = counts.sum()
        g_mean = (counts * means).sum(0) / total
        g_m2 = (m2s + counts * (means - g_mean).pow(2)).sum(0)
        var = g_m2 / total
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            bn.running_mean.lerp_(g_mean.detach(), bn.momentum)
            bn.running_var.lerp_((g_m2 / (total - 1).clamp(min=1)).detach(), bn.momentum)
        return (x - g_mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type if x.device.type in ("cuda", "cpu") else "cpu", enabled=False):
            flat = x.reshape(-1, x.shape[-1]).float()
            if (self.sync and self.training and torch.distributed.is_available() and torch.distributed.is_initialized()
                    and torch.distributed.get_world_size() > 1):
                return self._global_batch_norm(flat).reshape(x.shape)
            return self.bn(flat).reshape(x.shape)


def _blocks(dim: int, depth: int, heads: int, norm: type[nn.Module] | partial, mlp_ratio: float,
            init_values: float | None = None, drop_path: float = 0.0) -> nn.ModuleList:
    rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # linear 0 -> drop_path
    return nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=norm, init_values=init_values,
                               drop_path=r) for r in rates)


class SiameseIMOutput(NamedTuple):
    """``pred`` ``(B, N, Dd)``: the decoder's prediction of view 2's patch features (the last ``N`` predictor
    tokens); ``target`` ``(B, N, Dd)`` float32: the target branch's features of view 2, LayerNormed without
    affine (eps 1e-5), no gradient."""

    pred: torch.Tensor
    target: torch.Tensor


class SiameseIM(nn.Module):
    """SiameseIM with a ViT encoder.

    Args:
        img_size, patch_size, in_chans: input geometry; ``G = img_size / patch_size``, ``N = G*G``.
        embed_dim, depth, num_heads, mlp_ratio: the encoder ``C``.
        decoder_dim: ``Dd`` (768 in the released recipe); decoder_heads: 16 in the official code.
        projector_depth, predictor_depth: decoder blocks before (shared with the target branch) and after the
            queries are appended (2 and 4).
        decoder_norm: ``"bn"`` (official: BatchNorm over tokens, global over ranks under DDP) or ``"ln"``.
        sync_bn: BN statistics over all ranks (official); ``False`` keeps them per rank.
        num_masked: masked patches of view 1 per image (118 of 196); every mask must have exactly this many.
        train_patch_embed: official default False: the patch embedding stays at its random init.
        init_values: LayerScale init (None = off, every released recipe).
        drop_path_rate: encoder stochastic depth (0 in pre-training).
        online_ln: apply a frozen LayerNorm to the prediction too (official option, off).

    Raises:
        ValueError: ``img_size`` not divisible by ``patch_size``, an unknown ``decoder_norm``, or ``num_masked``
            outside ``1..N-1``.
    """

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, decoder_dim: int = 768,
                 decoder_heads: int = 16, projector_depth: int = 2, predictor_depth: int = 4,
                 decoder_norm: str = "bn", sync_bn: bool = True, num_masked: int = 118, train_patch_embed: bool = False,
                 init_values: float | None = None, drop_path_rate: float = 0.0, online_ln: bool = False):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not divisible by the patch size {patch_size}; "
                             f"choose data.input_size as a multiple of {patch_size} (the patch of model.variant)")
        if decoder_norm not in ("bn", "ln"):
            raise ValueError(f"decoder_norm must be 'bn' or 'ln', got {decoder_norm!r}")
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size ** 2
        if not 0 < num_masked < self.num_patches:
            raise ValueError(f"num_masked must be in 1..{self.num_patches - 1} for a {self.grid_size}x{self.grid_size} "
                             f"grid, got {num_masked}")
        self.num_masked, self.decoder_dim = int(num_masked), int(decoder_dim)
        dnorm = partial(PermuteBN, sync=sync_bn) if decoder_norm == "bn" else _LayerNorm

        # online encoder (timm names)
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = _blocks(embed_dim, depth, num_heads, _LayerNorm, mlp_ratio, init_values, drop_path_rate)
        # decoder: projector (also in the target branch) and predictor
        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, decoder_dim), requires_grad=False)
        self.projector_decoder_blocks = _blocks(decoder_dim, projector_depth, decoder_heads, dnorm, mlp_ratio)
        self.predictor_decoder_blocks = _blocks(decoder_dim, predictor_depth, decoder_heads, dnorm, mlp_ratio)
        self.decoder_pred = nn.Linear(decoder_dim, decoder_dim)
        self.decoder_pos_mlp = nn.Linear(2 * decoder_dim, decoder_dim)
        self.student_norm = nn.LayerNorm(decoder_dim).requires_grad_(False) if online_ln else nn.Identity()
        self._init_online()

        # momentum target branch: exact copies of the online modules, never trained by the optimizer
        self.mm_patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.mm_cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mm_blocks = _blocks(embed_dim, depth, num_heads, _LayerNorm, mlp_ratio, init_values)
        self.mm_decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mm_mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))  # unused, kept for the official layout
        self.mm_projector_decoder_blocks = _blocks(decoder_dim, projector_depth, decoder_heads, dnorm, mlp_ratio)
        for tgt, src in self._momentum_modules():
            tgt.load_state_dict(src.state_dict()) if isinstance(tgt, nn.Module) else tgt.data.copy_(src.data)
            tgt.requires_grad_(False)
        if not train_patch_embed:
            self.patch_embed.requires_grad_(False)

    # ------------------------------------------------------------------ init / momentum
    def _init_online(self) -> None:
        """Official init: fixed sin-cos tables (row first), xavier-uniform patch embedding (as a Linear) and
        Linears (bias 0), LayerNorm (1, 0), cls / mask tokens N(0, 0.02). The patch-embedding bias keeps
        PyTorch's Conv2d default, as in the official code."""
        with torch.no_grad():
            self.pos_embed.copy_(absolute_sincos_embedding(self.pos_embed.shape[-1], self.grid_size)[None])
            self.decoder_pos_embed.copy_(absolute_sincos_embedding(self.decoder_dim, self.grid_size)[None])
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _momentum_modules(self) -> list[tuple[nn.Module | nn.Parameter, nn.Module | nn.Parameter]]:
        """(target, online) pairs the EMA covers (official ``mm_update``): patch embedding, blocks, cls token,
        decoder_embed, mask token, projector. Not the predictor, decoder_pred or decoder_pos_mlp."""
        return [(self.mm_patch_embed, self.patch_embed), (self.mm_blocks, self.blocks),
                (self.mm_cls_token, self.cls_token), (self.mm_decoder_embed, self.decoder_embed),
                (self.mm_mask_token, self.mask_token),
                (self.mm_projector_decoder_blocks, self.projector_decoder_blocks)]

    def momentum_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Matching ``(target, online)`` parameter lists (BN running statistics are not included: each branch
        keeps its own)."""
        tgt, src = [], []
        for t, s in self._momentum_modules():
            tgt += list(t.parameters()) if isinstance(t, nn.Module) else [t]
            src += list(s.parameters()) if isinstance(s, nn.Module) else [s]
        return tgt, src

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """``theta_target <- m theta_target + (1 - m) theta_online`` for every pair, in float32 (two fused ops)."""
        ema_update_(*self.momentum_parameters(), momentum)

    # ------------------------------------------------------------------ forward
    def forward_encoder(self, images: torch.Tensor) -> torch.Tensor:
        """Online encoder on full images (no masking, no final norm): ``(B, 3, H, W) -> (B, 1 + N, C)``."""
        x = self.patch_embed(images)
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x + self.pos_embed[:, 1:]], 1)
        for blk in self.blocks:
            x = blk(x)
        return x

    def visible_indices(self, mask: torch.Tensor) -> torch.Tensor:
        """Row-major indices of the ``N - num_masked`` visible patches, ``(B, K)`` int64 (no host sync)."""
        return torch.argsort(mask.reshape(mask.shape[0], -1).to(torch.uint8), dim=1, stable=True)[
            :, : self.num_patches - self.num_masked]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, geometry: torch.Tensor, mask: torch.Tensor,
                momentum: float | None = None) -> SiameseIMOutput:
        """One pre-training forward (official ``forward_sim``).

        Args:
            x1: view 1 ``(B, 3, H, W)`` (online, masked); x2: view 2 ``(B, 3, H, W)`` (target, full).
            geometry: ``(B, 6)`` view 2 relative to view 1 (``repro_shared.ssl.geometry.relative_geometry``).
            mask: ``(B, G, G)`` or ``(B, N)``, 1 = masked; exactly ``num_masked`` ones per image.
            momentum: when given, the EMA update of the target branch runs first (inside the step, before the
                target forward, as the official code); ``None`` leaves the target as it is.

        Returns:
            :class:`SiameseIMOutput` ``(pred, target)``.
        """
        B, N, Dd = x1.shape[0], self.num_patches, self.decoder_dim
        keep = self.visible_indices(mask)                                            # (B, K)
        x = self.patch_embed(x1) + self.pos_embed[:, 1:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1), x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(x)
        for blk in self.projector_decoder_blocks:
            x = blk(x)
        vis_pos = torch.gather(self.decoder_pos_embed[:, 1:].expand(B, -1, -1), 1, keep[..., None].expand(-1, -1, Dd))
        rel = relative_sincos_embedding(geometry, Dd, self.grid_size)                # (B, N, 2 Dd), fp32, detached
        queries = self.mask_token + self.decoder_pos_mlp(rel.to(self.decoder_pos_mlp.weight.dtype))
        x = torch.cat([x[:, :1] + self.decoder_pos_embed[:, :1], x[:, 1:] + vis_pos, queries], dim=1)
        for blk in self.predictor_decoder_blocks:
            x = blk(x)
        pred = self.student_norm(self.decoder_pred(x)[:, -N:])
        with torch.no_grad():
            if momentum is not None:
                self.momentum_update(momentum)
            t = self.mm_patch_embed(x2)
            t = torch.cat([self.mm_cls_token.expand(B, -1, -1), t], dim=1) + self.pos_embed
            for blk in self.mm_blocks:
                t = blk(t)
            t = self.mm_decoder_embed(t)
            for blk in self.mm_projector_decoder_blocks:
                t = blk(t)
            target = F.layer_norm(t[:, 1:].float(), (Dd,), eps=1e-5)
        return SiameseIMOutput(pred, target)


def build_siameseim(variant: str, **kwargs) -> SiameseIM:
    """A :class:`SiameseIM` of a named encoder size (:data:`ENCODER_VARIANTS`), other arguments as given.

    Raises:
        ValueError: unknown ``variant`` (the error lists the known ones).
    """
    if variant not in ENCODER_VARIANTS:
        raise ValueError(f"unknown SiameseIM variant {variant!r}; known: {', '.join(ENCODER_VARIANTS)}")
    return SiameseIM(**{**ENCODER_VARIANTS[variant], **kwargs})

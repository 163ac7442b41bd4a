"""The M3I pre-training model (spec m3i.md sections 2.1, 3.2-3.5): one online network on a mix of two images,
dense image targets from a momentum (EMA) network, and global category / text targets.

One training sample ``i`` mixes image ``A = i`` and image ``B = i - 1`` of the batch (``B = roll(batch, 1)``, so
every image plays A once and B once). Each image ``k`` comes with two augmented views ``v1_k``, ``v2_k`` and
the geometry of ``v2_k`` in ``v1_k``'s frame; ``M_i (N,)`` (True = A) is a block-wise mask with exactly
``K_A`` True per sample::

    x_i   = M_i * v1_A + (1 - M_i) * v1_B                      token mix (ViT) or pixel mix at stride p (CNN)
    F_i   = f_theta(x_i)                                       (N, D) dense tokens (+ the dense neck for H/G)
    Z_i   = projector(decoder_embed(F_i))                      (N, Dd)
    intra (A predicts its own view where it is hidden):
        P_A = pred(predictor([Z_i[M] + pe(M)] ++ [mask + pos_mlp(rel_pe(identity))[~M]]))[queries]
        T_A = LN(target(v1_A))[~M]
    inter (B predicts its other view v2_B, every patch):
        P_B = pred(predictor([Z_i[~M] + pe(~M)] ++ [mask + pos_mlp(rel_pe(geometry_B))]))[queries]
        T_B = LN(target(v2_B))
    global: h_A = pool(F_i, keep=M), h_B = pool(F_i, keep=~M)  -> class logits W h (+ b), or the image embedding of
        the text InfoNCE

``pe`` is the decoder's fixed absolute sin-cos table, ``rel_pe`` the SiameseIM relative embedding
(:func:`repro_shared.ssl.geometry.relative_sincos_embedding`; the identity geometry gives the absolute
positions plus the zero-scale blocks), ``LN`` a LayerNorm without affine. The target branch is an EMA copy of
``online = {backbone, decoder_embed, projector}``, always in eval mode, never trained by the optimizer.
Choices marked [R]/[U] in the spec are constructor arguments (README: "Reconstruction decisions").
"""

from __future__ import annotations

import copy
import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from repro_shared.ssl.geometry import absolute_sincos_embedding, relative_sincos_embedding
from repro_shared.ssl.momentum import ema_update_, momentum_pairs

from .text import TextTower

__all__ = ["M3IOutput", "M3IModel", "mix_pixels", "split_by_mix"]


class M3IOutput(NamedTuple):
    """What the objective needs from one forward (``None`` for a branch that is switched off).

    ``pred_intra`` / ``target_intra``: ``(B, N - K_A, Dd)``; ``pred_inter`` / ``target_inter``: ``(B, N, Dd)``
    (targets float32, normalised, no gradient); ``global_a`` / ``global_b``: ``(B, Dg)`` pooled features of image
    A (= image ``i``) and of image B (= image ``i - 1``) of each sample; ``logits_a`` / ``logits_b``: class
    logits ``(B, K)``; ``text``: caption embeddings ``(B, Dg)`` of image ``k`` (not normalised);
    ``logit_scale``: the learnable log temperature of the text InfoNCE, shape ``(1,)``.
    """

    pred_intra: torch.Tensor | None
    target_intra: torch.Tensor | None
    pred_inter: torch.Tensor | None
    target_inter: torch.Tensor | None
    global_a: torch.Tensor | None
    global_b: torch.Tensor | None
    logits_a: torch.Tensor | None
    logits_b: torch.Tensor | None
    text: torch.Tensor | None
    logit_scale: torch.Tensor | None


def mix_pixels(x_a: torch.Tensor, x_b: torch.Tensor, mix: torch.Tensor, patch: int) -> torch.Tensor:
    """Pixel mix at stride ``patch``: images ``(B, 3, S, S)``, ``mix (B, N)`` (True = A, row-major) ->
    ``(B, 3, S, S)``."""
    g = x_a.shape[-1] // patch
    m = mix.view(-1, 1, g, 1, g, 1).expand(-1, 1, g, patch, g, patch).reshape(-1, 1, g * patch, g * patch)
    return torch.where(m, x_a, x_b)


def split_by_mix(mix: torch.Tensor, count_a: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-major token indices of A (``(B, K_A)``) and of the rest (``(B, N - K_A)``); no host sync.

    Every row of ``mix (B, N)`` must hold exactly ``count_a`` True (the fixed-count block masks guarantee it).
    """
    order = torch.argsort((~mix).to(torch.uint8), dim=1, stable=True)
    return order[:, :count_a], order[:, count_a:]


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, idx[b]]`` for ``x (B, N, C)``, ``idx (B, K)`` -> ``(B, K, C)``."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    return nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
                         for _ in range(depth))


class M3IModel(nn.Module):
    """M3I: online backbone + dense decoder + global heads, and the EMA target branch.

    Args:
        backbone: a :class:`m3i.models.vit.ViTBackbone` or an :class:`m3i.models.internimage.InternImage` built with
            ``use_clip_projector`` (both have ``forward_dense``, ``forward_global``, ``dense_dim``, ``global_dim``).
        grid_size: ``G`` of the stride-``p`` token grid; patch: ``p`` (pixel mixing of CNN backbones).
        count_a: ``K_A``, tokens of image A in every mix (``N - K_A`` of image B).
        dense: build the decoder and the target branch (False for objectives without image targets).
        intra, inter: compute the intra-view (A) and inter-view (B) dense predictions.
        second_image: mix in image B; False fills B's patches with zeros (intra-view only, MAE-like input).
        decoder_dim, decoder_heads, projector_depth, predictor_depth: the SiameseIM-style decoder (Dd 768, 16
            heads, 2 + 4 blocks for ViT-B in SiameseIM).
        num_classes: classes of the category target (0: no class head).
        text_tower: the caption encoder (None: no text target); its ``out_dim`` must be the backbone's
            ``global_dim``.
        online_ln: LayerNorm (no affine) the predictions too (SiameseIM option, off).
        target_eps: eps of the targets' LayerNorm (1e-6, spec 3.3a).

    Raises:
        ValueError: ``count_a`` outside ``1..N-1``, or a text tower whose width differs from the global width.
    """

    def __init__(self, backbone: nn.Module, *, grid_size: int, patch: int, count_a: int, dense: bool = True,
                 intra: bool = True, inter: bool = True, second_image: bool = True, decoder_dim: int = 768,
                 decoder_heads: int = 16, projector_depth: int = 2, predictor_depth: int = 4, num_classes: int = 0,
                 text_tower: TextTower | None = None, online_ln: bool = False, target_eps: float = 1e-6):
        super().__init__()
        n = grid_size * grid_size
        if not 0 < count_a < n:
            raise ValueError(f"count_a (visible tokens of image A) must be in 1..{n - 1} for a {grid_size}x{grid_size} "
                             f"grid, got {count_a}")
        if text_tower is not None and text_tower.text_projection.shape[1] != backbone.global_dim:
            raise ValueError(f"the text tower's out_dim {text_tower.text_projection.shape[1]} must equal the image "
                             f"global width {backbone.global_dim}")
        self.grid_size, self.patch, self.count_a, self.num_tokens = grid_size, patch, count_a, n
        self.dense = dense
        self.intra, self.inter = dense and intra, dense and inter and second_image
        self.second_image, self.online_ln, self.target_eps = second_image, online_ln, target_eps
        modules = {"backbone": backbone}
        if dense:
            self.decoder_dim = decoder_dim
            modules["decoder_embed"] = nn.Linear(backbone.dense_dim, decoder_dim)
            modules["projector"] = _blocks(decoder_dim, projector_depth, decoder_heads)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
            self.predictor = _blocks(decoder_dim, predictor_depth, decoder_heads)
            self.decoder_pred = nn.Linear(decoder_dim, decoder_dim)
            self.decoder_pos_mlp = nn.Linear(2 * decoder_dim, decoder_dim)
            table = absolute_sincos_embedding(decoder_dim, grid_size, cls_token=False)
            self.register_buffer("decoder_pos_embed", table, persistent=False)
            identity = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0, 1.0]])  # view 2 = view 1
            self.register_buffer("identity_query_pos", relative_sincos_embedding(identity, decoder_dim, grid_size),
                                 persistent=False)
        self.online = nn.ModuleDict(modules)
        self.head = nn.Linear(backbone.global_dim, num_classes) if num_classes > 0 else None
        self.text = text_tower
        # shape (1,), not 0-dim: DeepSpeed's parameter broadcast views every parameter as bytes, which 0-dim refuse
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07))) if text_tower is not None else None
        self._init_decoder()
        self.target = copy.deepcopy(self.online) if dense else None
        if self.target is not None:
            self.target.requires_grad_(False)
            self.target.train(False)

    def _init_decoder(self) -> None:
        """SiameseIM decoder init: Linears Xavier-uniform (bias 0), mask token N(0, 0.02); class head trunc-normal
        0.02 as a timm classifier. The backbone keeps its own init."""
        if self.dense:
            for m in [self.online["decoder_embed"], *self.online["projector"].modules(), *self.predictor.modules(),
                      self.decoder_pred, self.decoder_pos_mlp]:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            nn.init.normal_(self.mask_token, std=0.02)
        if self.head is not None:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    @property
    def backbone(self) -> nn.Module:
        return self.online["backbone"]

    def train(self, mode: bool = True) -> "M3IModel":
        super().train(mode)
        if self.target is not None:
            self.target.train(False)  # no drop path / dropout in the target branch
        return self

    # ------------------------------------------------------------------------------------ momentum
    def momentum_parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(target, online)`` tensors the EMA covers: backbone, decoder_embed, projector.

        Under DeepSpeed ZeRO-3 the local partitions (``ds_tensor``) are used; they line up because each pair has the
        same shape. A parameter ZeRO-3 keeps replicated (``ds_persist``: small ones, below
        ``stage3_param_persistence_threshold``) also has a full copy, which is what the forward reads and which
        ZeRO-3 refreshes after the optimizer step only for the parameters the optimizer owns; for the target's, the
        full copies are updated here as well (the same arithmetic on the same values as their partitions).

        Raises:
            ValueError: ZeRO-3 keeps a target parameter replicated but not its online twin (a model-wide persistence
                limit fell between them), so no full online value is at hand.
        """
        if self.target is None:
            return [], []
        tgt, onl = momentum_pairs(self.online, self.target)
        t_out, o_out = [], []
        for t, o in zip(tgt, onl):
            if not hasattr(t, "ds_tensor"):
                t_out.append(t)
                o_out.append(o)
                continue
            t_out.append(t.ds_tensor)
            o_out.append(o.ds_tensor)
            if getattr(t, "ds_persist", False):
                if not getattr(o, "ds_persist", False):
                    raise ValueError("DeepSpeed ZeRO-3 keeps a target-network parameter replicated but not its "
                                     f"online twin (shape {tuple(t.ds_shape)}); raise "
                                     "stage3_model_persistence_threshold or set stage3_param_persistence_threshold=0")
                t_out.append(t.data)
                o_out.append(o.data)
        return t_out, o_out

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """``theta_target <- m theta_target + (1 - m) theta_online`` (two fused ``_foreach`` ops)."""
        ema_update_(*self.momentum_parameters(), momentum)

    # ------------------------------------------------------------------------------------ forward
    def encode(self, x_a: torch.Tensor, x_b: torch.Tensor | None = None, mix: torch.Tensor | None = None,
               branch: str = "online") -> torch.Tensor:
        """Dense tokens ``(B, N, D)`` of image ``x_a`` or of the mix of ``x_a`` and ``x_b`` under ``mix``."""
        bb = (self.online if branch == "online" else self.target)["backbone"]
        if x_b is None:
            return bb.forward_dense(x_a)
        if getattr(bb, "mixes_tokens", False):
            return bb.forward_dense(x_a, x_b, mix)
        return bb.forward_dense(mix_pixels(x_a, x_b, mix, self.patch))

    def _decode(self, z_ctx: torch.Tensor, idx_ctx: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """Predictor over context tokens (+ their absolute positions) and queries (mask token + ``query_pos``
        ``(B, Q, 2 Dd)`` through ``decoder_pos_mlp``) -> predictions ``(B, Q, Dd)`` at the queries."""
        b = z_ctx.shape[0]
        ctx = z_ctx + _take(self.decoder_pos_embed.expand(b, -1, -1), idx_ctx)
        queries = self.mask_token + self.decoder_pos_mlp(query_pos.to(self.decoder_pos_mlp.weight.dtype))
        x = torch.cat([ctx, queries], dim=1)
        for blk in self.predictor:
            x = blk(x)
        pred = self.decoder_pred(x[:, ctx.shape[1]:])
        return F.layer_norm(pred, (pred.shape[-1],), eps=self.target_eps) if self.online_ln else pred

    @torch.no_grad()
    def _targets(self, images: torch.Tensor) -> torch.Tensor:
        """Target features ``(B, N, Dd)``: EMA backbone -> decoder_embed -> projector -> LayerNorm (no affine), fp32."""
        t = self.target["decoder_embed"](self.encode(images, branch="target"))
        for blk in self.target["projector"]:
            t = blk(t)
        return F.layer_norm(t.float(), (t.shape[-1],), eps=self.target_eps)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor | None, geometry: torch.Tensor | None,
                mix: torch.Tensor, text: torch.Tensor | None = None) -> M3IOutput:
        """One pre-training forward (module docstring).

        Args:
            view1: ``(B, 3, S, S)`` input view of each image; view2: its second view (inter-view target).
            geometry: ``(B, 6)`` view 2 relative to view 1 (:func:`repro_shared.ssl.geometry.relative_geometry`).
            mix: bool ``(B, N)``, True = image A of the sample, exactly ``count_a`` per row.
            text: ``(B, L)`` caption tokens of each image (ignored without a text tower).

        Returns:
            :class:`M3IOutput`.
        """
        x_b = view1.roll(1, 0) if self.second_image else torch.zeros_like(view1)
        tokens = self.encode(view1, x_b, mix)
        idx_a, idx_rest = split_by_mix(mix, self.count_a)
        pred_intra = target_intra = pred_inter = target_inter = None
        if self.dense:
            z = self.online["decoder_embed"](tokens)
            for blk in self.online["projector"]:
                z = blk(z)
            if self.intra:
                qpos = _take(self.identity_query_pos.expand(z.shape[0], -1, -1), idx_rest)
                pred_intra = self._decode(_take(z, idx_a), idx_a, qpos)
                target_intra = _take(self._targets(view1), idx_rest)
            if self.inter:
                qpos = relative_sincos_embedding(geometry.roll(1, 0), self.decoder_dim, self.grid_size)
                pred_inter = self._decode(_take(z, idx_rest), idx_rest, qpos)
                target_inter = self._targets(view2).roll(1, 0)
        global_a = global_b = logits_a = logits_b = None
        if self.head is not None or self.text is not None:
            bb = self.backbone
            global_a = bb.forward_global(tokens, mix)
            global_b = bb.forward_global(tokens, ~mix) if self.second_image else None
            if self.head is not None:
                logits_a = self.head(global_a)
                logits_b = self.head(global_b) if global_b is not None else None
        text_emb = self.text(text) if self.text is not None and text is not None else None
        return M3IOutput(pred_intra, target_intra, pred_inter, target_inter, global_a, global_b, logits_a, logits_b,
                         text_emb, self.logit_scale)

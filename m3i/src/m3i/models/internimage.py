"""InternImage (Wang et al., CVPR 2023) T/S/B/L/XL/H/G, the backbone M3I pre-trains (spec m3i.md section 2.3).

Structure and parameter names are the official ``classification/models/intern_image.py`` (OpenGVLab/InternImage),
so released checkpoints load key for key (``m3i-convert``)::

    patch_embed (stem): Conv3x3 s2 (3 -> C/2) - norm - GELU - Conv3x3 s2 (C/2 -> C) - norm         stride 4
    levels.i (i = 0..3, C_i = C * 2^i): depth_i x InternImageLayer, [post_norms (H/G stage 3)], [norm], downsample
    InternImageLayer (channels last):
        pre-norm (T):           x + DP(dcn(norm1(x)));            x + DP(mlp(norm2(x)))
        post-norm (S/B/L/XL/G): x + DP(g1 * norm1(dcn(x)));       x + DP(g2 * norm2(mlp(x)))   (g = layer scale)
        res-post-norm (H):      x + DP(res_post_norm1(dcn(norm1(x))));  x + DP(res_post_norm2(mlp(norm2(x))))
    head, T/S/B/L/XL:   conv_head (1x1 conv C4 -> 1.5 C4, BN, GELU) - avg pool - head (Linear)
    head, H/G (use_clip_projector): dcnv3_head_x4 (1x1 conv C4 -> 4*1024, PixelShuffle 2) + dcnv3_head_x3 (1x1 conv
        C3 -> 1024): a stride-16 1024-ch map -> clip_projector (attention pooling, 16 heads, 1024 -> 768)
        - fc_norm - head

All norms are LayerNorm(eps 1e-6) except where ``norm_layer='BN'`` is asked for (stem, downsample, DCN branch).
``with_cp`` checkpoints the activations of every block of every stage (the official ``USE_CHECKPOINT``).
"""

from __future__ import annotations

from typing import Sequence

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from .dcnv3 import CORE_OPS, DCNv3
from .layers import build_act_layer, build_norm_layer
from .pooling import AttentionPoolingBlock

__all__ = ["VARIANTS", "InternImage", "build_internimage", "internimage_param_groups"]

#: official classification configs (``classification/configs/*.yaml``) and README parameter counts
VARIANTS: dict[str, dict] = {
    "t": dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32], offset_scale=1.0, drop_path_rate=0.1),
    "s": dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40], layer_scale=1e-5, offset_scale=1.0,
              post_norm=True, drop_path_rate=0.4),
    "b": dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56], layer_scale=1e-5, offset_scale=1.0,
              post_norm=True, drop_path_rate=0.5),
    "l": dict(channels=160, depths=[5, 5, 22, 5], groups=[10, 20, 40, 80], layer_scale=1e-5, offset_scale=2.0,
              post_norm=True, drop_path_rate=0.1),
    "xl": dict(channels=192, depths=[5, 5, 24, 5], groups=[12, 24, 48, 96], layer_scale=1e-5, offset_scale=2.0,
               post_norm=True, drop_path_rate=0.2),
    "h": dict(channels=320, depths=[6, 6, 32, 6], groups=[10, 20, 40, 80], dw_kernel_size=5, layer_scale=None,
              offset_scale=1.0, post_norm=False, res_post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=[5, 11, 17, 23, 29], center_feature_scale=True, use_clip_projector=True,
              drop_path_rate=0.2),
    "g": dict(channels=512, depths=[2, 2, 48, 4], groups=[16, 32, 64, 128], dw_kernel_size=5, layer_scale=None,
              offset_scale=1.0, post_norm=True, level2_post_norm=True,
              level2_post_norm_block_ids=[5, 11, 17, 23, 29, 35, 41, 47], center_feature_scale=True,
              use_clip_projector=True, drop_path_rate=0.4),
}


class StemLayer(nn.Module):
    """Two stride-2 3x3 convs: ``(B, 3, H, W) -> (B, H/4, W/4, C)`` channels last."""

    def __init__(self, in_chans: int = 3, out_chans: int = 96, act_layer: str = "GELU", norm_layer: str = "BN"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = build_norm_layer(out_chans // 2, norm_layer, "channels_first", "channels_first")
        self.act = build_act_layer(act_layer)
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = build_norm_layer(out_chans, norm_layer, "channels_first", "channels_last")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class DownsampleLayer(nn.Module):
    """Conv3x3 s2 without bias (C -> 2C) + norm: ``(B, H, W, C) -> (B, H/2, W/2, 2C)``."""

    def __init__(self, channels: int, norm_layer: str = "LN"):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = build_norm_layer(2 * channels, norm_layer, "channels_first", "channels_last")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))


class MLPLayer(nn.Module):
    """``fc2(drop(act(fc1(x))))`` then dropout (official ``MLPLayer``)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: str = "GELU", drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = build_act_layer(act_layer)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class InternImageLayer(nn.Module):
    """One InternImage block (module docstring for the three residual forms); channels last in and out."""

    def __init__(self, channels: int, groups: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 act_layer: str = "GELU", norm_layer: str = "LN", post_norm: bool = False,
                 layer_scale: float | None = None, offset_scale: float = 1.0, with_cp: bool = False,
                 dw_kernel_size: int | None = None, res_post_norm: bool = False, center_feature_scale: bool = False,
                 remove_center: bool = False, impl: str = "auto"):
        super().__init__()
        self.channels, self.groups, self.with_cp = channels, groups, with_cp
        self.post_norm, self.res_post_norm = post_norm, res_post_norm
        self.norm1 = build_norm_layer(channels, "LN")
        self.dcn = DCNv3(channels=channels, kernel_size=3, stride=1, pad=1, dilation=1, group=groups,
                         offset_scale=offset_scale, act_layer=act_layer, norm_layer=norm_layer,
                         dw_kernel_size=dw_kernel_size, center_feature_scale=center_feature_scale,
                         remove_center=remove_center, impl=impl)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = build_norm_layer(channels, "LN")
        self.mlp = MLPLayer(channels, int(channels * mlp_ratio), act_layer=act_layer, drop=drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(channels))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(channels))
        if res_post_norm:
            self.res_post_norm1 = build_norm_layer(channels, "LN")
            self.res_post_norm2 = build_norm_layer(channels, "LN")

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        dp = self.drop_path
        if self.layer_scale:
            if self.post_norm:
                x = x + dp(self.gamma1 * self.norm1(self.dcn(x)))
                return x + dp(self.gamma2 * self.norm2(self.mlp(x)))
            x = x + dp(self.gamma1 * self.dcn(self.norm1(x)))
            return x + dp(self.gamma2 * self.mlp(self.norm2(x)))
        if self.post_norm:
            x = x + dp(self.norm1(self.dcn(x)))
            return x + dp(self.norm2(self.mlp(x)))
        if self.res_post_norm:
            x = x + dp(self.res_post_norm1(self.dcn(self.norm1(x))))
            return x + dp(self.res_post_norm2(self.mlp(self.norm2(x))))
        x = x + dp(self.dcn(self.norm1(x)))
        return x + dp(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C) -> (B, H, W, C)``; activations recomputed in the backward when ``with_cp``."""
        if self.with_cp and x.requires_grad:
            return checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


class InternImageBlock(nn.Module):
    """One stage (official ``InternImageBlock``): ``depth`` layers, the H/G extra norms after the blocks in
    ``post_norm_block_ids``, the stage norm (when ``not post_norm or center_feature_scale``) and the downsample."""

    def __init__(self, channels: int, depth: int, groups: int, downsample: bool = True, mlp_ratio: float = 4.0,
                 drop: float = 0.0, drop_path: Sequence[float] | float = 0.0, act_layer: str = "GELU",
                 norm_layer: str = "LN", post_norm: bool = False, offset_scale: float = 1.0,
                 layer_scale: float | None = None, with_cp: bool = False, dw_kernel_size: int | None = None,
                 post_norm_block_ids: Sequence[int] | None = None, res_post_norm: bool = False,
                 center_feature_scale: bool = False, remove_center: bool = False, impl: str = "auto"):
        super().__init__()
        self.channels, self.depth, self.post_norm = channels, depth, post_norm
        self.center_feature_scale = center_feature_scale
        rates = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.ModuleList(InternImageLayer(
            channels, groups, mlp_ratio, drop, rates[i], act_layer, norm_layer, post_norm, layer_scale, offset_scale,
            with_cp, dw_kernel_size, res_post_norm, center_feature_scale, remove_center, impl) for i in range(depth))
        if not post_norm or center_feature_scale:
            self.norm = build_norm_layer(channels, "LN")
        self.post_norm_block_ids = list(post_norm_block_ids) if post_norm_block_ids is not None else None
        if self.post_norm_block_ids is not None:
            self.post_norms = nn.ModuleList(build_norm_layer(channels, "LN", eps=1e-6)
                                            for _ in self.post_norm_block_ids)
        self.downsample = DownsampleLayer(channels, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor, return_wo_downsample: bool = False):
        """``(B, H, W, C)`` -> the downsampled map, and with ``return_wo_downsample`` also the map before it."""
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if self.post_norm_block_ids is not None and i in self.post_norm_block_ids:
                x = self.post_norms[self.post_norm_block_ids.index(i)](x)
        if not self.post_norm or self.center_feature_scale:
            x = self.norm(x)
        before = x
        if self.downsample is not None:
            x = self.downsample(x)
        return (x, before) if return_wo_downsample else x


class InternImage(nn.Module):
    """InternImage with every flag of the official constructor (spec m3i.md section 2.3).

    Args:
        core_op: ``"DCNv3"`` (Triton on CUDA, reference elsewhere), ``"DCNv3_pytorch"`` (reference always) or
            ``"DCNv3_triton"``; same weights.
        channels: ``C`` of stage 1; depths / groups: per stage.
        num_classes: classifier outputs (0: no head).
        mlp_ratio, drop_rate, drop_path_rate, drop_path_type (``"linear"`` | ``"uniform"``), act_layer, norm_layer.
        layer_scale: init of the per-channel residual scales (None: off).
        offset_scale: DCNv3 offset scale; post_norm: the S/B/L/XL/G residual form; cls_scale: conv_head width ratio.
        with_cp: activation checkpointing of every block.
        dw_kernel_size: DCNv3 depthwise kernel (5 for H/G); use_clip_projector: the H/G dense neck + attention
            pooling head; level2_post_norm(+_block_ids): extra norms in stage 3; res_post_norm: the H residual
            form; center_feature_scale: the H/G DCNv3 gate; remove_center: DCNv3 without its centre point.
        pretrain_embed_dim, attnpool_num_heads, clip_embed_dim: widths of the H/G head, hard-coded to 1024, 16 and
            768 in the official code (kept as defaults; the released checkpoints need them).

    Raises:
        ValueError: an unknown ``core_op`` or ``drop_path_type``, or depths and groups of different lengths.
    """

    def __init__(self, core_op: str = "DCNv3", channels: int = 64, depths: Sequence[int] = (3, 4, 18, 5),
                 groups: Sequence[int] = (3, 6, 12, 24), num_classes: int = 1000, mlp_ratio: float = 4.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.2, drop_path_type: str = "linear",
                 act_layer: str = "GELU", norm_layer: str = "LN", layer_scale: float | None = None,
                 offset_scale: float = 1.0, post_norm: bool = False, cls_scale: float = 1.5, with_cp: bool = False,
                 dw_kernel_size: int | None = None, use_clip_projector: bool = False, level2_post_norm: bool = False,
                 level2_post_norm_block_ids: Sequence[int] | None = None, res_post_norm: bool = False,
                 center_feature_scale: bool = False, remove_center: bool = False, pretrain_embed_dim: int = 1024,
                 attnpool_num_heads: int = 16, clip_embed_dim: int = 768):
        super().__init__()
        if core_op not in CORE_OPS:
            raise ValueError(f"unknown core_op {core_op!r}; known: {', '.join(CORE_OPS)}")
        if drop_path_type not in ("linear", "uniform"):
            raise ValueError(f"unknown drop_path_type {drop_path_type!r}; known: linear, uniform")
        if len(depths) != len(groups):
            raise ValueError(f"depths {list(depths)} and groups {list(groups)} must have one entry per stage")
        self.core_op, self.num_classes = core_op, num_classes
        self.num_levels, self.depths, self.channels = len(depths), list(depths), channels
        self.num_features = int(channels * 2 ** (self.num_levels - 1))
        self.post_norm, self.mlp_ratio, self.use_clip_projector = post_norm, mlp_ratio, use_clip_projector
        self.level2_post_norm_block_ids = level2_post_norm_block_ids
        self.patch_embed = StemLayer(3, channels, act_layer, norm_layer)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        if drop_path_type == "uniform":
            dpr = [drop_path_rate] * len(dpr)
        self.levels = nn.ModuleList()
        for i in range(self.num_levels):
            self.levels.append(InternImageBlock(
                channels=int(channels * 2 ** i), depth=depths[i], groups=groups[i], downsample=i < self.num_levels - 1,
                mlp_ratio=mlp_ratio, drop=drop_rate, drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])],
                act_layer=act_layer, norm_layer=norm_layer, post_norm=post_norm, offset_scale=offset_scale,
                layer_scale=layer_scale, with_cp=with_cp, dw_kernel_size=dw_kernel_size,
                post_norm_block_ids=level2_post_norm_block_ids if level2_post_norm and i == 2 else None,
                res_post_norm=res_post_norm, center_feature_scale=center_feature_scale, remove_center=remove_center,
                impl=CORE_OPS[core_op]))
        if not use_clip_projector:
            width = int(self.num_features * cls_scale)
            self.conv_head = nn.Sequential(nn.Conv2d(self.num_features, width, kernel_size=1, bias=False),
                                           build_norm_layer(width, "BN", "channels_first", "channels_first"),
                                           build_act_layer(act_layer))
            self.head = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
            self.dense_dim = None
            self.global_dim = width
        else:
            self.dcnv3_head_x4 = nn.Sequential(nn.Conv2d(self.num_features, pretrain_embed_dim * 4, kernel_size=1),
                                               nn.PixelShuffle(2))
            self.dcnv3_head_x3 = nn.Conv2d(self.num_features // 2, pretrain_embed_dim, kernel_size=1)
            self.clip_projector = AttentionPoolingBlock(pretrain_embed_dim, attnpool_num_heads, qkv_bias=True,
                                                        norm_layer=norm_layer, out_dim=clip_embed_dim)
            self.fc_norm = build_norm_layer(clip_embed_dim, norm_layer, eps=1e-6)
            self.head = nn.Linear(clip_embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            self.dense_dim = pretrain_embed_dim
            self.global_dim = clip_embed_dim
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_layers = len(depths)
        self.apply(self._init_weights)
        for m in self.modules():
            if isinstance(m, DCNv3):
                m._reset_parameters()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Official init: Linear trunc-normal(0.02) with bias 0, LayerNorm (1, 0); convs keep PyTorch's default.
        Skipped for modules built on the meta device (shape-only models: parameter counts, key layouts)."""
        if any(p.is_meta for p in m.parameters(recurse=False)):
            return
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def lr_decay_keywords(self, decay_ratio: float = 0.87) -> dict[str, float]:
        """Official ``lr_decay_keywards``: ``{name fragment: lr ratio}``. Blocks are counted from the last block of
        the last stage (ratio 1) backwards, block k from the top gets ``decay_ratio**k``; the stem gets the ratio
        of the first block, each stage's downsample and norm that of the next stage's first block. Names that
        match no fragment (heads, the last stage's norm, post_norms) keep ratio 1."""
        ratios: dict[str, float] = {}
        k = 0
        for level in reversed(range(self.num_levels)):
            for j in reversed(range(self.depths[level])):
                ratios[f"levels.{level}.blocks.{j}."] = decay_ratio ** k
                k += 1
        ratios["patch_embed"] = ratios["levels.0.blocks.0."]
        for level in range(self.num_levels - 1):
            ratios[f"levels.{level}.downsample"] = ratios[f"levels.{level + 1}.blocks.0."]
            ratios[f"levels.{level}.norm"] = ratios[f"levels.{level + 1}.blocks.0."]
        return ratios

    lr_decay_keywards = lr_decay_keywords  # the official spelling

    def forward_features_seq_out(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` -> the four stage outputs before their downsample, channels last ``(B, H/s, W/s, C_i)``."""
        x = self.pos_drop(self.patch_embed(x))
        outs = []
        for level in self.levels:
            x, before = level(x, return_wo_downsample=True)
            outs.append(before)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """T/S/B/L/XL: ``(B, 3, H, W) -> (B, 1.5 C4)`` (conv_head, BN, GELU, average pool)."""
        x = self.pos_drop(self.patch_embed(x))
        for level in self.levels:
            x = level(x)
        return torch.flatten(self.avgpool(self.conv_head(x.permute(0, 3, 1, 2))), 1)

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """H/G dense neck: ``(B, 3, H, W) -> (B, (H/16)(W/16), pretrain_embed_dim)`` tokens, row-major: the stride-32
        map through ``dcnv3_head_x4`` (1x1 conv, PixelShuffle 2) plus the stride-16 map through ``dcnv3_head_x3``.

        Raises:
            RuntimeError: the model was built without ``use_clip_projector``.
        """
        if not self.use_clip_projector:
            raise RuntimeError("forward_dense needs the H/G dense neck: build the model with use_clip_projector=True")
        _, _, x3, x4 = self.forward_features_seq_out(x)
        y = self.dcnv3_head_x4(x4.permute(0, 3, 1, 2)) + self.dcnv3_head_x3(x3.permute(0, 3, 1, 2))
        return y.flatten(2).transpose(1, 2).contiguous()

    def forward_global(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``clip_projector`` + ``fc_norm`` of dense tokens ``(B, N, pretrain_embed_dim)``, optionally restricted to
        the tokens where ``keep`` ``(B, N)`` is True -> ``(B, clip_embed_dim)``."""
        return self.fc_norm(self.clip_projector(tokens, keep))

    def forward_clip_projector(self, x: torch.Tensor) -> torch.Tensor:
        """H/G: ``(B, 3, H, W) -> (B, clip_embed_dim)`` (official ``forward_clip_projector``)."""
        return self.forward_global(self.forward_dense(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, num_classes)`` logits (or features when ``num_classes == 0``)."""
        feats = self.forward_clip_projector(x) if self.use_clip_projector else self.forward_features(x)
        return self.head(feats)


def build_internimage(variant: str, **overrides) -> InternImage:
    """An :class:`InternImage` of an official size (:data:`VARIANTS`: t, s, b, l, xl, h, g), arguments overridden.

    Raises:
        ValueError: an unknown variant (lists the known ones).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown InternImage variant {variant!r}; known: {', '.join(VARIANTS)}")
    return InternImage(**{**VARIANTS[variant], **overrides})


def internimage_param_groups(model: nn.Module, weight_decay: float, base_lr: float, *,
                             layer_decay: float | None = None, dcn_lr_mul: float | None = None,
                             prefix: str = "") -> list[dict]:
    """Optimizer groups of the official ``set_weight_decay_and_lr``, merged by equal (lr, weight decay).

    No weight decay for 1-D tensors and ``*.bias``. With ``layer_decay``, the lr of a parameter is ``base_lr`` times
    the ratio of the first :meth:`InternImage.lr_decay_keywords` fragment its name contains (1 if none), and
    names containing ``offset``, ``attention_weights`` or ``center_feature_scale_proj`` are further scaled by
    ``dcn_lr_mul`` (official: only when layer decay is on; the DCNv3 ``mask`` Linear is not scaled).

    Args:
        model: the InternImage, or a module holding it at ``prefix`` (e.g. ``"backbone."``).
        prefix: stripped before matching (names outside it get ratio 1).

    Returns:
        ``[{"params", "lr", "weight_decay", "lr_scale"}, ...]``; ``lr_scale = lr / base_lr`` for schedulers that
        scale per group.
    """
    owner = model
    for part in [p for p in prefix.split(".") if p]:
        owner = getattr(owner, part)
    ratios = owner.lr_decay_keywords(layer_decay) if layer_decay is not None else {}
    merged: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if (p.ndim == 1 or name.endswith(".bias")) else weight_decay
        scale = 1.0
        if layer_decay is not None:
            short = name[len(prefix):] if name.startswith(prefix) else None
            if short is not None:
                scale = next((r for frag, r in ratios.items() if frag in short), 1.0)
            if dcn_lr_mul is not None and any(k in name for k in ("offset", "attention_weights",
                                                                  "center_feature_scale_proj")):
                scale *= dcn_lr_mul
        group = merged.setdefault((scale, wd), {"params": [], "lr": base_lr * scale, "weight_decay": wd,
                                                "lr_scale": scale})
        group["params"].append(p)
    return list(merged.values())

"""The official InternImage state-dict layout, written out by hand from the official module structure
(``classification/models/intern_image.py`` and ``ops_dcnv3/modules/dcnv3.py``), independently of
``m3i.models``: key -> shape. The tests compare our modules and the converter against it."""

from __future__ import annotations

LN = ("weight", "bias")
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _norm(out: dict, prefix: str, dim: int, kind: str, index: int) -> None:
    names = LN if kind == "LN" else BN
    for n in names:
        out[f"{prefix}.{index}.{n}"] = () if n == "num_batches_tracked" else (dim,)


def official_layout(channels, depths, groups, *, num_classes=1000, layer_scale=False, post_norm=False,
                    res_post_norm=False, center_feature_scale=False, level2_ids=(), use_clip_projector=False,
                    dw_kernel_size=3, norm_layer="LN", cls_scale=1.5, pretrain_dim=1024, clip_dim=768) -> dict:
    """``{key: shape}`` of an official InternImage with these settings (k = 3, no remove_center)."""
    sd: dict[str, tuple] = {}
    c = channels
    sd["patch_embed.conv1.weight"], sd["patch_embed.conv1.bias"] = (c // 2, 3, 3, 3), (c // 2,)
    # stem norms: LN sits behind a permute (index 1); BN comes first (index 0)
    _norm(sd, "patch_embed.norm1", c // 2, norm_layer, 1 if norm_layer == "LN" else 0)
    sd["patch_embed.conv2.weight"], sd["patch_embed.conv2.bias"] = (c, c // 2, 3, 3), (c,)
    _norm(sd, "patch_embed.norm2", c, norm_layer, 1 if norm_layer == "LN" else 0)
    for i, (depth, g) in enumerate(zip(depths, groups)):
        ci = c * 2 ** i
        for j in range(depth):
            b = f"levels.{i}.blocks.{j}"
            if layer_scale:
                sd[f"{b}.gamma1"], sd[f"{b}.gamma2"] = (ci,), (ci,)
            _norm(sd, f"{b}.norm1", ci, "LN", 0)
            sd[f"{b}.dcn.dw_conv.0.weight"] = (ci, 1, dw_kernel_size, dw_kernel_size)
            sd[f"{b}.dcn.dw_conv.0.bias"] = (ci,)
            _norm(sd, f"{b}.dcn.dw_conv.1", ci, norm_layer, 1 if norm_layer == "LN" else 0)
            sd[f"{b}.dcn.offset.weight"], sd[f"{b}.dcn.offset.bias"] = (g * 18, ci), (g * 18,)
            sd[f"{b}.dcn.mask.weight"], sd[f"{b}.dcn.mask.bias"] = (g * 9, ci), (g * 9,)
            for proj in ("input_proj", "output_proj"):
                sd[f"{b}.dcn.{proj}.weight"], sd[f"{b}.dcn.{proj}.bias"] = (ci, ci), (ci,)
            if center_feature_scale:
                sd[f"{b}.dcn.center_feature_scale_proj_weight"] = (g, ci)
                sd[f"{b}.dcn.center_feature_scale_proj_bias"] = (g,)
            _norm(sd, f"{b}.norm2", ci, "LN", 0)
            sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"] = (4 * ci, ci), (4 * ci,)
            sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"] = (ci, 4 * ci), (ci,)
            if res_post_norm:
                _norm(sd, f"{b}.res_post_norm1", ci, "LN", 0)
                _norm(sd, f"{b}.res_post_norm2", ci, "LN", 0)
        if not post_norm or center_feature_scale:
            _norm(sd, f"levels.{i}.norm", ci, "LN", 0)
        if i == 2:
            for k in range(len(level2_ids)):
                _norm(sd, f"levels.2.post_norms.{k}", ci, "LN", 0)
        if i < len(depths) - 1:
            sd[f"levels.{i}.downsample.conv.weight"] = (2 * ci, ci, 3, 3)
            _norm(sd, f"levels.{i}.downsample.norm", 2 * ci, norm_layer, 1 if norm_layer == "LN" else 0)
    c4 = c * 2 ** (len(depths) - 1)
    if use_clip_projector:
        sd["dcnv3_head_x4.0.weight"], sd["dcnv3_head_x4.0.bias"] = (4 * pretrain_dim, c4, 1, 1), (4 * pretrain_dim,)
        sd["dcnv3_head_x3.weight"], sd["dcnv3_head_x3.bias"] = (pretrain_dim, c4 // 2, 1, 1), (pretrain_dim,)
        for n in ("q", "k", "v"):
            _norm(sd, f"clip_projector.norm1_{n}", pretrain_dim, "LN", 0)
        for n in ("q", "k", "v"):
            sd[f"clip_projector.cross_dcn.{n}_bias"] = (pretrain_dim,)
            sd[f"clip_projector.cross_dcn.{n}.weight"] = (pretrain_dim, pretrain_dim)
        sd["clip_projector.cross_dcn.proj.weight"] = (clip_dim, pretrain_dim)
        sd["clip_projector.cross_dcn.proj.bias"] = (clip_dim,)
        _norm(sd, "fc_norm", clip_dim, "LN", 0)
        head_in = clip_dim
    else:
        w = int(c4 * cls_scale)
        sd["conv_head.0.weight"] = (w, c4, 1, 1)
        _norm(sd, "conv_head.1", w, "BN", 0)
        head_in = w
    if num_classes:
        sd["head.weight"], sd["head.bias"] = (num_classes, head_in), (num_classes,)
    return sd


#: the released variants in the layout's terms (official classification configs)
OFFICIAL = {
    "t": dict(channels=64, depths=[4, 4, 18, 4], groups=[4, 8, 16, 32]),
    "s": dict(channels=80, depths=[4, 4, 21, 4], groups=[5, 10, 20, 40], layer_scale=True, post_norm=True),
    "b": dict(channels=112, depths=[4, 4, 21, 4], groups=[7, 14, 28, 56], layer_scale=True, post_norm=True),
    "l": dict(channels=160, depths=[5, 5, 22, 5], groups=[10, 20, 40, 80], layer_scale=True, post_norm=True),
    "xl": dict(channels=192, depths=[5, 5, 24, 5], groups=[12, 24, 48, 96], layer_scale=True, post_norm=True),
    "h": dict(channels=320, depths=[6, 6, 32, 6], groups=[10, 20, 40, 80], res_post_norm=True,
              center_feature_scale=True, level2_ids=[5, 11, 17, 23, 29], use_clip_projector=True, dw_kernel_size=5),
    "g": dict(channels=512, depths=[2, 2, 48, 4], groups=[16, 32, 64, 128], post_norm=True, center_feature_scale=True,
              level2_ids=[5, 11, 17, 23, 29, 35, 41, 47], use_clip_projector=True, dw_kernel_size=5),
}

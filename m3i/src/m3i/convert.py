"""Released InternImage checkpoints (the M3I-pre-trained H / G and the T..XL classifiers) -> our modules.

Official files (``internimage_h_jointto22k_384.pth``, ``internimage_h_22kto1k_640.pth``, ... on the HF repo
``OpenGVLab/InternImage``) hold ``{"model": state_dict, ...}`` with exactly our key names; the transformers
wrappers (``OpenGVLab/internimage_*`` safetensors) prefix every key with ``model.``; DDP saves add ``module.``.
The converter

1. reads the file safely (``.pth`` with ``torch.load(weights_only=True)`` through
   :func:`repro_shared.checkpoint.load_weights_file`; ``.safetensors`` with ``safetensors``);
2. strips those prefixes and reads the architecture back from the tensors (:func:`infer_internimage_config`:
   widths, depths, groups, depthwise kernel, every flag, the head widths of H/G and the number of classes);
3. checks the H/G head constants that the official code hard-codes (``pretrain_embed_dim`` 1024, 16 pooling
   heads of 64 channels, ``clip_embed_dim`` 768) when a variant is named, and reports missing / unexpected /
   shape-mismatched keys against our model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from repro_shared.checkpoint import CheckpointError, LoadReport, load_state_dict_remapped, load_weights_file

from .models.internimage import VARIANTS, InternImage, build_internimage

__all__ = ["PREFIXES", "read_state_dict", "infer_internimage_config", "convert_internimage",
           "load_internimage_weights"]

#: key prefixes of the known containers (DDP, the transformers wrapper, a module holding the backbone)
PREFIXES = ("module.", "model.", "backbone.")


def read_state_dict(path: str | Path, *, trust: bool = False, branch: str = "online") -> dict[str, torch.Tensor]:
    """The flat tensor dict of a ``.pth`` / ``.pt`` (weights-only) or ``.safetensors`` file, prefixes stripped.

    An ``m3i-pretrain`` checkpoint holds the whole M3I model; only its backbone is returned: ``online.backbone.*``
    (``branch="online"``) or the EMA copy ``target.backbone.*`` (``branch="target"``).

    Raises:
        repro_shared.checkpoint.CheckpointError: missing / unreadable file; ``UntrustedCheckpointError`` for a
            pickle that weights-only loading refuses (opt in with ``trust=True`` only for files you trust).
        ValueError: an unknown ``branch``.
    """
    if branch not in ("online", "target"):
        raise ValueError(f"unknown branch {branch!r}; known: online, target")
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"weights file {path} does not exist")
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = load_weights_file(path, trust=trust)
    ours = f"{branch}.backbone."
    if any(k.startswith("online.backbone.") for k in sd):  # an m3i-pretrain checkpoint
        return {k[len(ours):]: v for k, v in sd.items() if k.startswith(ours)}
    out = {}
    for k, v in sd.items():
        for pre in PREFIXES:
            if k.startswith(pre):
                k = k[len(pre):]
                break
        out[k] = v
    return out


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_internimage_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture read from a state dict with the official key names: the InternImage constructor arguments
    it determines (``level2_post_norm_block_ids`` excepted: only their count, ``num_level2_post_norms``, is stored).

    Raises:
        CheckpointError: the dict is not an InternImage state dict (no ``patch_embed.conv1.weight``).
    """
    keys = list(sd)
    if "patch_embed.conv1.weight" not in sd:
        raise CheckpointError("not an InternImage state dict: 'patch_embed.conv1.weight' is missing "
                              f"(first keys: {keys[:5]})")
    channels = 2 * sd["patch_embed.conv1.weight"].shape[0]
    levels = _count(keys, r"levels\.(\d+)\.")
    depths = [_count(keys, rf"levels\.{i}\.blocks\.(\d+)\.") for i in range(levels)]
    groups = [sd[f"levels.{i}.blocks.0.dcn.mask.weight"].shape[0] // 9 for i in range(levels)]
    b0 = "levels.0.blocks.0."
    post_ids = sorted({int(m.group(1)) for k in keys if (m := re.match(r"levels\.2\.post_norms\.(\d+)\.", k))})
    cfg: dict[str, Any] = dict(
        channels=channels, depths=depths, groups=groups,
        dw_kernel_size=sd[b0 + "dcn.dw_conv.0.weight"].shape[-1],
        layer_scale=1e-5 if b0 + "gamma1" in sd else None,
        res_post_norm=b0 + "res_post_norm1.0.weight" in sd,
        center_feature_scale=b0 + "dcn.center_feature_scale_proj_weight" in sd,
        use_clip_projector="clip_projector.cross_dcn.q.weight" in sd,
        level2_post_norm=bool(post_ids),
        norm_layer="LN" if "patch_embed.norm1.1.weight" in sd else "BN",
    )
    # the stage norm exists iff (not post_norm or center_feature_scale): absent -> post-norm (S/B/L/XL); present with
    # the gate -> post-norm unless the blocks are res-post-norm (G vs H). A pre-norm model with the gate and no
    # res-post-norm (none was released) would read as post-norm.
    has_stage_norm = "levels.0.norm.0.weight" in sd
    cfg["post_norm"] = not has_stage_norm or (cfg["center_feature_scale"] and not cfg["res_post_norm"])
    cfg["num_level2_post_norms"] = len(post_ids)  # their block ids are not stored: they come from the variant
    if cfg["use_clip_projector"]:
        cfg["pretrain_embed_dim"] = sd["dcnv3_head_x3.weight"].shape[0]
        cfg["clip_embed_dim"] = sd["clip_projector.cross_dcn.proj.weight"].shape[0]
    head = sd.get("head.weight")
    cfg["num_classes"] = int(head.shape[0]) if head is not None else 0
    return cfg


def _check_variant(cfg: Mapping[str, Any], variant: str) -> list[str]:
    """Differences between an inferred config and the official one of ``variant`` (empty: it fits)."""
    want = VARIANTS[variant]
    diffs = []
    for key in ("channels", "depths", "groups", "post_norm", "res_post_norm", "center_feature_scale",
                "use_clip_projector", "level2_post_norm"):
        w, g = want.get(key, False), cfg.get(key, False)
        if (list(w) if isinstance(w, list) else w) != (list(g) if isinstance(g, list) else g):
            diffs.append(f"{key}: file {g} vs {variant} {w}")
    dw = want.get("dw_kernel_size") or 3
    if cfg["dw_kernel_size"] != dw:
        diffs.append(f"dw_kernel_size: file {cfg['dw_kernel_size']} vs {variant} {dw}")
    if (want.get("layer_scale") is not None) != (cfg["layer_scale"] is not None):
        diffs.append(f"layer_scale: file {cfg['layer_scale']} vs {variant} {want.get('layer_scale')}")
    if want.get("level2_post_norm") and cfg["num_level2_post_norms"] != len(want["level2_post_norm_block_ids"]):
        diffs.append(f"level2 post norms: file {cfg['num_level2_post_norms']} vs {variant} "
                     f"{len(want['level2_post_norm_block_ids'])}")
    if want.get("use_clip_projector"):
        if cfg.get("pretrain_embed_dim") != 1024 or cfg.get("clip_embed_dim") != 768:
            diffs.append(f"H/G head widths: file pretrain_embed_dim={cfg.get('pretrain_embed_dim')}, "
                         f"clip_embed_dim={cfg.get('clip_embed_dim')}; the official model has 1024 and 768")
    return diffs


def convert_internimage(sd: Mapping[str, torch.Tensor], variant: str | None, *, num_classes: int | None = None,
                        strict: bool = True, **model_kwargs: Any) -> tuple[InternImage, LoadReport]:
    """Build our InternImage for an official state dict and load it.

    Args:
        sd: official keys (prefixes already stripped, e.g. by :func:`read_state_dict`).
        variant: ``t``/``s``/``b``/``l``/``xl``/``h``/``g`` (the file's architecture must be that variant's,
            head constants included), or None to build exactly the architecture read from the file
            (:func:`infer_internimage_config`; pass ``level2_post_norm_block_ids`` when it has level-2 post norms).
        num_classes: default the file's head size (0 when the file has no head); another value drops the head.
        strict: raise when a key is missing, unexpected or of the wrong shape; otherwise load what fits.
        model_kwargs: further constructor overrides (``with_cp``, ``core_op``, ``drop_path_rate``, ...).

    Returns:
        ``(model, report)``.

    Raises:
        ValueError: an unknown variant, or a file whose architecture is not that variant (names the differences).
        CheckpointError: with ``strict``, keys that do not fit (the report is in the message).
    """
    cfg = infer_internimage_config(sd)
    n_cls = cfg["num_classes"] if num_classes is None else num_classes
    if variant is None:
        arch = {k: v for k, v in cfg.items() if k not in ("num_classes", "num_level2_post_norms")}
        model = InternImage(**{**arch, "num_classes": n_cls, **model_kwargs})
    else:
        if variant not in VARIANTS:
            raise ValueError(f"unknown InternImage variant {variant!r}; known: {', '.join(VARIANTS)}")
        diffs = _check_variant(cfg, variant)
        if diffs:
            raise ValueError(f"the weights are not an InternImage-{variant.upper()}: " + "; ".join(diffs))
        model = build_internimage(variant, num_classes=n_cls, **model_kwargs)
    same_head = n_cls == cfg["num_classes"]
    report = load_state_dict_remapped(model, sd, drop=() if same_head else (r"^head\.",))
    if not same_head:
        report.missing = [k for k in report.missing if not k.startswith("head.")]
    if strict and not report.ok:
        raise CheckpointError(f"InternImage weights do not fit:\n{report}")
    return model, report


def load_internimage_weights(model: torch.nn.Module, path: str | Path, *, trust: bool = False,
                             prefix: str = "", skip_head: bool = True, branch: str = "online") -> LoadReport:
    """Load an official / converted InternImage file into ``model`` (the InternImage itself, or a module that
    holds it at ``prefix``); the classifier ``head`` is skipped unless ``skip_head=False``. Returns the report
    (missing keys outside the head are the caller's to judge)."""
    sd = read_state_dict(path, trust=trust, branch=branch)
    if skip_head:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    return load_state_dict_remapped(model, {prefix + k: v for k, v in sd.items()})

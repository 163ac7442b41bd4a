"""Official checkpoints -> our modules, key by key (spec §2, §11).

Our parameter names are the official ones, so conversion is: unwrap the container, split the ADDP
checkpoint into its three modules, drop the tensors that no forward uses (listed by name below), and
load strictly. Anything else that is missing, unexpected or of the wrong shape is an error that lists
the keys (never a silent ``strict=False``, which in the official code leaves a random tokenizer or
teacher without a word).

Files: ``addp-vit-{base,large}-16.pth`` (``{"model": ...}``, possibly with ``vqgan.*`` and
``token_predictor.*`` copies), ``mage-vit{b,l}-1600.pth`` (``{"model": ...}`` with a ``vqgan.*`` copy),
``vqgan_jax_strongaug.ckpt`` (``{"state_dict": ...}``, possibly with ``loss.*`` training weights).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn

from repro_shared.checkpoint import CheckpointError, LoadReport, load_state_dict_remapped

__all__ = ["ADDP_UNUSED", "MAGE_UNUSED", "VQGAN_IGNORED", "split_addp_state_dict", "mage_state_dict",
           "vqgan_state_dict", "load_strict", "resize_pos_embed", "finetune_backbone_state_dict"]

# tensors of the official ADDP model that no forward reads (spec §2.3 "Unused in every forward")
ADDP_UNUSED = ("decoder_pos_embed", "pos_token_embed", "pos_mask_embed", "decoder_pred.weight", "decoder_pred.bias")
# tensors of the official MAGE model that sample_tokens / pre-training never read (spec §2.2)
MAGE_UNUSED = ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "mask_token",
               "decoder_pos_embed", "decoder_pred.weight", "decoder_pred.bias")
# VQGAN training-checkpoint entries that are not part of the tokenizer (perceptual loss, discriminator)
VQGAN_IGNORED = re.compile(r"^loss\.")


def _unwrap(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` prefix that a DDP-wrapped save leaves."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def split_addp_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Split an official ADDP state dict into ``{"model", "vqgan", "token_predictor"}`` (ours) and the
    ``"dropped"`` keys: the unused tensors (``ADDP_UNUSED``, ``MAGE_UNUSED``) and the teacher's second
    reference to the tokenizer (``token_predictor.vqgan.*``), which must equal ``vqgan.*``.

    Raises:
        CheckpointError: if ``token_predictor.vqgan.*`` differs from ``vqgan.*``.
    """
    sd = _unwrap(sd)
    parts: dict[str, dict] = {"model": {}, "vqgan": {}, "token_predictor": {}, "dropped": {}}
    for k, v in sd.items():
        if k.startswith("token_predictor.vqgan."):
            parts["dropped"][k] = v
        elif k.startswith("vqgan."):
            parts["vqgan"][k[len("vqgan."):]] = v
        elif k.startswith("token_predictor."):
            parts["token_predictor"][k[len("token_predictor."):]] = v
        elif k in ADDP_UNUSED:
            parts["dropped"][k] = v
        else:
            parts["model"][k] = v
    for k, v in parts["dropped"].items():
        if k.startswith("token_predictor.vqgan."):
            own = parts["vqgan"].get(k[len("token_predictor.vqgan."):])
            if own is not None and (own.shape != v.shape or (not v.is_meta and not torch.equal(own, v))):
                raise CheckpointError(f"{k} differs from its tokenizer copy vqgan.{k[len('token_predictor.vqgan.'):]}")
    tp = parts["token_predictor"]
    parts["token_predictor"] = mage_state_dict(tp) if tp else {}
    parts["vqgan"] = vqgan_state_dict(parts["vqgan"]) if parts["vqgan"] else {}
    return parts


def mage_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official MAGE state dict without its tokenizer copy (``vqgan.*``) and unused tensors."""
    sd = _unwrap(sd)
    return {k: v for k, v in sd.items() if not k.startswith("vqgan.") and k not in MAGE_UNUSED}


def vqgan_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official VQGAN state dict without its training-loss entries (``loss.*``)."""
    sd = _unwrap(sd)
    return {k: v for k, v in sd.items() if not VQGAN_IGNORED.search(k)}


def load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str, source: str = "") -> LoadReport:
    """Load ``sd`` into ``module`` only if every key matches in name and shape.

    Raises:
        CheckpointError: listing the missing, unexpected and shape-mismatched keys (the module is unchanged).
    """
    try:
        return load_state_dict_remapped(module, sd, strict=True)
    except CheckpointError as e:
        raise CheckpointError(f"{what} weights{(' from ' + source) if source else ''} do not fit the configured "
                              f"model ({type(module).__name__}); check the variant / preset in the config.\n{e}") from e


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubic resize of a (1, prefix + g*g, D) position table to ``new_grid`` x ``new_grid`` (official
    ``interpolate_pos_embed``: bicubic, ``align_corners=False``, no antialiasing)."""
    from timm.layers import resample_abs_pos_embed

    old = int(round((pos_embed.shape[1] - num_prefix_tokens) ** 0.5))
    if old == new_grid:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, [new_grid, new_grid], [old, old], num_prefix_tokens=num_prefix_tokens,
                                  interpolation="bicubic", antialias=False)


def finetune_backbone_state_dict(addp_sd: Mapping[str, torch.Tensor], *, keep_tokenizer_norm: bool = False,
                                 new_grid: int | None = None) -> dict[str, torch.Tensor]:
    """The encoder part of an ADDP state dict (ours or official) in timm ``VisionTransformer`` names.

    Keeps ``cls_token``, ``pos_embed`` (resized to ``new_grid`` when given), ``patch_embed.*``,
    ``blocks.*``; ``tokenizer_norm.*`` becomes ``norm_pre.*`` with ``keep_tokenizer_norm`` and is
    dropped otherwise (the official fine-tuning drops it silently, spec §2.4). The final ``norm`` is
    dropped: fine-tuning pools with a new ``fc_norm``.
    """
    sd = _unwrap(addp_sd)
    out = {}
    for k, v in sd.items():
        if k in ("cls_token", "pos_embed") or k.startswith(("patch_embed.", "blocks.")):
            out[k] = v
        elif k.startswith("tokenizer_norm.") and keep_tokenizer_norm:
            out["norm_pre." + k[len("tokenizer_norm."):]] = v
    if new_grid is not None and "pos_embed" in out:
        out["pos_embed"] = resize_pos_embed(out["pos_embed"], new_grid)
    return out

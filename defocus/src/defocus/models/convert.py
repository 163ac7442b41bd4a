"""Official De-focus Mamba checkpoints -> this package's state-dict names.

Our names equal the official classification names (spec §2.2), so the map is short:
* checkpoint containers ``{"model": ..., "model_ema": ...}`` -> pick one (the 22k->1k tool uses EMA);
* ``module.`` (DDP) and ``backbone.`` (mmdet detector) prefixes are stripped;
* detection renames ``patch_embed.proj`` to ``patch_embed.projection`` (tools/convert_cls_to_det.py),
  mapped back here;
* IN-22k heads (21,841 classes) can be sliced to IN-1k with ``map22kto1k`` indices (tools/convert_22k_to_1k.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from repro_shared import checkpoint

__all__ = ["OFFICIAL_RENAME", "convert_official_state_dict", "slice_22k_heads_to_1k", "load_official"]

OFFICIAL_STRIP_PREFIXES = ("module.", "backbone.")
OFFICIAL_RENAME = [(r"^patch_embed\.projection\.", "patch_embed.proj.")]


def _pick(obj: Mapping, use_ema: bool) -> Mapping[str, Tensor]:
    key = "model_ema" if use_ema else "model"
    if key in obj and isinstance(obj[key], Mapping):
        return obj[key]
    if use_ema:
        raise KeyError("use_ema=True but the checkpoint has no 'model_ema' entry")
    return checkpoint.extract_state_dict(obj)


def convert_official_state_dict(obj: Mapping, use_ema: bool = False) -> dict[str, Tensor]:
    """Official checkpoint (container or flat state dict) -> our state dict."""
    sd = _pick(obj, use_ema)
    return checkpoint.remap_keys(sd, strip_prefixes=OFFICIAL_STRIP_PREFIXES, rename=OFFICIAL_RENAME)


def slice_22k_heads_to_1k(state_dict: dict[str, Tensor], indices: Sequence[int]) -> dict[str, Tensor]:
    """Keep the 1,000 IN-1k rows of the final layers of both MLP heads (``head.2``, ``head2.2``)."""
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    out = dict(state_dict)
    for head in ("head.2", "head2.2"):
        for p in ("weight", "bias"):
            key = f"{head}.{p}"
            if key in out:
                out[key] = out[key][idx]
    return out


def load_official(model: nn.Module, path: str | Path, use_ema: bool = False, strict: bool = True):
    """Load an official ``.pth`` into ``model``; returns repro_shared's LoadReport."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=False)
    sd = convert_official_state_dict(obj, use_ema=use_ema)
    return checkpoint.load_state_dict_remapped(model, sd, strict=strict)

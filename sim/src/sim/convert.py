"""Released SiameseIM weights -> our models, a timm ViT, detectron2's ViTDet init format.

The official pre-training state dict (``sim_base_1600ep_pretrain.pth``, ``{"model": ...}``) uses the same names
as :class:`sim.models.SiameseIM` (spec sim.md section 5), and its encoder keys (``patch_embed.*``,
``cls_token``, ``pos_embed``, ``blocks.*``) are timm ``VisionTransformer`` names; the target encoder is the
same with an ``mm_`` prefix (its ``pos_embed`` is the online one). The fine-tuned checkpoint
(``sim_base_1600ep_finetune.pth``) is a timm-named ViT with ``fc_norm`` and ``head``. Converting is therefore
a key filter plus checks: the position table must be the analytic row-first sin-cos table (a column-first
MAE table would silently break the geometry), and every key must be accounted for.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from repro_shared import checkpoint
from repro_shared.ssl.geometry import absolute_sincos_embedding

__all__ = ["ENCODER_PREFIXES", "read_weights", "encoder_state_dict", "check_pos_embed", "load_encoder_weights", "misfit_message",
           "to_detectron2", "save_weights"]

ENCODER_PREFIXES = ("patch_embed.", "cls_token", "pos_embed", "blocks.")


def read_weights(path: str | os.PathLike, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensor dict of an official file (``{"model", "optimizer", "epoch", "scaler", "args"}``: ``args`` is an
    ``argparse.Namespace``, allowed by name) or of one of our checkpoints, loaded weights-only.

    Raises:
        repro_shared.checkpoint.CheckpointError / UntrustedCheckpointError: unreadable file, or a pickled type
            other than ``argparse.Namespace`` without ``trust``.
    """
    return checkpoint.load_weights_file(path, trust=trust, safe_globals=[argparse.Namespace])


def encoder_state_dict(state: Mapping[str, torch.Tensor], *, target: bool = False,
                       keep_head: bool = True) -> dict[str, torch.Tensor]:
    """timm ViT keys of the online encoder (``target=True``: the ``mm_`` momentum encoder, whose ``pos_embed`` is
    the shared fixed table). A classifier state dict keeps ``fc_norm.*`` / ``head.*`` when ``keep_head``.

    Raises:
        repro_shared.checkpoint.CheckpointError: ``target=True`` on a state dict without ``mm_`` keys.
    """
    out: dict[str, torch.Tensor] = {}
    if target:
        if not any(k.startswith("mm_blocks.") for k in state):
            raise checkpoint.CheckpointError("target=True, but the weights hold no momentum encoder (mm_blocks.*); "
                                             "convert the online encoder (convert.target=false)")
        for k, v in state.items():
            if k.startswith("mm_") and k[3:].startswith(("patch_embed.", "cls_token", "blocks.")):
                out[k[3:]] = v
        out["pos_embed"] = state["pos_embed"]
        return out
    heads = ("fc_norm.", "head.") if keep_head else ()
    return {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES + heads)}


def check_pos_embed(pos_embed: torch.Tensor, *, atol: float = 1e-5) -> float:
    """Max difference between a ``(1, 1 + G*G, C)`` position table and the analytic row-first sin-cos table.

    Raises:
        ValueError: the difference exceeds ``atol`` (the message says whether the table is column-first).
    """
    n, c = pos_embed.shape[-2:]
    g = int(round((n - 1) ** 0.5))
    ref = absolute_sincos_embedding(c, g)
    diff = float((pos_embed.reshape(n, c).float() - ref).abs().max())
    if diff > atol:
        grid = ref[1:].reshape(g, g, c)
        col_first = torch.cat([ref[:1], torch.cat([grid[..., c // 2:], grid[..., :c // 2]], -1).reshape(-1, c)])
        hint = (" It is the column-first table of MAE/timm's helper: the relative geometry would not match it."
                if float((pos_embed.reshape(n, c).float() - col_first).abs().max()) <= atol else "")
        raise ValueError(f"pos_embed differs from the row-first sin-cos table by {diff:.3g}.{hint}")
    return diff


def load_encoder_weights(model: nn.Module, path: str | os.PathLike, *, trust: bool = False,
                         target: bool = False, may_miss: tuple[str, ...] = ()) -> checkpoint.LoadReport:
    """Load a pre-trained (official or ours) or fine-tuned SiameseIM encoder into a timm ViT classifier.

    Only ``fc_norm.*`` and ``head.*`` may be missing (a new head), plus names containing one of ``may_miss``
    (e.g. ``".ls1."`` for LayerScale added downstream); a head of another shape is left at its initialisation.
    Anything else missing raises.

    Raises:
        repro_shared.checkpoint.CheckpointError: the file cannot be read, or encoder keys are missing.
        ValueError: the file's ``pos_embed`` is not the row-first sin-cos table.
    """
    state = read_weights(path, trust=trust)
    enc = encoder_state_dict(state, target=target)
    if "pos_embed" in enc:
        check_pos_embed(enc["pos_embed"])
    own = model.state_dict()
    enc = {k: v for k, v in enc.items() if not (k.startswith("head.") and k in own and own[k].shape != v.shape)}
    report = checkpoint.load_state_dict_remapped(model, enc)
    bad = [k for k in report.missing if not (k.startswith(("fc_norm.", "head.")) or any(m in k for m in may_miss))]
    bad += [k for k, *_ in report.mismatched]
    if bad:
        raise checkpoint.CheckpointError(misfit_message(path, report, bad))
    return report


def misfit_message(path: str | os.PathLike, report: checkpoint.LoadReport, bad: list[str]) -> str:
    """One line saying why the weights in ``path`` do not fit the model: counts, the first few names, a hint.

    ``bad`` lists the model keys that are missing from the file or have another shape there."""
    def first(names, n=4):
        return ", ".join(names[:n]) + (", ..." if len(names) > n else "")

    parts = [f"{len(report.loaded)} tensors loaded", f"{len(bad)} model tensors missing or of another shape "
             f"({first(bad)})"]
    if report.mismatched:
        k, s_file, s_model = report.mismatched[0]
        parts.append(f"e.g. {k}: file {tuple(s_file)} vs model {tuple(s_model)}")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected in the file ({first(report.unexpected)})")
    hint = ("it holds no SiameseIM / ViT encoder keys, so it is not a SiameseIM, MAE-style or timm ViT checkpoint"
            if not report.loaded else "a checkpoint of another model.variant or data.input_size?")
    return f"{path} does not fit the model: {'; '.join(parts)}; {hint}"


def to_detectron2(encoder: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"model": encoder}``: the format of detectron2's ViTDet ImageNet-pretrained initialisation (MAE's
    ``mae_pretrain_vit_base.pth``), whose loader matches these timm names into ``backbone.net.*``."""
    return {"model": {k: v for k, v in encoder.items() if not k.startswith(("fc_norm.", "head."))}}


def save_weights(state: Mapping, out: str | os.PathLike) -> Path:
    """``torch.save`` of a dict of tensors (loadable with ``weights_only=True``), atomically."""
    from repro_shared.fsio import atomic_open

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as f:
        torch.save(dict(state), f)
    return out

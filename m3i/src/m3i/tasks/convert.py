"""``m3i-convert``: released InternImage checkpoints, or the backbone of an ``m3i-pretrain`` checkpoint, -> a
weights-only file of our key layout, with a report of missing / unexpected / shape-mismatched keys."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from repro_shared import run
from repro_shared.fsio import atomic_open

from ..convert import convert_internimage, read_state_dict

__all__ = ["run_convert"]


def run_convert(cfg: DictConfig) -> dict:
    """Convert ``cfg.src`` into ``cfg.out`` (``{"model": state_dict, "meta": {...}}``, loadable with
    ``torch.load(weights_only=True)``) and write ``<out>.report.json``.

    InternImage files are loaded into our InternImage (``variant`` checks the architecture and the H/G head
    constants; null reads the architecture from the file); ViT backbones of ``m3i-pretrain`` checkpoints are
    written as timm ViT trunks (the pre-training global head is dropped).

    Raises:
        ValueError: ``src`` not set; CheckpointError: keys that do not fit (unless ``allow_mismatch``).
    """
    if not cfg.get("src"):
        raise ValueError("m3i-convert needs src=/path/to/weights (.pth, .safetensors or an m3i-pretrain ckpt_*.pt)")
    ctx = run.setup_run(cfg, name="m3i")
    sd = read_state_dict(cfg.src, trust=bool(cfg.trust_checkpoint), branch=str(cfg.branch))
    out = Path(str(cfg.out))
    if "patch_embed.conv1.weight" in sd:
        kw = {} if cfg.get("level2_post_norm_block_ids") is None else {
            "level2_post_norm_block_ids": list(cfg.level2_post_norm_block_ids)}
        model, report = convert_internimage(sd, cfg.get("variant"), num_classes=cfg.get("num_classes"),
                                            strict=not bool(cfg.allow_mismatch), **kw)
        state, kind = model.state_dict(), f"InternImage-{(cfg.get('variant') or 'custom').upper()}"
        summary = {"loaded": len(report.loaded), "missing": report.missing, "unexpected": report.unexpected,
                   "mismatched": [list(map(str, m)) for m in report.mismatched]}
        ctx.log.info("%s: %s", kind, report)
    elif "patch_embed.proj.weight" in sd:
        state = {k: v for k, v in sd.items() if not k.startswith(("clip_projector.", "fc_norm.", "head."))}
        kind = "ViT trunk (timm names)"
        summary = {"loaded": len(state), "missing": [], "unexpected": [],
                   "dropped": sorted({k.split(".")[0] for k in sd} - {k.split(".")[0] for k in state})}
        ctx.log.info("%s: %d tensors", kind, len(state))
    else:
        raise ValueError(f"{cfg.src} holds neither an InternImage nor a ViT backbone (first keys: {list(sd)[:5]})")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as f:
        torch.save({"model": state, "meta": {"source": str(cfg.src), "kind": kind}}, f)
    report_path = out.with_name(out.name + ".report.json")
    report_path.write_text(json.dumps({"kind": kind, **summary}, indent=2) + "\n")
    run.write_metrics(ctx.out_dir, {"converted_tensors": len(state)})
    ctx.log.info("wrote %s (%d tensors) and %s", out, len(state), report_path)
    return summary

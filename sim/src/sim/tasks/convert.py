"""``sim-convert``: official (or our) SiameseIM weights -> our SiameseIM, a timm ViT, or detectron2's ViTDet init."""

from __future__ import annotations

from omegaconf import DictConfig

from repro_shared import checkpoint, run

from ..convert import (check_pos_embed, encoder_state_dict, misfit_message, read_weights, save_weights,
                       to_detectron2)
from ..models import ENCODER_VARIANTS, build_classifier, build_siameseim

__all__ = ["run_convert", "convert_file"]


def convert_file(src: str, out: str, *, to: str, variant: str, target: bool = False, trust: bool = False,
                 check_table: bool = True) -> dict:
    """Convert ``src`` and write ``out`` (a weights-only ``torch.save`` dict); returns a report dict.

    ``to``: ``ours`` (the full pre-training model, every key checked against :func:`build_siameseim`),
    ``timm`` (encoder, plus ``fc_norm`` / ``head`` of a fine-tuned file, checked against a timm ViT) or
    ``detectron2`` (``{"model": encoder}``).

    Raises:
        repro_shared.checkpoint.CheckpointError: keys that do not fit (listed), or an unreadable file.
        ValueError: an unknown ``to``, or a position table that is not the row-first sin-cos table.
    """
    if variant not in ENCODER_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(ENCODER_VARIANTS)}")
    state = read_weights(src, trust=trust)
    if "pos_embed" not in state:
        first = ", ".join(list(state)[:4]) or "no tensors"
        raise checkpoint.CheckpointError(f"{src} holds no ViT encoder (no pos_embed; its first keys: {first}): not a "
                                         "SiameseIM / MAE-style checkpoint")
    report: dict = {"source_keys": len(state)}
    if check_table and "pos_embed" in state:
        report["pos_embed_max_diff"] = check_pos_embed(state["pos_embed"])
    if to == "ours":
        dd = state["decoder_embed.weight"].shape[0] if "decoder_embed.weight" in state else None
        if dd is None:
            raise checkpoint.CheckpointError(f"{src} is not a SiameseIM pre-training checkpoint (no decoder_embed)")
        proj = len({k.split(".")[1] for k in state if k.startswith("projector_decoder_blocks.")})
        pred = len({k.split(".")[1] for k in state if k.startswith("predictor_decoder_blocks.")})
        norm = "bn" if any(".bn." in k for k in state if k.startswith("predictor_decoder_blocks.")) else "ln"
        grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
        model = build_siameseim(variant, img_size=grid * ENCODER_VARIANTS[variant]["patch_size"], decoder_dim=dd,
                                decoder_heads=16, projector_depth=proj, predictor_depth=pred, decoder_norm=norm,
                                num_masked=1)  # the mask count does not change any weight
        rep = checkpoint.load_state_dict_remapped(model, state, strict=True)
        out_state = {"model": model.state_dict()}
    elif to in ("timm", "detectron2"):
        enc = encoder_state_dict(state, target=target)
        num_classes = enc["head.weight"].shape[0] if "head.weight" in enc else 0
        grid = int(round((enc["pos_embed"].shape[1] - 1) ** 0.5))
        model = build_classifier(variant, num_classes, img_size=grid * ENCODER_VARIANTS[variant]["patch_size"],
                                 drop_path_rate=0.0)
        rep = checkpoint.load_state_dict_remapped(model, enc)
        allowed = [k for k in rep.missing if k.startswith("fc_norm.") and num_classes == 0]
        bad = [k for k in rep.missing if k not in allowed] + [k for k, *_ in rep.mismatched]
        if rep.unexpected or bad:
            raise checkpoint.CheckpointError(misfit_message(src, rep, bad) + f" (convert.variant={variant})")
        out_state = enc if to == "timm" else to_detectron2(enc)
    else:
        raise ValueError(f"unknown convert.to {to!r}; known: ours, timm, detectron2")
    save_weights(out_state, out)
    report.update(loaded=len(rep.loaded), missing=rep.missing, unexpected=rep.unexpected, out=str(out))
    return report


def run_convert(cfg: DictConfig) -> dict:
    """Entry point: ``sim-convert convert.src=official.pth convert.out=ours.pth convert.to=timm``."""
    c = cfg.convert
    if not c.src or not c.out:
        raise ValueError("pass convert.src=/path/official.pth and convert.out=/path/converted.pth")
    ctx = run.setup_run(cfg, name="sim")
    report = convert_file(str(c.src), str(c.out), to=str(c.to), variant=str(c.variant), target=bool(c.target),
                          trust=bool(cfg.get("trust_checkpoint", False)), check_table=bool(c.check_pos_embed))
    ctx.log.info("converted %s -> %s (%s): %d tensors loaded, missing %s, unexpected %s", c.src, c.out, c.to,
                 report["loaded"], report["missing"], report["unexpected"])
    run.write_metrics(ctx.out_dir, {k: v for k, v in report.items() if isinstance(v, (int, float))})
    ctx.metrics.close()
    return report

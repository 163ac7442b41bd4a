"""Pieces the entry points share: the model from the config and loading initial weights."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from ..convert import load_encoder_weights
from ..models import SiameseIM, build_siameseim

__all__ = ["build_pretrain_model", "load_init"]


def build_pretrain_model(cfg: DictConfig) -> SiameseIM:
    """:class:`SiameseIM` from ``cfg.model`` and ``cfg.data`` (image size, mask count)."""
    m, d = cfg.model, cfg.data
    return build_siameseim(m.variant, img_size=int(d.input_size), decoder_dim=int(m.decoder_dim),
                           decoder_heads=int(m.decoder_heads), projector_depth=int(m.projector_depth),
                           predictor_depth=int(m.predictor_depth), decoder_norm=str(m.decoder_norm),
                           sync_bn=bool(m.get("sync_bn", True)),
                           num_masked=int(d.num_masked), train_patch_embed=bool(m.train_patch_embed),
                           init_values=m.init_values, drop_path_rate=float(m.drop_path_rate),
                           online_ln=bool(m.online_ln))


def load_init(model: nn.Module, path: Path | None, cfg: DictConfig, log) -> None:
    """Load the encoder of ``path`` (ours or official, pre-training or fine-tuned) into a classifier ``model``;
    logs the report. Missing keys other than the new head / fc_norm are an error."""
    if path is None:
        log.info("no init weights: training from random initialisation")
        return
    report = load_encoder_weights(model, path, trust=bool(cfg.get("trust_checkpoint", False)),
                                  target=bool(cfg.init.get("target_encoder", False)))
    log.info("init weights from %s:\n%s", path, report)

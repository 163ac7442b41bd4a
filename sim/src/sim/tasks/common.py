"""Pieces the entry points share: the model from the config, loading weights, checkpoint round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig
from torch import nn

from repro_shared import checkpoint

from ..convert import load_encoder_weights
from ..models import SiameseIM, build_siameseim

__all__ = ["build_pretrain_model", "load_init", "Checkpointer"]


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


class Checkpointer:
    """Step checkpoints of one run (every ``every`` optimizer steps inside an epoch, and at every epoch end)."""

    def __init__(self, ctx, *, model: nn.Module, optimizer, scaler, iters: int, every: int, keep_last: int,
                 config: DictConfig, extra: Callable[[], dict[str, Any]]):
        self.ctx, self.model, self.optimizer, self.scaler = ctx, model, optimizer, scaler
        self.iters, self.every, self.keep_last, self.config, self.extra = iters, every, keep_last, config, extra

    def save(self, steps_done: int, epoch_stats: dict | None) -> None:
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(self.ctx.checkpoint_dir, steps_done), model=self.model,
                                   optimizer=self.optimizer, scaler=self.scaler, epoch=steps_done // self.iters,
                                   step=steps_done, config=self.config,
                                   extra={**self.extra(), "epoch_stats": epoch_stats}, keep_last=self.keep_last)

    def after_step(self, steps_done: int, epoch_stats: dict) -> None:
        """Mid-epoch checkpoints (the epoch's last step is saved by the caller after its evaluation)."""
        if self.every and steps_done % self.every == 0 and steps_done % self.iters:
            self.save(steps_done, epoch_stats)

    def resume(self, spec: str | None) -> dict | None:
        return checkpoint.resume(self.ctx.checkpoint_dir, spec, model=self.model, optimizer=self.optimizer,
                                 scaler=self.scaler, restore_rng=False)  # randomness derives from (seed, epoch, step)



"""Hydra entry points (config -> objects -> engine): ``m3i-pretrain``, ``m3i-finetune``, ``m3i-linprobe``,
``m3i-convert``.

Each reads ``configs/<name>.yaml`` from inside the package; paper rows are ``experiment=<group>/<row>``
(``configs/experiment/``), e.g. ``m3i-finetune experiment=finetune/internimage_h_22kto1k_640 data.root=/data/in1k``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

_CONFIGS = "configs"


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="pretrain")
def pretrain(cfg: DictConfig) -> None:
    """``m3i-pretrain``: M3I pre-training; default = tiny ViT on the embedded captioned shapes, CPU, about a minute."""
    from .tasks.pretrain import run_pretrain

    run_pretrain(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="finetune")
def finetune(cfg: DictConfig) -> None:
    """``m3i-finetune``: end-to-end classification fine-tuning (InternImage recipe or MAE recipe for ViTs)."""
    from .tasks.classify import run_classifier

    run_classifier(cfg, mode="finetune")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="linprobe")
def linprobe(cfg: DictConfig) -> None:
    """``m3i-linprobe``: linear probing of a frozen pre-trained backbone (MAE protocol: LARS, BN head)."""
    from .tasks.classify import run_classifier

    run_classifier(cfg, mode="linprobe")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="convert")
def convert(cfg: DictConfig) -> None:
    """``m3i-convert``: released InternImage checkpoints (or our pre-training checkpoints) -> our weights."""
    from .tasks.convert import run_convert

    run_convert(cfg)

"""Hydra entry points (config -> objects -> engine): ``m3i-pretrain``, ``m3i-finetune``, ``m3i-linprobe``,
``m3i-convert``.

Each reads ``configs/<name>.yaml`` from inside the package; paper rows are ``experiment=<group>/<row>``
(``configs/experiment/``), e.g. ``m3i-finetune experiment=finetune/internimage_h_22kto1k_640 data.root=/data/in1k``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from repro_shared.run import report_user_errors

_CONFIGS = "configs"

# bad input, missing weights, a diverged run: one ``error:`` line instead of a traceback (HYDRA_FULL_ERROR=1 keeps it)
_user_errors = report_user_errors("m3i")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="pretrain")
@_user_errors
def pretrain(cfg: DictConfig) -> None:
    """``m3i-pretrain``: M3I pre-training; default = tiny ViT on the embedded captioned shapes, CPU, about a minute."""
    from .tasks.pretrain import run_pretrain

    run_pretrain(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="finetune")
@_user_errors
def finetune(cfg: DictConfig) -> None:
    """``m3i-finetune``: end-to-end classification fine-tuning (InternImage recipe or MAE recipe for ViTs)."""
    from .tasks.classify import run_classifier

    run_classifier(cfg, mode="finetune")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="linprobe")
@_user_errors
def linprobe(cfg: DictConfig) -> None:
    """``m3i-linprobe``: linear probing of a frozen pre-trained backbone (MAE protocol: LARS, BN head)."""
    from .tasks.classify import run_classifier

    run_classifier(cfg, mode="linprobe")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="convert")
@_user_errors
def convert(cfg: DictConfig) -> None:
    """``m3i-convert``: released InternImage checkpoints (or our pre-training checkpoints) -> our weights."""
    from .tasks.convert import run_convert

    run_convert(cfg)

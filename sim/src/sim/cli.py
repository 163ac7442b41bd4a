"""Hydra entry points (config -> objects -> engine): ``sim-pretrain``, ``sim-finetune``, ``sim-linprobe``,
``sim-fewshot``, ``sim-eval``, ``sim-convert``, ``sim-det``, ``sim-seg``.

Each reads ``configs/<name>.yaml`` from inside the package; paper rows are ``experiment=<group>/<row>``
(``configs/experiment/``), e.g. ``sim-pretrain experiment=pretrain/vit_b_1600ep data.root=/data/imagenet``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from repro_shared.run import report_user_errors

from . import tasks

_CONFIGS = "configs"


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="pretrain")
@report_user_errors("sim")  # bad input / divergence: "error: ...", exit 1, no traceback
def pretrain(cfg: DictConfig) -> None:
    """``sim-pretrain``: SiameseIM pre-training; default = tiny model on sklearn digits, CPU, about a minute."""
    tasks.run_pretrain(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="finetune")
@report_user_errors("sim")
def finetune(cfg: DictConfig) -> None:
    """``sim-finetune``: end-to-end fine-tuning (MAE recipe)."""
    tasks.run_classifier(cfg, mode="finetune")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="linprobe")
@report_user_errors("sim")
def linprobe(cfg: DictConfig) -> None:
    """``sim-linprobe``: linear probing (LARS, BN head, frozen encoder)."""
    tasks.run_classifier(cfg, mode="linprobe")


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="fewshot")
@report_user_errors("sim")
def fewshot(cfg: DictConfig) -> None:
    """``sim-fewshot``: logistic regression on frozen CLS features of a few labels per class."""
    tasks.run_fewshot(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="eval")
@report_user_errors("sim")
def evaluate(cfg: DictConfig) -> None:
    """``sim-eval``: top-1/top-5 of a classifier on ImageNet or a robustness set."""
    tasks.run_eval(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="convert")
@report_user_errors("sim")
def convert(cfg: DictConfig) -> None:
    """``sim-convert``: official checkpoints -> ours / timm / detectron2 / mmdet / mmseg layouts."""
    tasks.run_convert(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="det")
@report_user_errors("sim")
def detect(cfg: DictConfig) -> None:
    """``sim-det``: Mask R-CNN transfer (ViT + simple feature pyramid, torchvision)."""
    tasks.run_detection(cfg)


@hydra.main(version_base=None, config_path=_CONFIGS, config_name="seg")
@report_user_errors("sim")
def segment(cfg: DictConfig) -> None:
    """``sim-seg``: UperNet semantic-segmentation transfer."""
    tasks.run_segmentation(cfg)

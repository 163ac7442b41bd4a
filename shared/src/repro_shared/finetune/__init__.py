"""ViT fine-tuning and linear probing pieces shared by the MAE-style recipes (SiameseIM, ADDP, M3I).

- :mod:`.optim`: :func:`param_groups_layer_decay` (BEiT/MAE layer-wise lr decay groups),
  :func:`half_cosine_lr` + :func:`set_lr` (per-iteration warmup + half-cosine, honouring ``lr_scale``),
  :func:`build_lars` (timm ``Lars`` configured as MAE's linear-probe LARS).
- :mod:`.augment`: :func:`build_train_transform` (timm ``create_transform``: RandAugment, random erasing),
  :func:`build_eval_transform`, :func:`build_linprobe_transform`, :func:`build_mixup` (timm ``Mixup``).
- :mod:`.heads`: :class:`BNLinearHead` (MAE's linear-probe head) and :func:`freeze_except`.
- :mod:`.evaluate`: :func:`evaluate_classifier` (top-1 / top-5 / loss, optional class subset).
- :mod:`.loop`: :func:`train_classifier_epoch` (one exactly resumable fine-tuning / probing epoch),
  :func:`classification_criterion`, :func:`eval_loader`.
"""

from .augment import (RandomResizedCropNoLoop, build_eval_transform, build_linprobe_transform, build_mixup,
                      build_train_transform)
from .evaluate import evaluate_classifier
from .heads import BNLinearHead, freeze_except
from .loop import classification_criterion, eval_loader, train_classifier_epoch
from .optim import build_lars, half_cosine_lr, param_groups_layer_decay, set_lr, vit_layer_id

__all__ = ["RandomResizedCropNoLoop", "build_eval_transform", "build_linprobe_transform", "build_mixup",
           "build_train_transform", "evaluate_classifier", "BNLinearHead", "freeze_except", "build_lars",
           "half_cosine_lr", "param_groups_layer_decay", "set_lr", "vit_layer_id", "classification_criterion",
           "eval_loader", "train_classifier_epoch"]

"""Data: ImageNet / digits datasets for pre-training, evaluation and linear evaluation, their augmentations,
and CutMix of the online views."""

from .cutmix import cutmix_views
from .datasets import DATASETS, eval_datasets, eval_loader, lineval_datasets, pretrain_dataset
from .transforms import TwoViews

__all__ = ["cutmix_views", "DATASETS", "eval_datasets", "eval_loader", "lineval_datasets", "pretrain_dataset", "TwoViews"]

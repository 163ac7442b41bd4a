"""Data: the two-view pre-training pipeline and the classification / robustness readers.

- :mod:`.views`: :class:`SiameseIMTransform` (two views, their geometry, the block mask of view 1).
- :mod:`.sources`: image sources: sklearn digits and procedural shapes (embedded), ImageNet folders.
- :mod:`.classification`: labelled datasets for fine-tuning, linear probing, few-shot and evaluation.
"""

from .classification import (ALEXNET_CE, IMAGENET_C_CORRUPTIONS, LabelledDigits, build_classification_data,
                             class_subset_for, read_subset_file)
from .sources import DigitsImages, ShapesImages, Unlabelled, build_pretrain_dataset
from .views import SiameseIMTransform

__all__ = ["ALEXNET_CE", "IMAGENET_C_CORRUPTIONS", "LabelledDigits", "build_classification_data", "class_subset_for",
           "read_subset_file", "DigitsImages", "ShapesImages", "Unlabelled", "build_pretrain_dataset",
           "SiameseIMTransform"]

"""Data utilities every package's training loop needs.

- :mod:`repro_shared.data.loader`: resumable loaders whose randomness is derived from
  ``(seed, epoch, index)`` and ``(seed, epoch, step, rank)``, and the dataset-size check.
- :mod:`repro_shared.data.images`: image readers whose errors name the file, optional skipping of
  unreadable files.
"""

from .images import DataError, ImageFolder, SkipNoneCollate, load_image, require_dir
from .loader import (ResumableBatchSampler, ResumableLoader, SeededDataset, build_loader, check_dataset_size,
                     derive_seed, seed_step)

__all__ = ["DataError", "ImageFolder", "SkipNoneCollate", "load_image", "require_dir", "ResumableBatchSampler",
           "ResumableLoader", "SeededDataset", "build_loader", "check_dataset_size", "derive_seed", "seed_step"]

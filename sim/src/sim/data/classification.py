"""Labelled data for fine-tuning, linear probing, few-shot and evaluation.

``data.name``: ``digits`` (embedded), ``imagenet`` (``root/{train,val}/<wnid>/*``), ``folder`` (any
ImageFolder, e.g. ImageNet-A / -R / -Sketch), ``imagenet_c`` (``root/<corruption>/<severity>/<wnid>/*``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset, Subset

from repro_shared import run
from repro_shared.data import ImageFolder, require_dir

from .sources import DigitsImages

__all__ = ["LabelledDigits", "build_classification_data", "read_subset_file", "class_subset_for",
           "IMAGENET_C_CORRUPTIONS", "ALEXNET_CE"]

#: the 15 ImageNet-C corruptions of the mCE benchmark
IMAGENET_C_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                          "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
                          "pixelate", "jpeg_compression")
#: AlexNet's top-1 error per corruption averaged over severities 1-5 (Hendrycks & Dietterich 2019, the
#: normaliser of mCE), in the order of :data:`IMAGENET_C_CORRUPTIONS`
ALEXNET_CE = dict(zip(IMAGENET_C_CORRUPTIONS, (0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
                                               0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
                                               0.606500)))


class LabelledDigits(DigitsImages):
    """sklearn digits with labels (``train``: 1,437, ``val``: 360); ``fraction`` keeps a stratified, fixed subset
    of each class (the few-shot split: e.g. 0.1 keeps about 14 images per class)."""

    def __init__(self, split: str, base_size: int, transform: Callable | None = None, fraction: float = 1.0):
        super().__init__(split, base_size, transform)
        if fraction < 1.0:
            rs = np.random.default_rng(0)
            labels = self.labels.numpy()
            keep = np.sort(np.concatenate([
                rs.permutation(np.flatnonzero(labels == c))[: max(1, int(round(fraction * (labels == c).sum())))]
                for c in np.unique(labels)]))
            self.images = [self.images[i] for i in keep]
            self.labels = self.labels[keep]


def read_subset_file(folder: ImageFolder, subset_file: str | os.PathLike) -> ImageFolder:
    """Restrict an ImageNet train ``folder`` to the images listed in ``subset_file`` (SimCLR / MSN 1 % split: one
    ``<wnid>_<id>.JPEG`` per line, as ``google-research/simclr`` ``imagenet_subsets/1percent.txt``).

    Raises:
        FileNotFoundError: the subset file is missing (says where to get it) or lists an image the folder lacks.
    """
    path = Path(str(subset_file or "")).expanduser()
    if not subset_file or not path.is_file():
        raise FileNotFoundError(
            f"few-shot subset file {str(subset_file)!r} not found: download imagenet_subsets/1percent.txt from "
            "https://github.com/google-research/simclr and pass fewshot.subset_file=/path/to/1percent.txt")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    root = Path(folder.root)
    samples = []
    for name in names:
        wnid = name.split("_")[0]
        file = root / wnid / name
        if wnid not in folder.class_to_idx or not file.is_file():
            raise FileNotFoundError(f"{file} (listed in {path}) does not exist under {root}")
        samples.append((str(file), folder.class_to_idx[wnid]))
    folder.samples = folder.imgs = samples
    folder.targets = [s[1] for s in samples]
    return folder


def class_subset_for(subset_root: str | os.PathLike, imagenet_train: str | os.PathLike) -> list[int]:
    """Logit columns of a 200-class ImageNet variant (ImageNet-A / -R): the index of each of its wnid folders
    (sorted, = its labels) among the 1,000 sorted wnid folders of ImageNet's ``train``.

    Raises:
        FileNotFoundError: a missing folder; ValueError: a wnid that ImageNet-1k does not have.
    """
    sub = sorted(p.name for p in require_dir(subset_root, "<root>/<wnid>/<image>", "eval.data.root").iterdir()
                 if p.is_dir())
    full = sorted(p.name for p in require_dir(imagenet_train, "<imagenet>/train/<wnid>/", "eval.imagenet_train").iterdir()
                  if p.is_dir())
    index = {w: i for i, w in enumerate(full)}
    missing = [w for w in sub if w not in index]
    if missing:
        raise ValueError(f"{len(missing)} class folders of {subset_root} are not ImageNet-1k wnids (first: {missing[0]})")
    return [index[w] for w in sub]


def build_classification_data(data_cfg: Any, split: str, transform: Callable | None) -> tuple[Dataset, int]:
    """``(dataset, num_classes)`` of ``data_cfg.name`` for ``split`` (``train`` / ``val``).

    Raises:
        ValueError: unknown ``data.name`` (lists the known ones).
        FileNotFoundError: a missing folder, naming it and the expected layout.
    """
    name = data_cfg.name
    skip = bool(data_cfg.get("skip_corrupt", False))
    if name == "digits":
        frac = float(data_cfg.get("train_fraction", 1.0)) if split == "train" else 1.0
        ds: Dataset = LabelledDigits(split, int(data_cfg.base_size), transform, fraction=frac)
        if split == "train" and data_cfg.get("train_subset"):
            ds = Subset(ds, list(range(int(data_cfg.train_subset))))
        return ds, 10
    if name == "imagenet":
        root = run.data_root(data_cfg, "train/<wnid>/<image> and val/<wnid>/<image> (ImageNet)")
        folder = ImageFolder(root / split, transform, skip_corrupt=skip, key="data.root")
        return folder, len(folder.classes)
    if name == "folder":
        folder = ImageFolder(str(data_cfg.root), transform, skip_corrupt=skip, key="data.root")
        return folder, len(folder.classes)
    raise ValueError(f"unknown data.name {name!r}; known: digits, imagenet, folder")

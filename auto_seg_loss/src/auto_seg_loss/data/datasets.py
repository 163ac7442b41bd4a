"""PASCAL VOC 2012 (+SBD augmentation) and Cityscapes readers in their standard layouts.

VOC (mmseg ``pascal_voc12_aug``)::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png          palette PNG, 0..20, 255 = void (train 1,464 / val 1,449)
    root/SegmentationClassAug/<id>.png       SBD-converted label PNGs (10,582 train-aug incl. train)
    root/ImageSets/Segmentation/{train,val,aug}.txt

``split="train_aug"`` reads train.txt from SegmentationClass plus aug.txt from SegmentationClassAug
(as mmseg's config); ``split="val"`` reads val.txt.

Cityscapes::

    root/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png   (19 classes, 255 = ignore)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from omegaconf import OmegaConf
from repro_shared.data import DataError, load_image, require_dir

from .shapes import ShapesSegDataset
from .transforms import EvalPipeline, TrainPipeline

_log = logging.getLogger("auto_seg_loss.data")


VOC_LAYOUT = """root/JPEGImages/<id>.jpg
root/SegmentationClass/<id>.png        (train and val labels)
root/SegmentationClassAug/<id>.png     (SBD train-aug labels)
root/ImageSets/Segmentation/{train,val,aug}.txt"""
CITYSCAPES_LAYOUT = """root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
root/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png"""


def _require(path: Path, layout: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (data.root is the dataset folder); expected the layout\n{layout}")


def load_label(path: str | Path) -> Image.Image:
    """Open and fully decode a label PNG, keeping its class indices (palette "P" or "L" mode, no conversion).

    Raises:
        DataError: naming ``path`` when the file is missing, truncated or not an image.
    """
    try:
        with open(path, "rb") as f:
            lab = Image.open(f)
            lab.load()
            return lab
    except (OSError, SyntaxError, ValueError) as e:
        reason = f"cannot read label map {path}: {e}"
        raise DataError(f"{reason} (delete or replace the file, or set data.skip_corrupt=true to skip unreadable "
                        "files with a warning)", reason) from e


def check_label_file(lab: Image.Image, path: str | Path, num_classes: int, ignore_index: int = 255) -> None:
    """Refuse a label map that is not one channel of class indices 0..K-1 or ``ignore_index``.

    Raises:
        DataError: naming ``path``, with the offending mode (e.g. colour "RGB" labels) or values.
    """
    if lab.mode not in ("P", "L", "I", "I;16"):
        reason = f"label map {path} has image mode {lab.mode!r}, not one channel of class indices"
        raise DataError(f"{reason} (use the palette/grayscale class-index PNGs of the dataset, not colour renderings)",
                        reason)
    arr = np.asarray(lab)
    bad = (arr >= num_classes) & (arr != ignore_index)
    if bad.any():
        values = np.unique(arr[bad])[:10].tolist()
        reason = f"label map {path} holds values {values} outside 0..{num_classes - 1} that are not the ignore label {ignore_index}"
        raise DataError(f"{reason} (remap them to {ignore_index}, fix data.num_classes, or set data.skip_corrupt=true "
                        "to skip such files with a warning)", reason)


class _PairDataset(torch.utils.data.Dataset):
    """(image, label map) files through a pipeline. An unreadable file, or a label map whose values are not
    0..K-1 / 255 (:func:`check_label_file`), raises :class:`DataError` naming it; with ``skip_corrupt`` the
    sample is ``None`` (a warning names the file; the loader's collate drops it and the engine reports the
    count at the end of the epoch)."""

    ignore_index = 255
    num_classes: int

    def __init__(self, pairs, pipeline, skip_corrupt: bool = False):
        self.pairs, self.pipeline, self.skip_corrupt = pairs, pipeline, bool(skip_corrupt)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        img_path, lab_path = self.pairs[i]
        try:
            img, lab = load_image(img_path), load_label(lab_path)
            check_label_file(lab, lab_path, self.num_classes, self.ignore_index)
        except DataError as e:
            if not self.skip_corrupt:
                raise
            _log.warning("skipping sample %d: %s", i, e.reason)
            return None
        return self.pipeline(img, lab)


class VOCAugDataset(_PairDataset):
    num_classes = 21
    LAYOUT = VOC_LAYOUT

    def __init__(self, root: str | Path, split: str = "train_aug", pipeline=None, skip_corrupt: bool = False):
        root = require_dir(root, "\n" + self.LAYOUT)
        sets = root / "ImageSets" / "Segmentation"
        if split == "train_aug":
            lists = [("train.txt", "SegmentationClass"), ("aug.txt", "SegmentationClassAug")]
        elif split in ("train", "val"):
            lists = [(f"{split}.txt", "SegmentationClass")]
        else:
            raise ValueError(f"unknown VOC split {split!r}; use train_aug, train or val")
        pairs = []
        for lst, ann in lists:
            _require(sets / lst, self.LAYOUT)
            _require(root / ann, self.LAYOUT)
            ids = [s.strip() for s in (sets / lst).read_text().split() if s.strip()]
            pairs += [(root / "JPEGImages" / f"{i}.jpg", root / ann / f"{i}.png") for i in ids]
        super().__init__(pairs, pipeline or EvalPipeline(), skip_corrupt)


class CityscapesDataset(_PairDataset):
    num_classes = 19
    LAYOUT = CITYSCAPES_LAYOUT

    def __init__(self, root: str | Path, split: str = "train", pipeline=None, skip_corrupt: bool = False):
        root = require_dir(root, "\n" + self.LAYOUT)
        img_dir = root / "leftImg8bit" / split
        _require(img_dir, self.LAYOUT)
        pairs = []
        for p in sorted(img_dir.glob("*/*_leftImg8bit.png")):
            lab = root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
            _require(lab, self.LAYOUT)
            pairs.append((p, lab))
        if not pairs:
            raise FileNotFoundError(f"no images under {img_dir}; expected the layout\n{self.LAYOUT}")
        super().__init__(pairs, pipeline or EvalPipeline((2048, 1024)), skip_corrupt)


def data_root(cfg) -> str | None:
    """``cfg.root`` of a ``data`` config, ``None`` while it is unset (``???``): the readers then raise the
    error that names ``data.root`` and the expected layout."""
    return None if OmegaConf.is_missing(cfg, "root") else cfg.root


def build_dataset(cfg, split: str, train: bool):
    """Dataset from the ``data`` config group (``name``: shapes | voc_aug | cityscapes).

    Raises:
        FileNotFoundError: ``data.root`` unset or not a folder (names the key and the expected layout).
        ValueError: unknown ``data.name``.
    """
    name = cfg.name
    if name not in ("shapes", "voc_aug", "cityscapes"):  # before reading keys only some datasets have
        raise ValueError(f"unknown dataset {name!r}; choose shapes, voc_aug or cityscapes")
    if name == "shapes":
        return ShapesSegDataset(cfg.get("root"), split, cfg.num_train if train else cfg.num_val, cfg.image_size,
                                cfg.seed, train=train)
    pipeline = (TrainPipeline(cfg.img_scale, cfg.ratio_range, cfg.crop_size, cfg.cat_max_ratio)
                if train else EvalPipeline(cfg.img_scale))
    skip = bool(cfg.get("skip_corrupt", False))
    root = data_root(cfg)
    if name == "voc_aug":
        return VOCAugDataset(root, split, pipeline, skip)
    return CityscapesDataset(root, split, pipeline, skip)

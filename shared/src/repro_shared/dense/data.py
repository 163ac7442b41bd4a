"""Dense-task datasets: COCO-format instances (COCO, LVIS-as-COCO, the procedural shapes) and label-map folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from ..data.images import DataError, load_image, require_dir

__all__ = ["CocoInstanceDataset", "SegmentationFolder", "detection_collate"]


class CocoInstanceDataset(Dataset):
    """Images and instance targets of a COCO-format annotation file, for torchvision detectors.

    Args:
        image_dir: folder of the images named in the annotation file (COCO: ``train2017/``; LVIS, whose images
            carry only a ``coco_url``: the COCO root with ``train2017/`` and ``val2017/``).
        ann_file: COCO instances JSON (boxes ``xywh``, RLE or polygon masks).
        train: drop crowd annotations and images left without annotations (ViTDet and torchvision
            references do both for training), and flip horizontally with probability ``hflip_p``.
        hflip_p: horizontal-flip probability in training (torch's global RNG; seeded per sample by
            ``repro_shared.data.build_loader``).
        key: the config key that set ``image_dir``, named in errors.

    Item: ``image`` float32 ``(3, H, W)`` in [0, 1] and ``target`` ``{boxes (K, 4) xyxy float32 pixels,
    labels (K,) int64 in 1..num_categories (contiguous; 0 is the background), masks (K, H, W) uint8,
    image_id int}``. ``cat_ids[label - 1]`` is the COCO category id of a label.

    Raises:
        FileNotFoundError: a missing ``image_dir`` or ``ann_file``, naming it and the expected layout.
        DataError: an unreadable image, naming the file.
    """

    LAYOUT = "<image_dir>/<file_name> for every image of <ann_file> (COCO instances JSON)"

    def __init__(self, image_dir: str | os.PathLike, ann_file: str | os.PathLike, *, train: bool = False,
                 hflip_p: float = 0.5, key: str = "data.root"):
        from pycocotools.coco import COCO

        self.image_dir = require_dir(image_dir, self.LAYOUT, key)
        if not Path(ann_file).is_file():
            raise FileNotFoundError(f"annotation file {str(ann_file)!r} not found; expected layout: {self.LAYOUT}")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(ann_file))
        self.cat_ids = sorted(self.coco.getCatIds())
        self.label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns.get(i, []))]
        self.ids, self.train, self.hflip_p = ids, bool(train), float(hflip_p)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def _relative_path(info: dict) -> str:
        """``file_name``, or for LVIS (images named only by ``coco_url``) ``<split folder>/<file>``, so that
        ``image_dir`` is the COCO root holding ``train2017/`` and ``val2017/``."""
        if "file_name" in info:
            return info["file_name"]
        return "/".join(info["coco_url"].split("/")[-2:])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        image = pil_to_tensor(load_image(self.image_dir / self._relative_path(info))).float().div_(255)
        H, W = image.shape[-2:]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not (self.train and a.get("iscrowd", 0))]
        anns = [a for a in anns if a["bbox"][2] > 0 and a["bbox"][3] > 0]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        masks = (torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns])) if anns
                 else torch.zeros(0, H, W, dtype=torch.uint8))
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        if self.train and self.hflip_p > 0 and bool(torch.rand(1) < self.hflip_p):
            image, masks = image.flip(-1), masks.flip(-1)
            boxes = torch.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, {"boxes": boxes, "labels": labels, "masks": masks, "image_id": int(image_id)}


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...] -> ([images], [targets])`` (torchvision detectors take lists)."""
    return [b[0] for b in batch], [b[1] for b in batch]


class SegmentationFolder(Dataset):
    """Images and label maps from two parallel folders (ADE20K: ``images/training`` + ``annotations/training``).

    Args:
        image_dir: images (``.jpg`` / ``.png``).
        label_dir: single-channel PNG label maps with the same stem as the image.
        reduce_zero_label: ADE20K convention: label 0 ("other") becomes ``ignore_index`` and every other label
            moves down by one (150 classes 0..149).
        transform: optional ``(image, label) -> (image, label)`` on the tensors (e.g. random crop / flip).
        ignore_index: the label of unlabelled pixels.

    Item: ``image`` float32 ``(3, H, W)`` in [0, 1], ``label`` int64 ``(H, W)``.

    Raises:
        FileNotFoundError: a missing folder, no images, or an image without its label map (naming it).
        DataError: an unreadable file, naming it.
    """

    LAYOUT = "<image_dir>/<name>.jpg|png and <label_dir>/<name>.png (uint8 class ids)"

    def __init__(self, image_dir: str | os.PathLike, label_dir: str | os.PathLike, *, reduce_zero_label: bool = False,
                 transform: Callable | None = None, ignore_index: int = 255, key: str = "data.root"):
        self.image_dir = require_dir(image_dir, self.LAYOUT, key)
        self.label_dir = require_dir(label_dir, self.LAYOUT, key)
        self.images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise FileNotFoundError(f"no images in {self.image_dir}; expected layout: {self.LAYOUT}")
        missing = [p.name for p in self.images if not (self.label_dir / (p.stem + ".png")).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images have no label map in {self.label_dir} "
                                    f"(first: {missing[0]}); expected layout: {self.LAYOUT}")
        self.reduce_zero_label, self.transform, self.ignore_index = bool(reduce_zero_label), transform, int(ignore_index)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.images[index]
        image = pil_to_tensor(load_image(path)).float().div_(255)
        label_path = self.label_dir / (path.stem + ".png")
        label = pil_to_tensor(load_image(label_path, mode="L"))[0].long()
        if label.shape != image.shape[-2:]:
            raise DataError(f"label map {label_path} is {tuple(label.shape)} but its image is {tuple(image.shape[-2:])}")
        if self.reduce_zero_label:
            label = torch.where(label == 0, torch.full_like(label, self.ignore_index), label - 1)
        if self.transform is not None:
            image, label = self.transform(image, label)
        return image, label

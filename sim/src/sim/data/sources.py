"""Image sources for pre-training: the embedded digits and shapes, ImageNet-style folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from repro_shared import run
from repro_shared.data import ImageFolder
from repro_shared.toydata import load_digits, make_shapes_dataset

__all__ = ["DigitsImages", "ShapesImages", "Unlabelled", "build_pretrain_dataset"]


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    """``(N, 3, H, W)`` floats in [0, 1] -> RGB PIL images."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


class DigitsImages(Dataset):
    """sklearn's digits (``repro_shared.toydata``, fixed train/val split) as RGB PIL images of ``base_size``.

    Item: ``transform(image)`` (the PIL image when ``transform`` is None) and the label.
    """

    def __init__(self, split: str = "train", base_size: int = 32, transform: Callable | None = None):
        images, self.labels = load_digits(split, image_size=base_size, channels=3)
        self.images, self.transform = _to_pil(images), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.images[i]
        return (self.transform(img) if self.transform is not None else img), int(self.labels[i])


class ShapesImages(Dataset):
    """The procedural shape scenes of ``repro_shared.toydata`` (generated once under ``root``), label = the
    class of the largest shape. Item: ``(transform(image), label)``."""

    def __init__(self, root: str | Path, split: str = "train", num_images: int = 512, image_size: int = 64,
                 seed: int = 0, transform: Callable | None = None):
        import json

        paths = make_shapes_dataset(root, split, num_images=num_images, image_size=image_size, seed=seed)
        coco = json.loads(paths.ann_file.read_text())
        largest: dict[int, tuple[float, int]] = {}
        for a in coco["annotations"]:
            if a["area"] > largest.get(a["image_id"], (-1.0, 0))[0]:
                largest[a["image_id"]] = (a["area"], a["category_id"])
        self.files = [paths.image_dir / im["file_name"] for im in coco["images"]]
        self.labels = [largest[im["id"]][1] - 1 for im in coco["images"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from repro_shared.data import load_image

        img = load_image(self.files[i])
        return (self.transform(img) if self.transform is not None else img), self.labels[i]


class Unlabelled(Dataset):
    """Drops the label of an ``(x, label)`` dataset; a ``None`` sample (skipped unreadable file) stays ``None``."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        item = self.base[i]
        return None if item is None else item[0]


def build_pretrain_dataset(data_cfg: Any, transform: Callable) -> Dataset:
    """The pre-training dataset of ``data_cfg.name``: ``digits``, ``shapes`` or ``imagenet`` (``root/train``).

    Items are ``transform(image)`` tuples (labels dropped).

    Raises:
        ValueError: an unknown ``data.name`` (lists the known ones).
        FileNotFoundError: a missing ImageNet folder, naming it and the expected layout.
    """
    name = data_cfg.name
    if name == "digits":
        ds: Dataset = DigitsImages("train", int(data_cfg.base_size), transform)
        if data_cfg.get("train_subset"):
            ds = torch.utils.data.Subset(ds, np.arange(int(data_cfg.train_subset)).tolist())
    elif name == "shapes":
        ds = ShapesImages(data_cfg.root, "train", int(data_cfg.num_images), int(data_cfg.base_size), 0, transform)
    elif name == "imagenet":
        ds = ImageFolder(run.data_root(data_cfg, "train/<wnid>/<image> (ImageNet)") / "train", transform, skip_corrupt=bool(data_cfg.get("skip_corrupt")),
                         key="data.root")
    else:
        raise ValueError(f"unknown data.name {name!r}; known: digits, shapes, imagenet")
    return Unlabelled(ds)

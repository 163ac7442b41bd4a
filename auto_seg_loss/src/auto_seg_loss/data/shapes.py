"""The embedded default: procedural shape scenes from :mod:`repro_shared.toydata` as semantic segmentation.

Classes: 0 background, 1 circle, 2 square, 3 triangle (K = 4). No ignore pixels. The whole split is
held in memory; training augmentation is a random horizontal and vertical flip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from repro_shared import dist as rdist
from repro_shared.toydata import SHAPE_CLASSES, make_shapes_dataset

CLASSES = ("background",) + tuple(SHAPE_CLASSES)


def default_data_root() -> Path:
    return Path.home() / ".cache" / "auto_seg_loss"


class ShapesSegDataset(torch.utils.data.Dataset):
    """Items: image (3, S, S) float normalised to zero mean / unit std per channel, label (S, S) long."""

    num_classes = len(CLASSES)
    ignore_index = 255

    def __init__(self, root: str | Path | None = None, split: str = "train", num_images: int = 256,
                 image_size: int = 64, seed: int = 0, train: bool = False):
        # one folder per parameter set: the generator regenerates a folder whose parameters differ
        root = (Path(root) if root else default_data_root()) / f"shapes_s{image_size}_n{num_images}_seed{seed}"
        if rdist.get_rank() == 0:  # generate once, then every rank reads
            make_shapes_dataset(root, split=split, num_images=num_images, image_size=image_size, seed=seed)
        rdist.barrier()
        paths = make_shapes_dataset(root, split=split, num_images=num_images, image_size=image_size, seed=seed)
        names = [f"{i:06d}.png" for i in range(num_images)]
        imgs = np.stack([np.asarray(Image.open(paths.image_dir / n).convert("RGB")) for n in names])
        labs = np.stack([np.asarray(Image.open(paths.semseg_dir / n)) for n in names])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
        self.images = (x - 0.5) / 0.25
        self.labels = torch.from_numpy(labs.astype(np.int64))
        self.train = train

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img, lab = self.images[i], self.labels[i]
        if self.train:
            if torch.rand(()) < 0.5:
                img, lab = img.flip(-1), lab.flip(-1)
            if torch.rand(()) < 0.5:
                img, lab = img.flip(-2), lab.flip(-2)
        return img, lab

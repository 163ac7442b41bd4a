"""ImageNet-1k in the ImageFolder layout, with the pre-training augmentation (spec §3.5).

Pre-training: ``RandomResizedCrop(256, scale=(0.2, 1.0), bicubic)``, horizontal flip, ``ToTensor`` (no
normalisation: the tokenizer reads [0, 1] pixels, the encoder normalises inside). The official code
reads pyarrow list files (``meta/train.txt``); an ImageFolder holds the same images.
An unreadable image is an error naming the file; ``data.skip_corrupt=true`` skips it with a warning.
"""

from __future__ import annotations

from torchvision import transforms

from repro_shared import run
from repro_shared.data import ImageFolder

__all__ = ["pretrain_transform", "eval_transform", "imagenet_folder"]


def pretrain_transform(img_size: int = 256, scale: tuple[float, float] = (0.2, 1.0)):
    """RandomResizedCrop (bicubic) + horizontal flip + ToTensor, images in [0, 1]."""
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=tuple(scale), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
    ])


def eval_transform(img_size: int = 256):
    """Resize (bicubic) + CenterCrop + ToTensor (the generation script's transform)."""
    return transforms.Compose([
        transforms.Resize(img_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
    ])


LAYOUT = "train/<class>/<image>.JPEG and val/<class>/<image>.JPEG (torchvision ImageFolder)"


def imagenet_folder(root: str | None, split: str, transform, *, skip_corrupt: bool = False,
                    key: str = "data.root") -> ImageFolder:
    """``<root>/<split>/<class>/<image>``; errors name the missing folder and the expected layout.

    Raises:
        FileNotFoundError: ``root`` is unset (the message names ``key`` and the layout; the paper rows leave
            the ImageNet folder to the command line) or ``<root>/<split>`` is not a folder.
    """
    root = run.data_root({"root": root}, LAYOUT, key=key)
    return ImageFolder(root / split, transform, skip_corrupt=skip_corrupt, key=key)

"""Image files that fail with their name: an unreadable file is an error naming it, or (opt-in) a skip.

- :func:`load_image` opens and fully decodes one file; any decoder error becomes a :class:`DataError`
  that names the file.
- :class:`ImageFolder` is torchvision's ``ImageFolder`` with a clear error for a missing or empty root
  and, with ``skip_corrupt=True``, a warning naming each unreadable file instead of an exception: the
  sample comes back as ``None`` and :class:`SkipNoneCollate` drops it from the batch, so the engine can
  count ``batch_size - len(batch)`` skipped samples and report the total at the end of the epoch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import default_collate

__all__ = ["DataError", "load_image", "ImageFolder", "SkipNoneCollate", "require_dir"]

_log = logging.getLogger("repro_shared.data")


class DataError(RuntimeError):
    """A data file is missing, unreadable or malformed; the message names the file.

    Attributes:
        reason: the message without advice on what to do (for a warning when the file is being skipped).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def require_dir(path: str | os.PathLike, layout: str, key: str = "data.root") -> Path:
    """``path`` as a Path if it is an existing folder.

    Raises:
        FileNotFoundError: naming the path, the config ``key`` that set it and the expected ``layout``.
    """
    p = Path(os.path.expanduser(str(path))) if path not in (None, "") else None
    if p is None or not p.is_dir():
        shown = "unset (???)" if path in (None, "") else repr(str(path))
        raise FileNotFoundError(f"{key}={shown} is not a folder; expected layout: {layout}")
    return p


def load_image(path: str | os.PathLike, mode: str = "RGB"):
    """Open ``path`` with PIL, decode it completely and convert it to ``mode``.

    Raises:
        DataError: naming ``path`` when the file is missing, truncated or not an image.
    """
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: a truncated file fails here, with its name, not inside a transform
            return img.convert(mode)
    except (OSError, SyntaxError, ValueError) as e:
        reason = f"cannot read image {path}: {e}"
        raise DataError(f"{reason} (delete or replace the file, or set data.skip_corrupt=true to skip unreadable "
                        "files with a warning)", reason) from e


def _imagefolder_base():
    from torchvision.datasets import ImageFolder as TVImageFolder

    return TVImageFolder


class ImageFolder(_imagefolder_base()):  # type: ignore[misc]
    """torchvision ``ImageFolder`` (``root/<class>/<image>``) whose errors name the file.

    Args:
        root: the split folder, e.g. ``/data/imagenet/train``.
        transform: applied to the PIL image.
        skip_corrupt: return ``None`` (and log a warning with the path) for an unreadable file instead of
            raising :class:`DataError`; use :class:`SkipNoneCollate` in the loader.
        key: the config key that set ``root``, for the error message.

    Raises:
        FileNotFoundError: ``root`` is missing or holds no class folder with images.
    """

    LAYOUT = "<root>/<class name>/<image>.jpeg (torchvision ImageFolder, e.g. ImageNet's train/ and val/ folders)"

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, *, skip_corrupt: bool = False,
                 key: str = "data.root", **kwargs: Any):
        root = require_dir(root, self.LAYOUT, key)
        self.skip_corrupt = bool(skip_corrupt)
        try:
            super().__init__(str(root), transform=transform, loader=load_image, **kwargs)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{key}={str(root)!r} holds no images in the expected layout {self.LAYOUT}: {e}") from e

    def __getitem__(self, index: int):
        try:
            return super().__getitem__(index)
        except DataError as e:
            if not self.skip_corrupt:
                raise
            _log.warning("skipping unreadable sample %d: %s", index, e.reason)
            return None


class SkipNoneCollate:
    """Collate that drops ``None`` samples (unreadable files skipped by the dataset), then calls ``base``.

    Raises:
        DataError: when every sample of a batch was unreadable.
    """

    def __init__(self, base: Callable[[Sequence[Any]], Any] = default_collate):
        self.base = base

    def __call__(self, batch: Sequence[Any]) -> Any:
        kept = [b for b in batch if b is not None]
        if not kept:
            raise DataError(f"all {len(batch)} samples of a batch were unreadable (see the warnings above for the files)")
        return self.base(kept)

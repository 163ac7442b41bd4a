"""Pre-training data sources and their weighted mixture (spec m3i.md sections 3.6 and 4.1).

A *source* is a map-style dataset of dicts ``{"image": PIL, "label": int (-1: none), "caption": str | None}``
(``None`` for a file skipped with ``data.skip_corrupt=true``):

- :class:`ShapesSource`: the embedded captioned shapes (:mod:`m3i.data.shapes`);
- :class:`ImageFolderSource`: ImageNet-1k / 22k in torchvision's ImageFolder layout (labels);
- :class:`TarShardSource`: WebDataset-format tar shards of image-text pairs (LAION-400M, YFCC-15M, CC12M as
  written by ``img2dataset``): ``<key>.jpg`` + ``<key>.txt`` per sample, read by random access from a per-shard
  offset index, so that the resumable loader can address any sample (exact resume) in any worker.

:class:`PretrainDataset` turns a source into M3I samples and applies the source's target availability
(``targets``: which of ``label`` / ``text`` it provides). :class:`WeightedSourceSampler` draws every epoch's
order as a weighted mixture of several sources (per-source weights; default proportional to size).
"""

from __future__ import annotations

import glob
import io
import logging
import tarfile
from bisect import bisect_right
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from repro_shared.data import DataError, ImageFolder, ResumableBatchSampler, derive_seed

from .shapes import shapes_split

__all__ = ["TARGETS", "ShapesSource", "ImageFolderSource", "TarShardSource", "index_tar_shard", "PretrainDataset",
           "WeightedSourceSampler"]

_log = logging.getLogger("m3i.data")
TARGETS = ("label", "text")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


class ShapesSource(Dataset):
    """The embedded captioned shapes of one split (``train``: 2000 images), as PIL images."""

    def __init__(self, split: str = "train", size: int = 32, seed: int = 0):
        self.data = shapes_split(split, size, seed)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        return {"image": Image.fromarray(self.data.images[i]), "label": int(self.data.labels[i]),
                "caption": self.data.captions[i]}


class ImageFolderSource(Dataset):
    """``root/<class>/<image>`` (ImageNet train folder) with labels; errors name the unreadable file.

    Raises:
        FileNotFoundError: ``root`` missing or empty (names the key and the expected layout).
    """

    def __init__(self, root: str, *, skip_corrupt: bool = False, key: str = "data.sources[].root"):
        self.folder = ImageFolder(root, transform=None, skip_corrupt=skip_corrupt, key=key)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        item = self.folder[i]
        return None if item is None else {"image": item[0], "label": int(item[1]), "caption": None}


def index_tar_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Byte offsets of one WebDataset tar: ``{"image": (n, 2), "text": (n, 2)}`` int64 ``(offset, size)`` per
    sample (``-1`` where a sample has no caption), samples in file order. A sample is the group of members that
    share a key (the member name up to the first dot of its file name) and it needs an image member.

    Raises:
        DataError: naming the shard when it is missing or not a readable tar.
    """
    try:
        with tarfile.open(path, "r:") as tar:
            groups: dict[str, dict[str, tuple[int, int]]] = {}
            for m in tar:
                if not m.isfile():
                    continue
                folder, _, name = m.name.rpartition("/")
                stem, _, ext = name.partition(".")
                groups.setdefault(f"{folder}/{stem}", {})[ext.lower()] = (m.offset_data, m.size)
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"cannot read tar shard {path}: {e} (replace the shard or drop it from "
                        "data.sources[].shards)") from e
    img, txt = [], []
    for members in groups.values():
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is None:
            continue
        img.append(members[ext])
        txt.append(members.get("txt", (-1, -1)))
    return {"image": np.asarray(img, dtype=np.int64).reshape(-1, 2),
            "text": np.asarray(txt, dtype=np.int64).reshape(-1, 2)}


class TarShardSource(Dataset):
    """Image-text pairs from WebDataset tar shards by random access (module docstring).

    Args:
        shards: paths or glob patterns (sorted after expansion).
        index_dir: folder for the per-shard offset indices (``<shard name>.idx.npz``), built on first use and
            reused afterwards; None keeps them in memory only.
        skip_corrupt: an undecodable image -> warning + ``None`` instead of a :class:`DataError`.

    Raises:
        FileNotFoundError: no shard matches (names the patterns and the expected layout).
    """

    LAYOUT = ("WebDataset tar shards (img2dataset output): <key>.jpg + <key>.txt per sample, "
              "e.g. data.sources[0].shards=['/data/laion400m/*.tar']")

    def __init__(self, shards: Sequence[str] | str, *, index_dir: str | None = None, skip_corrupt: bool = False):
        patterns = [shards] if isinstance(shards, str) else list(shards)
        self.paths = sorted({p for pat in patterns for p in glob.glob(str(Path(pat).expanduser()))})
        if not self.paths:
            raise FileNotFoundError(f"data.sources[].shards={patterns} matches no file; expected {self.LAYOUT}")
        self.index_dir = Path(index_dir) if index_dir else None
        self.skip_corrupt = skip_corrupt
        self.indices = [self._index(p) for p in self.paths]
        self.starts = np.cumsum([0] + [len(ix["image"]) for ix in self.indices]).tolist()

    def _index(self, path: str) -> dict[str, np.ndarray]:
        if self.index_dir is None:
            return index_tar_shard(path)
        cache = self.index_dir / (Path(path).name + ".idx.npz")
        if cache.is_file():
            with np.load(cache) as z:
                return {"image": z["image"], "text": z["text"]}
        index = index_tar_shard(path)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **index)
        return index

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        from PIL import Image

        s = bisect_right(self.starts, i) - 1
        j, path, ix = i - self.starts[s], self.paths[s], self.indices[s]
        (io_off, io_size), (to_off, to_size) = ix["image"][j], ix["text"][j]
        try:
            with open(path, "rb") as f:
                f.seek(int(io_off))
                raw = f.read(int(io_size))
                caption = None
                if to_off >= 0:
                    f.seek(int(to_off))
                    caption = f.read(int(to_size)).decode("utf-8", errors="replace").strip()
            img = Image.open(io.BytesIO(raw))
            img.load()
            return {"image": img.convert("RGB"), "label": -1, "caption": caption}
        except (OSError, SyntaxError, ValueError) as e:
            err = DataError(f"cannot read sample {j} of tar shard {path}: {e} (replace the shard, or set "
                            "data.skip_corrupt=true to skip unreadable samples with a warning)")
            if not self.skip_corrupt:
                raise err from e
            _log.warning("skipping unreadable sample: %s", err)
            return None


class PretrainDataset(Dataset):
    """M3I samples of one source: ``(view1, view2, geometry, mix, label, tokens, has_text)``.

    Args:
        source: a source (module docstring).
        transform: :class:`m3i.data.views.M3ITransform`.
        tokenizer: caption -> int64 ``(L,)`` (None: no text target anywhere; tokens are then ``(1,)`` zeros).
        targets: the global targets this source provides (subset of ``("label", "text")``); the others are
            marked absent (label ``-1``, ``has_text`` False) even if the source has them.

    Raises:
        ValueError: an unknown target name.
    """

    def __init__(self, source: Dataset, transform: Callable, tokenizer: Callable[[str], torch.Tensor] | None,
                 targets: Sequence[str] = ("label", "text")):
        bad = [t for t in targets if t not in TARGETS]
        if bad:
            raise ValueError(f"unknown target(s) {bad}; known: {', '.join(TARGETS)} (or an empty list)")
        self.source, self.transform, self.tokenizer = source, transform, tokenizer
        self.use_label, self.use_text = "label" in targets, "text" in targets and tokenizer is not None
        self._empty = torch.zeros(tokenizer.context_length if tokenizer is not None else 1, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        item = self.source[i]
        if item is None:
            return None
        view1, view2, geometry, mix = self.transform(item["image"])
        label = item["label"] if self.use_label and item["label"] is not None else -1
        caption = item.get("caption") if self.use_text else None
        tokens = self.tokenizer(caption) if caption else self._empty
        return view1, view2, geometry, mix, torch.tensor(label, dtype=torch.int64), tokens, torch.tensor(bool(caption))


class WeightedSourceSampler(ResumableBatchSampler):
    """Resumable batches from a ``ConcatDataset`` of sources, each epoch a weighted mixture.

    Epoch ``e`` draws ``round(w_s * epoch_size)`` samples from source ``s`` (``w`` normalised): the source's
    indices in an order seeded by ``(seed, e, s)``, cycled when more are needed than it holds, then the whole
    list shuffled by ``(seed, e)`` and split over ranks as :class:`repro_shared.data.ResumableBatchSampler`.

    Args:
        sizes: length of each source; weights: relative sampling weights (None: proportional to size).
        epoch_size: samples per epoch (default the total size).
        batch_size, seed, drop_last, rank, world_size: as the base class.

    Raises:
        ValueError: a negative weight, all weights zero, or an empty source with a positive weight.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None = None, *, batch_size: int,
                 epoch_size: int | None = None, seed: int = 0, drop_last: bool = True, rank: int | None = None,
                 world_size: int | None = None):
        w = np.asarray(sizes if weights is None else weights, dtype=np.float64)
        if len(w) != len(sizes) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"source weights must be {len(sizes)} non-negative numbers with a positive sum, "
                             f"got {weights}")
        if any(n == 0 and wi > 0 for n, wi in zip(sizes, w)):
            raise ValueError(f"a source with a positive weight is empty (sizes {list(sizes)})")
        total = int(epoch_size or sum(sizes))
        counts = np.floor(w / w.sum() * total).astype(int)
        counts[np.argmax(w)] += total - counts.sum()  # rounding remainder to the heaviest source
        self.sizes, self.counts = [int(n) for n in sizes], counts.tolist()
        self.offsets = np.cumsum([0] + self.sizes[:-1]).tolist()
        super().__init__(total, batch_size, seed=seed, shuffle=True, drop_last=drop_last, rank=rank,
                         world_size=world_size)

    def epoch_order(self) -> list[int]:
        parts = []
        for s, (n, c, off) in enumerate(zip(self.sizes, self.counts, self.offsets)):
            if c == 0:
                continue
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, s))
            reps = -(-c // n)
            idx = torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:c]
            parts.append(idx + off)
        order = torch.cat(parts)
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        return order[torch.randperm(len(order), generator=g)].tolist()

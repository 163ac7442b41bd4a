"""COCO-format detection data through pycocotools (COCO 2017, search splits, embedded shapes).

Labels are contiguous 0..K-1 in sorted category-id order (no background index); ``cat_ids`` maps
them back for COCOeval. Crowd boxes and boxes under 1 px are dropped in training (mmdet ignores
crowd boxes with ``ignore_iof_thr=-1``); training skips images without boxes (``filter_empty_gt``).
An unreadable image is an error naming the file, or with ``skip_corrupt`` a warning and ``None``
(dropped by :class:`repro_shared.data.SkipNoneCollate`; the engine counts them per epoch).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import random
from pathlib import Path

import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from repro_shared.data import DataError, load_image

COCO_LAYOUT = "<root>/annotations/instances_<split>2017.json with the images in <root>/<split>2017/"
_log = logging.getLogger("param_ap_loss.data")


class CocoDetection(Dataset):
    """Images + boxes of a COCO instances file.

    Item: image (3, H, W) float (in [0, 1] before photometric augmentation), target {boxes (n, 4) xyxy in
    pixels, labels (n,) 0..K-1, image_id ()}; ``None`` for an unreadable image when ``skip_corrupt``.

    Raises:
        FileNotFoundError: the annotation file or the image folder is missing (names it and the layout).
        repro_shared.data.DataError: the annotation file is not a COCO instances JSON, or an image cannot be
            read (names the file; images only: unless ``skip_corrupt``).
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, transforms=None, train: bool = False,
                 skip_corrupt: bool = False):
        image_dir, ann_file = Path(image_dir), Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {ann_file} not found; expected the COCO layout {COCO_LAYOUT}")
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder {image_dir} not found; expected the COCO layout {COCO_LAYOUT}")
        self.image_dir, self.transforms, self.train, self.skip_corrupt = image_dir, transforms, train, skip_corrupt
        self.coco = load_coco(ann_file)
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        ids = sorted(self.coco.getImgIds())
        if train:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1
                                         for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=i)))]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        img_id = self.ids[idx]
        info = self.coco.loadImgs(img_id)[0]
        try:
            image = load_image(self.image_dir / info["file_name"])
        except DataError as e:
            if not self.skip_corrupt:
                raise
            _log.warning("skipping unreadable image (data.skip_corrupt=true): %s", e.reason)
            return None
        anns = [a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id))
                if not a.get("iscrowd", 0) and a["bbox"][2] >= 1 and a["bbox"][3] >= 1]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(info["height"], info["width"])),
                  "labels": labels}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, {"boxes": target["boxes"].as_subclass(torch.Tensor).float(), "labels": target["labels"],
                       "image_id": torch.tensor(img_id)}


def load_coco(ann_file: str | Path) -> COCO:
    """pycocotools ``COCO`` index of an instances file, quietly.

    Raises:
        repro_shared.data.DataError: the file is not valid JSON (truncated download, ...) or lacks one of the
            ``images`` / ``annotations`` / ``categories`` lists of a COCO instances file; names the file.
    """
    try:
        data = json.loads(Path(ann_file).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"COCO annotation file {ann_file} is not valid JSON ({e}); it is probably truncated or "
                        "corrupt: download or regenerate it") from e
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or k not in data]
    if missing:
        raise DataError(f"COCO annotation file {ann_file} is not a COCO instances file: it has no "
                        f"{', '.join(repr(k) for k in missing)} list; expected the layout {COCO_LAYOUT}")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def collate(batch):
    """List of (image, target) -> (list of images, list of targets)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def make_search_split(ann_file: str | Path, out_dir: str | Path, num_val: int = 5000, seed: int = 0,
                      prefix: str = "search") -> tuple[Path, Path]:
    """Deterministic random split of a COCO train file into ``<prefix>_train2017.json`` /
    ``<prefix>_val2017.json`` (the official search split is unpublished; spec §4)."""
    data = json.loads(Path(ann_file).read_text())
    ids = sorted(im["id"] for im in data["images"])
    if num_val >= len(ids):
        raise ValueError(f"num_val={num_val} must be smaller than the {len(ids)} images of {ann_file}")
    rng = random.Random(seed)
    val = set(rng.sample(ids, num_val))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, keep in (("train", lambda i: i not in val), ("val", lambda i: i in val)):
        sub = dict(data)
        sub["images"] = [im for im in data["images"] if keep(im["id"])]
        sub["annotations"] = [a for a in data["annotations"] if keep(a["image_id"])]
        path = out_dir / f"{prefix}_{name}2017.json"
        path.write_text(json.dumps(sub))
        paths.append(path)
    return paths[0], paths[1]

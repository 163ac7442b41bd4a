"""COCO-format detection data (real COCO 2017 or the embedded procedural shapes), the official training
augmentation, and COCO bbox evaluation.

Box conventions, stated once: COCO annotations and COCO results are ``[x, y, w, h]`` (top-left corner, width,
height, pixels); everything inside this package is ``(x0, y0, x1, y1)`` (torchvision's ``xyxy``). The two
conversions are :func:`coco_xywh_to_xyxy` (reading) and :func:`xyxy_to_coco_xywh` (writing results).

Training augmentation of the official DINO recipe (``mamba_training_recipe.py``, spec §3.4): horizontal flip
(p 0.5), then with probability 1/2 either (a) nothing here, or (b) resize the shorter side to one of
400/500/600 (long side <= 4200, ratio kept) and take a random crop whose height and width are drawn from
[384, 600] (``absolute_range``); boxes are clipped to the crop and empty ones dropped (``allow_negative_crop``).
The final multi-scale resize of both branches (shorter side one of 480, 512, ..., 800, long side <= 1333) is
done by the torchvision detector's transform (``min_size`` tuple, drawn per batch in training).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from repro_shared import dist
from repro_shared.data import DataError, load_image

__all__ = ["CocoBoxes", "DetrCropAugment", "coco_xywh_to_xyxy", "xyxy_to_coco_xywh", "hflip_boxes", "collate",
           "coco_bbox_eval"]

_log = logging.getLogger("defocus.data")


def coco_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(K, 4) COCO ``[x, y, w, h]`` -> (K, 4) ``[x0, y0, x1, y1]`` = ``[x, y, x + w, y + h]``."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def xyxy_to_coco_xywh(boxes: Tensor) -> Tensor:
    """(K, 4) ``[x0, y0, x1, y1]`` -> (K, 4) COCO ``[x, y, w, h]`` = ``[x0, y0, x1 - x0, y1 - y0]``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def hflip_boxes(boxes: Tensor, width: int) -> Tensor:
    """Mirror (K, 4) xyxy boxes in an image of ``width`` pixels: x0' = W - x1, x1' = W - x0 (y unchanged)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([width - x1, y0, width - x0, y1], dim=-1)


class DetrCropAugment:
    """Branch (b) of the official augmentation, applied with probability ``prob`` (module docstring).

    ``__call__(img (3, H, W), boxes (K, 4) xyxy, labels (K,))`` -> the same three, cropped. Random numbers come
    from the global torch RNG (seeded per sample by the resumable loader).
    """

    def __init__(self, prob: float = 0.5, short_sides=(400, 500, 600), max_long: int = 4200,
                 crop_range=(384, 600)):
        self.prob, self.short_sides, self.max_long, self.crop_range = prob, tuple(short_sides), max_long, crop_range

    def __call__(self, img: Tensor, boxes: Tensor, labels: Tensor):
        if not self.prob or torch.rand(()) >= self.prob:
            return img, boxes, labels
        h, w = img.shape[-2:]
        short = self.short_sides[int(torch.randint(len(self.short_sides), ()))]
        scale = min(short / min(h, w), self.max_long / max(h, w))
        nh, nw = round(h * scale), round(w * scale)
        img = TF.resize(img, [nh, nw], antialias=True)
        boxes = boxes * torch.tensor([nw / w, nh / h, nw / w, nh / h])
        lo, hi = self.crop_range
        ch = int(torch.randint(min(nh, lo), min(nh, hi) + 1, ()))
        cw = int(torch.randint(min(nw, lo), min(nw, hi) + 1, ()))
        top = int(torch.randint(0, nh - ch + 1, ()))
        left = int(torch.randint(0, nw - cw + 1, ()))
        return self.crop(img, boxes, labels, top, left, ch, cw)

    @staticmethod
    def crop(img: Tensor, boxes: Tensor, labels: Tensor, top: int, left: int, height: int, width: int):
        """Crop rows ``top:top+height`` and columns ``left:left+width``; shift boxes by (-left, -top), clip them to
        the crop and drop boxes left with no area."""
        img = img[..., top:top + height, left:left + width]
        shift = torch.tensor([left, top, left, top], dtype=boxes.dtype)
        limit = torch.tensor([width, height, width, height], dtype=boxes.dtype)
        boxes = torch.minimum((boxes - shift).clamp(min=0), limit)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return img, boxes[keep], labels[keep]


class CocoBoxes(Dataset):
    """Items: image float (3, H, W) in [0, 1], target {"boxes" (K, 4) xyxy, "labels" (K,) in 1..C, "image_id"}.

    Category ids are mapped to contiguous labels 1..C (0 = background for torchvision detectors); crowd boxes
    and empty boxes are skipped; images without boxes are kept (official ``filter_empty_gt=False``).

    Args:
        flip_prob: random horizontal flip (training).
        crop: :class:`DetrCropAugment` or None (training).
        skip_corrupt: an unreadable image gives ``None`` (with a warning naming it) instead of a ``DataError``;
            use ``SkipNoneCollate(collate)``.

    Raises:
        FileNotFoundError: the image folder or the annotation file is missing (path and layout named).
    """

    LAYOUT = "<root>/{train2017,val2017}/*.jpg and <root>/annotations/instances_{train2017,val2017}.json"

    def __init__(self, image_dir: str | Path, ann_file: str | Path, flip_prob: float = 0.0,
                 crop: DetrCropAugment | None = None, skip_corrupt: bool = False):
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder {self.image_dir} does not exist; expected layout {self.LAYOUT}"
                                    " (set data.root=/path/to/coco)")
        if not Path(ann_file).is_file():
            raise FileNotFoundError(f"COCO annotation file {ann_file} does not exist; expected layout {self.LAYOUT}")
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann_file))
        self.ids = sorted(self.coco.imgs)
        self.cat_ids = sorted(self.coco.cats)
        self.label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.flip_prob, self.crop, self.skip_corrupt = flip_prob, crop, skip_corrupt

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img_id = self.ids[i]
        path = self.image_dir / self.coco.imgs[img_id]["file_name"]
        try:
            img = TF.to_dtype(TF.pil_to_tensor(load_image(path)), torch.float32, scale=True)
        except DataError as e:
            if not self.skip_corrupt:
                raise
            _log.warning("skipping unreadable sample %d: %s", i, e.reason)
            return None
        anns = [a for a in self.coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        boxes = coco_xywh_to_xyxy(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4))
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], labels[keep]
        if self.flip_prob and torch.rand(()) < self.flip_prob:
            img, boxes = TF.horizontal_flip(img), hflip_boxes(boxes, img.shape[-1])
        if self.crop is not None:
            img, boxes, labels = self.crop(img, boxes, labels)
        return img, {"boxes": boxes, "labels": labels, "image_id": img_id}


def collate(batch):
    """List of (image, target) -> (tuple of images, tuple of targets) (torchvision detector inputs)."""
    return tuple(zip(*batch))


@torch.no_grad()
def coco_bbox_eval(model, loader, dataset: CocoBoxes, device) -> dict:
    """COCO bbox AP / AP50 / AP75 (pycocotools, 100 detections) of a torchvision detector (xyxy outputs).

    Under a process group each rank predicts its share of ``loader`` and the detections are gathered (an
    image seen twice, from the sampler's padding, counts once).
    """
    model.eval()
    per_image: dict[int, list] = {}
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for out, tgt in zip(outputs, targets):
            xywh = xyxy_to_coco_xywh(out["boxes"].float().cpu())
            per_image[tgt["image_id"]] = [
                {"image_id": tgt["image_id"], "category_id": dataset.cat_ids[int(label) - 1], "bbox": box,
                 "score": float(score)}
                for box, score, label in zip(xywh.tolist(), out["scores"].cpu().tolist(), out["labels"].cpu().tolist())]
    if dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        torch.distributed.all_gather_object(gathered, per_image)
        per_image = {k: v for part in reversed(gathered) for k, v in part.items()}
    results = [r for dets in per_image.values() for r in dets]
    if not results:
        return {"bbox_AP": 0.0, "bbox_AP50": 0.0, "bbox_AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dets = dataset.coco.loadRes(results)
        ev = COCOeval(dataset.coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(100 * ev.stats[i]) for i, name in enumerate(("bbox_AP", "bbox_AP50", "bbox_AP75"))}

"""COCO-format detection data (real COCO 2017 or the embedded procedural shapes) and COCO bbox evaluation."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import Dataset
from torchvision.transforms.functional import hflip, pil_to_tensor

__all__ = ["CocoBoxes", "collate", "coco_bbox_eval"]


class CocoBoxes(Dataset):
    """Items: image float (3, H, W) in [0, 1], target {"boxes" (K, 4) xyxy, "labels" (K,) in 1..C, "image_id"}.

    Category ids are mapped to contiguous labels 1..C (0 = background for torchvision detectors);
    crowd boxes and empty boxes are skipped. ``flip_prob`` applies a random horizontal flip (training).
    """

    def __init__(self, image_dir: str | Path, ann_file: str | Path, flip_prob: float = 0.0):
        self.image_dir = Path(image_dir)
        if not Path(ann_file).is_file():
            raise FileNotFoundError(f"COCO annotation file {ann_file} does not exist (expected instances_<split>.json)")
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann_file))
        self.ids = sorted(self.coco.imgs)
        self.cat_ids = sorted(self.coco.cats)
        self.label_of = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.flip_prob = flip_prob

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img_id = self.ids[i]
        info = self.coco.imgs[img_id]
        img = pil_to_tensor(Image.open(self.image_dir / info["file_name"]).convert("RGB")).float() / 255.0
        anns = [a for a in self.coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([self.label_of[a["category_id"]] for a in anns], dtype=torch.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[keep], labels[keep]
        if self.flip_prob and torch.rand(()) < self.flip_prob:
            img = hflip(img)
            w = img.shape[-1]
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return img, {"boxes": boxes, "labels": labels, "image_id": img_id}


def collate(batch):
    return tuple(zip(*batch))


@torch.no_grad()
def coco_bbox_eval(model, loader, dataset: CocoBoxes, device) -> dict:
    """COCO bbox AP / AP50 / AP75 (pycocotools, 100 detections) of a torchvision detector."""
    model.eval()
    results = []
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for out, tgt in zip(outputs, targets):
            for box, score, label in zip(out["boxes"].cpu(), out["scores"].cpu(), out["labels"].cpu()):
                x0, y0, x1, y1 = box.tolist()
                results.append({"image_id": tgt["image_id"], "category_id": dataset.cat_ids[int(label) - 1],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
    if not results:
        return {"bbox_AP": 0.0, "bbox_AP50": 0.0, "bbox_AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dets = dataset.coco.loadRes(results)
        ev = COCOeval(dataset.coco, dets, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"bbox_AP": 100 * ev.stats[0], "bbox_AP50": 100 * ev.stats[1], "bbox_AP75": 100 * ev.stats[2]}

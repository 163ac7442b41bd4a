"""Dense-task metrics: COCO AP through pycocotools, mIoU from a confusion matrix (mmseg's definition)."""

from __future__ import annotations

import contextlib
import io
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..guards import check_finite_inputs

__all__ = ["coco_evaluate", "detections_to_coco", "confusion_matrix", "miou", "evaluate_segmentation"]

_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def detections_to_coco(outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int],
                       cat_ids: Sequence[int], mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """torchvision detector outputs -> COCO result records (``bbox`` xywh; ``segmentation`` RLE when masks exist).

    Args:
        outputs: per image ``{boxes (K, 4) xyxy, scores (K,), labels (K,) in 1..C, masks (K, 1, H, W) probs}``.
        image_ids: the COCO image id of each output.
        cat_ids: COCO category id of label ``l`` is ``cat_ids[l - 1]``.
        mask_threshold: probability above which a pixel belongs to the mask.
    """
    from pycocotools import mask as mask_utils

    records = []
    for out, image_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().float().cpu()
        check_finite_inputs("COCO evaluation", boxes=boxes, scores=out["scores"])
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        scores, labels = out["scores"].tolist(), out["labels"].tolist()
        rles = None
        if "masks" in out:
            binary = (out["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for k in range(len(scores)):
            rec = {"image_id": int(image_id), "category_id": int(cat_ids[labels[k] - 1]), "bbox": xywh[k],
                   "score": float(scores[k])}
            if rles is not None:
                rle = rles[k]
                rec["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            records.append(rec)
    return records


@torch.no_grad()
def coco_evaluate(model: nn.Module, loader: Iterable, coco_gt: Any, cat_ids: Sequence[int], device: torch.device,
                  iou_types: Sequence[str] = ("bbox", "segm")) -> dict[str, float]:
    """COCO AP of a torchvision detector on a loader of ``(images, targets)`` (see ``detection_collate``).

    Returns:
        ``{"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_APs", "bbox_APm", "bbox_APl", "segm_AP", ...}`` in percent
        (pycocotools ``stats[0:6]`` x 100); 0.0 when the model detected nothing.
    """
    from pycocotools.cocoeval import COCOeval

    was_training = model.training
    model.eval()
    records: list[dict[str, Any]] = []
    image_ids: list[int] = []
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        ids = [int(t["image_id"]) for t in targets]
        image_ids += ids
        records += detections_to_coco(outputs, ids, cat_ids)
    model.train(was_training)
    results: dict[str, float] = {}
    for iou_type in iou_types:
        if not records:
            results.update({f"{iou_type}_{n}": 0.0 for n in _STAT_NAMES})
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            dt = coco_gt.loadRes(records)
            ev = COCOeval(coco_gt, dt, iou_type)
            ev.params.imgIds = sorted(set(image_ids))
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        results.update({f"{iou_type}_{n}": max(float(v), 0.0) * 100.0 for n, v in zip(_STAT_NAMES, ev.stats[:6])})
    return results


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """``(K, K)`` int64 counts, rows = ground truth, columns = prediction; ``ignore_index`` pixels are skipped.

    Args:
        pred, target: int label maps of the same shape (any device); targets outside ``0..K-1`` other than
            ``ignore_index`` raise.
    """
    valid = target != ignore_index
    t, p = target[valid].long(), pred[valid].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target labels must be in 0..{num_classes - 1} or {ignore_index}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def miou(conf: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean IoU over classes with a non-empty union (mmseg's nan-mean) and the per-class IoU (NaN where empty).

    ``IoU_k = TP_k / (TP_k + FP_k + FN_k)``, from a :func:`confusion_matrix`. Returned in [0, 1].
    """
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return float(np.nanmean(iou.numpy())) if bool((union > 0).any()) else 0.0, iou


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device,
                          ignore_index: int = 255) -> dict[str, float]:
    """``{"mIoU", "aAcc"}`` in percent over a loader of ``(images (B, 3, H, W), labels (B, H, W))``.

    ``model(images)["out"]`` gives the logits (:class:`repro_shared.dense.UperNetSegmentor`); whole-image
    inference (the sliding window of the ADE20K recipe is the caller's choice of crops).
    """
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for images, labels in loader:
        logits = model(images.to(device))["out"]
        check_finite_inputs("segmentation evaluation", logits=logits)
        conf += confusion_matrix(logits.argmax(1), labels.to(device), num_classes, ignore_index)
    model.train(was_training)
    m, _ = miou(conf)
    acc = float(conf.diag().sum()) / max(float(conf.sum()), 1.0)
    return {"mIoU": 100.0 * m, "aAcc": 100.0 * acc}

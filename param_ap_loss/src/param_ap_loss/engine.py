"""Training and COCO evaluation loops (nothing else)."""

from __future__ import annotations

import contextlib
import io
import math
from typing import Iterable

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval

from repro_shared import dist

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def warmup_step_lambda(warmup_iters: int, warmup_ratio: float, milestones_iters: Iterable[int], gamma: float = 0.1):
    """mmdet schedule as a LambdaLR factor of the iteration: linear warmup from ``warmup_ratio``, then
    x ``gamma`` at each milestone (iterations)."""
    milestones = sorted(int(m) for m in milestones_iters)

    def factor(it: int) -> float:
        f = gamma ** sum(it >= m for m in milestones)
        if it < warmup_iters:
            k = it / warmup_iters
            f *= warmup_ratio + (1 - warmup_ratio) * k
        return f

    return factor


class TrainingFailed(RuntimeError):
    """The loss stayed at exactly 1.0 or NaN for more than ``fail_patience`` iterations (search guard)."""


def train_one_epoch(model, loader, optimizer, scheduler, device, *, epoch: int, step: int, log=None, metrics=None,
                    log_every: int = 20, max_iters: int | None = None, fail_patience: int | None = None,
                    fail_count: list[int] | None = None) -> int:
    """One pass over ``loader``; returns the global step. Sums the loss dict; LR scheduler steps per
    iteration. ``fail_patience``: raise :class:`TrainingFailed` once the count of iterations whose loss
    is exactly 1.0 or NaN exceeds it (official search guard; ``fail_count`` carries the count)."""
    model.train()
    fail_count = fail_count if fail_count is not None else [0]
    for images, targets in loader:
        if max_iters is not None and step >= max_iters:
            break
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if fail_patience is not None:
            value = loss.detach().item()
            if math.isnan(value) or abs(value - 1.0) < 1e-6:
                fail_count[0] += 1
            if fail_count[0] > fail_patience:
                raise TrainingFailed(f"loss stuck at 1.0/NaN for {fail_count[0]} iterations")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        if step % log_every == 0:
            row = {k: float(v.detach()) for k, v in loss_dict.items()}
            row.update(loss=float(loss.detach()), lr=optimizer.param_groups[0]["lr"], epoch=epoch)
            if metrics is not None:
                metrics.log(row, step=step)
            if log is not None:
                log.info("epoch %d step %d loss %.4f lr %.5f", epoch, step, row["loss"], row["lr"])
    return step


@torch.no_grad()
def predict(model, loader, device, cat_ids) -> list[dict]:
    """COCO-format detections of this rank's share of ``loader`` (label -> category id, xywh boxes)."""
    model.eval()
    out = []
    for images, targets in loader:
        images = [im.to(device) for im in images]
        dets = model(images)
        for det, tgt in zip(dets, targets):
            boxes = det["boxes"].cpu()
            boxes[:, 2:] -= boxes[:, :2]
            for b, s, lab in zip(boxes.tolist(), det["scores"].cpu().tolist(), det["labels"].cpu().tolist()):
                out.append({"image_id": int(tgt["image_id"]), "category_id": int(cat_ids[lab]),
                            "bbox": [round(v, 3) for v in b], "score": round(s, 5)})
    return out


def coco_evaluate(coco_gt, detections: list[dict], image_ids: list[int] | None = None) -> dict[str, float]:
    """COCOeval bbox on ``detections``; returns AP, AP50, AP75, APs, APm, APl in percent (0 if empty)."""
    if not detections:
        return {k: 0.0 for k in COCO_METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.maximum(ev.stats[:6], 0.0) * 100
    return {k: float(v) for k, v in zip(COCO_METRICS, stats)}


def evaluate(model, loader, device, dataset) -> dict[str, float]:
    """Predict on every rank, gather on rank 0, COCOeval there; all ranks get the metrics."""
    dets = predict(model, loader, device, dataset.cat_ids)
    if dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        torch.distributed.all_gather_object(gathered, dets)
        # DistributedSampler pads by repeating images: keep each image's detections from one rank only
        owner: dict[int, int] = {}
        for r, part in enumerate(gathered):
            for d in part:
                owner.setdefault(d["image_id"], r)
        dets = [d for r, part in enumerate(gathered) for d in part if owner[d["image_id"]] == r]
        result = [coco_evaluate(dataset.coco, dets, dataset.ids) if dist.is_main() else None]
        torch.distributed.broadcast_object_list(result, src=0)
        return result[0]
    return coco_evaluate(dataset.coco, dets, dataset.ids)

"""Training and COCO evaluation loops (nothing else)."""

from __future__ import annotations

import contextlib
import io
from typing import Callable

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval

from repro_shared import dist
from repro_shared.data import seed_step
from repro_shared.guards import NonFiniteError, check_finite

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class TrainingFailed(RuntimeError):
    """The loss stayed at exactly 1.0 for more than ``fail_patience`` iterations (search guard)."""


def _stop_if_non_finite(loss_dict: dict | None, error: NonFiniteError | None, step: int, epoch: int) -> None:
    """Raise :class:`NonFiniteError` naming the step and the term when a loss term or a prediction is not
    finite. Every rank takes part in the same agreement (``check_finite``'s all-reduce), so all ranks stop
    together; the rank whose model raised reports the prediction it found."""
    if error is None:
        check_finite(loss_dict, step=step, epoch=epoch)
        return
    try:
        check_finite({"prediction": float("nan")}, step=step, epoch=epoch, what="prediction")
    except NonFiniteError:
        raise NonFiniteError(f"non-finite prediction at step {step} (epoch {epoch}): {error}; training stopped before "
                             "this step changed the weights (checkpoints already written are untouched). Lower the learning rate or enable gradient clipping "
                             "(train.clip_max_norm)") from error


def train_one_epoch(model, loader, optimizer, scheduler, device, *, epoch: int, step: int, seed: int = 0,
                    clip_max_norm: float = 0.0, log=None, metrics=None, log_every: int = 20,
                    max_iters: int | None = None, fail_patience: int | None = None,
                    fail_count: list[int] | None = None, on_step: Callable[[int, int], None] | None = None) -> int:
    """Train over the batches ``loader.start_batch ..`` of epoch ``epoch``; returns the global step.

    Args:
        loader: a :class:`repro_shared.data.ResumableLoader` already set to ``epoch``; yields
            (list of images (3, H, W), list of targets).
        step: optimizer steps done before this epoch part (the checkpoint's ``step``).
        seed: run seed; every step first calls ``seed_step(seed, epoch, batch index)`` so that all
            randomness of the step (RPN/RoI sampling, dropout) is a function of numbers a checkpoint holds.
        clip_max_norm: > 0 clips the global gradient norm (Deformable DETR: 0.1).
        fail_patience: raise :class:`TrainingFailed` once more than this many iterations had a loss of
            exactly 1.0 (official search guard; ``fail_count`` carries the count across epochs).
        on_step: called as ``on_step(step, epoch)`` after every optimizer step (checkpointing).

    Raises:
        NonFiniteError: at the first non-finite loss term or prediction, naming step and term, before the
            optimizer step (so the weights and the last checkpoint stay those of the last good step).
    """
    model.train()
    fail_count = fail_count if fail_count is not None else [0]
    nominal = loader.batch_sampler.batch_size
    params = [p for g in optimizer.param_groups for p in g["params"]]
    skipped = 0
    for i, (images, targets) in enumerate(loader, start=loader.start_batch):
        if max_iters is not None and step >= max_iters:
            break
        seed_step(seed, epoch, i)
        skipped += nominal - len(images)
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        try:
            loss_dict, error = model(images, targets), None
        except NonFiniteError as e:
            loss_dict, error = None, e
        _stop_if_non_finite(loss_dict, error, step, epoch)
        loss = sum(loss_dict.values())
        if fail_patience is not None:
            if abs(loss.detach().item() - 1.0) < 1e-6:
                fail_count[0] += 1
            if fail_count[0] > fail_patience:
                raise TrainingFailed(f"loss stuck at 1.0 for {fail_count[0]} iterations")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, clip_max_norm)
        optimizer.step()
        scheduler.step()
        step += 1
        if step % log_every == 0:
            row = {k: float(v.detach()) for k, v in loss_dict.items()}
            row.update(loss=float(loss.detach()), lr=optimizer.param_groups[0]["lr"], epoch=epoch)
            if metrics is not None:
                metrics.log(row, step=step)
            if log is not None:
                log.info("epoch %d step %d loss %.4f lr %.6f", epoch, step, row["loss"], row["lr"])
        if on_step is not None:
            on_step(step, epoch)
    if skipped and log is not None:
        log.warning("epoch %d: %d unreadable training images were skipped (data.skip_corrupt=true; "
                    "their paths are in the warnings above)", epoch, skipped)
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

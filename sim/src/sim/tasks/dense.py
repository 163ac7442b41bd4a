"""``sim-det`` (Mask R-CNN over ViTDet's simple feature pyramid, torchvision) and ``sim-seg`` (UperNet), on the
SiameseIM encoder, with ``repro_shared.dense``.

Adaptations (README): ViTDet's windowed attention and relative position bias are not built (global attention in
every block); LVIS is evaluated with pycocotools on its COCO-format JSON (not the LVIS API, no federated loss
or repeat-factor sampling); ADE20K uses random resize 0.5-2.0 of 2048x512, random 512 crop and flip (no
photometric distortion, no cat_max_ratio) and sliding-window inference (512 crop, stride 341).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from repro_shared import dist, run
from repro_shared.data import build_loader
from repro_shared.dense import (CocoInstanceDataset, SegmentationFolder, SegTrainTransform, TimmViTTrunk,
                                UperNetSegmentor, build_vitdet_maskrcnn, coco_evaluate, confusion_matrix,
                                detection_collate, miou, normalize_pair, segmentation_loss)
from repro_shared.finetune import param_groups_layer_decay
from repro_shared.guards import check_finite_inputs
from repro_shared.toydata import make_shapes_dataset
from repro_shared.train import StepCheckpointer

from ..engine import train_dense_epoch
from ..models import build_classifier
from .common import load_init

__all__ = ["run_detection", "run_segmentation", "multistep_lr", "poly_lr", "slide_inference"]


def multistep_lr(step: int, total: int, base: float, warmup_iters: int, warmup_factor: float,
                 milestones: tuple[float, ...]) -> float:
    """detectron2 ``WarmupParamScheduler(MultiStepParamScheduler)``: linear warmup from ``warmup_factor * base``
    over ``warmup_iters``, then x0.1 at each milestone (fractions of ``total``; ViTDet 100 ep: 163889/184375,
    177546/184375)."""
    lr = base * 0.1 ** sum(step >= m * total for m in milestones)
    if step < warmup_iters:
        alpha = step / warmup_iters
        lr *= warmup_factor * (1 - alpha) + alpha
    return lr


def poly_lr(step: int, total: int, base: float, warmup_iters: int, warmup_ratio: float, power: float = 1.0,
            min_lr: float = 0.0) -> float:
    """mmseg ``PolyLR`` with linear warmup: ``(base - min) (1 - step/total)^power + min``, the first
    ``warmup_iters`` scaled linearly from ``warmup_ratio``."""
    lr = (base - min_lr) * (1 - min(step, total) / total) ** power + min_lr
    if step < warmup_iters:
        k = (1 - step / warmup_iters) * (1 - warmup_ratio)
        lr *= 1 - k
    return lr


def _backbone_vit(cfg: DictConfig, init_path, log, *, init_values=None):
    """The encoder as a timm ViT at the pre-training image size (its position table is resized at run time)."""
    vit = build_classifier(cfg.model.variant, 0, img_size=int(cfg.model.pretrain_img_size),
                           drop_path_rate=float(cfg.model.drop_path_rate), init_values=init_values)
    if init_path is not None:
        from ..convert import load_encoder_weights

        log.info("init encoder from %s:\n%s", init_path,
                 load_encoder_weights(vit, init_path, trust=bool(cfg.get("trust_checkpoint", False)),
                                      may_miss=(".ls1.", ".ls2.")))
    else:
        load_init(vit, None, cfg, log)
    return vit


def _optimizer(model: torch.nn.Module, cfg: DictConfig, prefix: str) -> torch.optim.Optimizer:
    t = cfg.train
    groups = param_groups_layer_decay(model, float(t.weight_decay), float(t.layer_decay), prefix=prefix,
                                      no_weight_decay=("pos_embed", "cls_token"))
    return torch.optim.AdamW(groups, lr=float(t.lr), betas=(0.9, 0.999))


def _shapes(cfg: DictConfig, split: str, n: int):
    root = Path(str(cfg.data.root or Path(run.planned_output_dir(cfg) or ".") / "shapes"))
    return make_shapes_dataset(root, split, num_images=n, image_size=int(cfg.data.image_size), seed=0,
                               max_objects=int(cfg.data.max_objects))


def _loop(cfg: DictConfig, ctx, model, optimizer, loader, loss_fn, lr_at, evaluate) -> dict:
    """Train for ``train.epochs`` epochs with step checkpoints / exact resume, evaluate at the end."""
    t, log = cfg.train, ctx.log
    iters = len(loader)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.precision == "fp16")
    wrapped = dist.wrap_model(model, "ddp" if ctx.dist.world_size > 1 else "none")
    results: dict = {}
    ckpt = StepCheckpointer(ctx.checkpoint_dir, model=model, optimizer=optimizer, scaler=scaler, iters=iters, every=int(t.checkpoint_every),
                        keep_last=int(t.keep_last), config=cfg, extra=lambda: {"results": results})
    step, stats, extra = ckpt.restore(t.resume, log)
    results = extra.get("results", results)
    start_epoch, start_batch = divmod(step, iters)
    for epoch in range(start_epoch, int(t.epochs)):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        tr = train_dense_epoch(wrapped, loader, optimizer, scaler, loss_fn, lr_at, epoch=epoch, device=ctx.device,
                               seed=int(cfg.seed), precision=cfg.precision, clip_grad=t.get("clip_grad"),
                               metrics=ctx.metrics, log=log, log_every=int(t.log_every),
                               stats=stats if epoch == start_epoch else None, after_step=ckpt.after_step)
        rec = {f"train_{k}": v for k, v in tr.items()} | {"epoch": epoch}
        results.update(rec)
        ctx.metrics.log(rec, step=(epoch + 1) * iters)
        log.info("epoch %d | loss %.4f", epoch, tr["loss"])
        ckpt.save((epoch + 1) * iters, None)
    results.update(evaluate(model))
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    return results


def _det_loss(model, batch, device) -> dict[str, torch.Tensor]:
    images, targets = batch
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in tt.items()} for tt in targets]
    return model(images, targets)


def run_detection(cfg: DictConfig) -> dict:
    """``sim-det``: train and evaluate Mask R-CNN (box and mask AP with pycocotools) on the shapes (default),
    COCO or LVIS (``data.name``)."""
    init_path = run.check_required_init(cfg.get("init"))
    ctx = run.setup_run(cfg, name="sim")
    d, m = cfg.data, cfg.model
    if d.name == "shapes":
        tr_paths, va_paths = _shapes(cfg, "train", int(d.num_train)), _shapes(cfg, "val", int(d.num_val))
        train = CocoInstanceDataset(tr_paths.image_dir, tr_paths.ann_file, train=True)
        val = CocoInstanceDataset(va_paths.image_dir, va_paths.ann_file)
    elif d.name in ("coco", "lvis"):
        root = run.data_root(d, f"{d.train_images}/, {d.val_images}/ and the annotation JSONs {d.train_ann}, {d.val_ann}")
        train = CocoInstanceDataset(root / d.train_images, root / d.train_ann, train=True, key="data.root")
        val = CocoInstanceDataset(root / d.val_images, root / d.val_ann, key="data.root")
    else:
        raise ValueError(f"unknown data.name {d.name!r}; known: shapes, coco, lvis")
    trunk = TimmViTTrunk(_backbone_vit(cfg, init_path, ctx.log))
    model = build_vitdet_maskrcnn(trunk, len(train.cat_ids) + 1, min_size=int(d.min_size), max_size=int(d.max_size),
                                  out_channels=int(m.fpn_channels), head_channels=int(m.head_channels),
                                  fc_dim=int(m.fc_dim), anchor_sizes=tuple(m.anchor_sizes),
                                  box_detections_per_img=int(m.detections_per_img),
                                  box_score_thresh=float(m.score_thresh),
                                  rpn_pre_nms_top_n_train=int(m.rpn_pre_nms_top_n[0]),
                                  rpn_pre_nms_top_n_test=int(m.rpn_pre_nms_top_n[1]),
                                  rpn_post_nms_top_n_train=int(m.rpn_post_nms_top_n[0]),
                                  rpn_post_nms_top_n_test=int(m.rpn_post_nms_top_n[1]),
                                  rpn_batch_size_per_image=int(m.rpn_batch_size_per_image),
                                  box_batch_size_per_image=int(m.roi_batch_size_per_image)).to(ctx.device)
    loader = build_loader(train, batch_size=int(cfg.train.batch_size), seed=int(cfg.seed),
                          num_workers=int(d.num_workers), collate_fn=detection_collate)
    total = len(loader) * int(cfg.train.epochs)
    t = cfg.train
    lr_at = lambda s: multistep_lr(s, total, float(t.lr), int(t.warmup_iters), float(t.warmup_factor),
                                   tuple(t.milestones))
    vloader = DataLoader(val, batch_size=int(cfg.eval.batch_size), collate_fn=detection_collate)
    evaluate = lambda mdl: coco_evaluate(mdl, vloader, val.coco, val.cat_ids, ctx.device)
    return _loop(cfg, ctx, model, _optimizer(model, cfg, "backbone.trunk.vit."), loader, _det_loss, lr_at, evaluate)


@torch.no_grad()
def slide_inference(model, image: torch.Tensor, num_classes: int, crop: int, stride: int) -> torch.Tensor:
    """mmseg sliding-window inference: logits averaged over ``crop`` windows every ``stride`` pixels (padded
    windows at the borders), ``(B, 3, H, W) -> (B, K, H, W)``."""
    B, _, H, W = image.shape
    rows = max(math.ceil((H - crop) / stride), 0) + 1
    cols = max(math.ceil((W - crop) / stride), 0) + 1
    out = image.new_zeros(B, num_classes, H, W)
    count = image.new_zeros(1, 1, H, W)
    for r in range(rows):
        for c in range(cols):
            y1, x1 = min(r * stride, max(H - crop, 0)), min(c * stride, max(W - crop, 0))
            y2, x2 = min(y1 + crop, H), min(x1 + crop, W)
            win = image[:, :, y1:y2, x1:x2]
            pad = (0, crop - win.shape[-1], 0, crop - win.shape[-2])
            logits = model(F.pad(win, pad))["out"][:, :, : y2 - y1, : x2 - x1]
            out[:, :, y1:y2, x1:x2] += logits
            count[:, :, y1:y2, x1:x2] += 1
    return out / count


def run_segmentation(cfg: DictConfig) -> dict:
    """``sim-seg``: train and evaluate UperNet (mIoU, single scale) on the shapes' label maps (default) or
    ADE20K (``data.root`` with ``images/{training,validation}``, ``annotations/{training,validation}``)."""
    init_path = run.check_required_init(cfg.get("init"))
    ctx = run.setup_run(cfg, name="sim")
    d, m = cfg.data, cfg.model
    crop = int(d.crop_size)
    train_tf = SegTrainTransform(tuple(d.scale), tuple(d.ratio_range), crop)
    if d.name == "shapes":
        tr_paths, va_paths = _shapes(cfg, "train", int(d.num_train)), _shapes(cfg, "val", int(d.num_val))
        train = SegmentationFolder(tr_paths.image_dir, tr_paths.semseg_dir, transform=train_tf)
        val = SegmentationFolder(va_paths.image_dir, va_paths.semseg_dir, transform=normalize_pair)
    elif d.name == "ade20k":
        root = run.data_root(d, "images/{training,validation}/ and annotations/{training,validation}/ (ADEChallengeData2016)")
        train = SegmentationFolder(root / "images/training", root / "annotations/training", reduce_zero_label=True,
                                   transform=train_tf, key="data.root")
        val = SegmentationFolder(root / "images/validation", root / "annotations/validation", reduce_zero_label=True,
                                 transform=normalize_pair, key="data.root")
    else:
        raise ValueError(f"unknown data.name {d.name!r}; known: shapes, ade20k")
    num_classes = int(d.num_classes)
    vit = _backbone_vit(cfg, init_path, ctx.log, init_values=m.get("init_values"))
    model = UperNetSegmentor(TimmViTTrunk(vit, out_indices=tuple(m.out_indices)), num_classes,
                             channels=int(m.channels), aux_channels=int(m.aux_channels)).to(ctx.device)
    loader = build_loader(train, batch_size=int(cfg.train.batch_size), seed=int(cfg.seed), num_workers=int(d.num_workers))
    total = len(loader) * int(cfg.train.epochs)
    t = cfg.train
    lr_at = lambda s: poly_lr(s, total, float(t.lr), int(t.warmup_iters), float(t.warmup_ratio))
    loss_fn = lambda mdl, b, dev: {k: v for k, v in segmentation_loss(mdl(b[0].to(dev)), b[1].to(dev),
                                                                       aux_weight=float(m.aux_weight)).items()
                                   if k != "loss"}

    def evaluate(mdl) -> dict[str, Any]:
        mdl.eval()
        conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        for i in range(len(val)):
            img, lab = val[i]
            logits = slide_inference(mdl, img[None].to(ctx.device), num_classes, crop, int(cfg.eval.stride))
            check_finite_inputs("segmentation evaluation", logits=logits)
            conf += confusion_matrix(logits.argmax(1)[0], lab.to(ctx.device), num_classes)
        mdl.train()
        m_iou, _ = miou(conf)
        return {"mIoU": 100.0 * m_iou, "aAcc": 100.0 * float(conf.diag().sum()) / max(float(conf.sum()), 1.0)}

    return _loop(cfg, ctx, model, _optimizer(model, cfg, "trunk.vit."), loader, loss_fn, lr_at, evaluate)

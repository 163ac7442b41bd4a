"""``addp-det`` (COCO Mask R-CNN, ViTDet recipe) and ``addp-seg`` (ADE20K UperNet, MAE/BEiT recipe) on the ADDP
encoder, built from ``repro_shared.dense`` (torchvision Mask R-CNN over ViTDet's simple feature pyramid;
segmentation-models-pytorch's UPerNet decoder) and timm's schedulers. The official ADDP repository has no
detection or segmentation code; the recipes are the standard ones the paper says it follows (spec §3.5,
"[paper, unverified]").

Adaptations (README): global attention in every block (ViTDet's windowed attention and relative position
bias are not built); detection trains at torchvision's fixed resize with horizontal flips (no large-scale
jitter); segmentation uses random rescale (ratio 0.5-2.0 of the base scale), random crop and flip (no
photometric distortion, no ``cat_max_ratio``) and whole-image inference (no sliding window).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from repro_shared import dist, run
from repro_shared.data import build_loader
from repro_shared.dense import (CocoInstanceDataset, SegmentationFolder, SegTrainTransform, TimmViTTrunk,
                                UperNetSegmentor, build_vitdet_maskrcnn, coco_evaluate, detection_collate,
                                evaluate_segmentation, normalize_pair, segmentation_loss)
from repro_shared.finetune import param_groups_layer_decay
from repro_shared.toydata import make_shapes_dataset

from ..engine import LoopConfig, train_loop
from ..models.vit import build_vit
from ..weights import load_vit_backbone
from .classify import resolved_init

__all__ = ["run_detection", "run_segmentation"]


def _encoder(cfg: DictConfig, init_path, log):
    """The ADDP encoder as a timm ViT at its pre-training size (the trunk resizes the position table)."""
    m = cfg.model
    vit = build_vit(m.variant, 0, img_size=int(m.pretrain_img_size), drop_path_rate=float(m.drop_path_rate),
                    keep_tokenizer_norm=bool(m.keep_tokenizer_norm))
    if init_path is not None:
        load_vit_backbone(vit, init_path, keep_tokenizer_norm=bool(m.keep_tokenizer_norm),
                          trust=bool(cfg.trust_checkpoint))
        log.info("encoder loaded from %s", init_path)
    else:
        log.info("no init.path: the encoder starts from random weights")
    return vit


def _shapes(cfg: DictConfig, split: str, n: int):
    root = Path(str(cfg.data.root or Path(run.planned_output_dir(cfg) or ".") / "shapes"))
    return make_shapes_dataset(root, split, num_images=n, image_size=int(cfg.data.image_size), seed=0,
                               max_objects=int(cfg.data.max_objects))


def _fit(cfg: DictConfig, ctx, name: str, model: torch.nn.Module, prefix: str, loader, step_fn, scheduler_fn,
         evaluate, predictions: tuple[str, ...] = ()) -> dict:
    """AdamW (0.9, 0.999) over layer-decay groups of the encoder, the timm schedule, :func:`train_loop`, then
    ``evaluate`` once at the end."""
    t = cfg.train
    groups = param_groups_layer_decay(model, float(t.weight_decay), float(t.layer_decay), prefix=prefix)
    optimizer = torch.optim.AdamW(groups, lr=float(t.lr), betas=(0.9, 0.999))
    scheduler = scheduler_fn(optimizer, len(loader) * int(t.epochs))
    loop = LoopConfig(epochs=int(t.epochs), lr=float(t.lr), clip_grad=t.get("clip_grad"), precision=str(cfg.precision),
                      ckpt_every=int(t.ckpt_every), keep_last=int(t.keep_last), log_every=int(t.log_every),
                      seed=int(cfg.seed), resume=t.resume)
    means = train_loop(name=name, model=model, step_fn=step_fn, optimizer=optimizer, loader=loader, cfg=loop,
                       ckpt_dir=ctx.checkpoint_dir, device=ctx.device, metrics=ctx.metrics, log=ctx.log, config=cfg,
                       scheduler=scheduler, predictions=predictions)
    results = {**evaluate(model), **{f"train_{k}": v for k, v in means.items()}}
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    ctx.log.info("%s: %s", name, {k: round(v, 3) for k, v in results.items()})
    return results


def run_detection(cfg: DictConfig) -> dict:
    """``addp-det``: Mask R-CNN (box and mask AP with pycocotools) on the procedural shapes (default) or COCO.

    Schedule: detectron2's multi-step (x0.1 at the ``milestones`` fractions of training) with linear warm-up
    from ``warmup_factor * lr`` (timm ``MultiStepLRScheduler``).
    """
    from timm.scheduler import MultiStepLRScheduler

    init_path = run.check_required_init(resolved_init(cfg.get("init")))
    ctx = run.setup_run(cfg, name="addp")
    d, m, t = cfg.data, cfg.model, cfg.train
    if d.name == "shapes":
        tr, va = _shapes(cfg, "train", int(d.num_train)), _shapes(cfg, "val", int(d.num_val))
        train = CocoInstanceDataset(tr.image_dir, tr.ann_file, train=True)
        val = CocoInstanceDataset(va.image_dir, va.ann_file)
    elif d.name == "coco":
        root = run.data_root(d, f"{d.train_images}/, {d.val_images}/ and the annotation JSONs {d.train_ann}, {d.val_ann}")
        train = CocoInstanceDataset(root / d.train_images, root / d.train_ann, train=True, key="data.root")
        val = CocoInstanceDataset(root / d.val_images, root / d.val_ann, key="data.root")
    else:
        raise ValueError(f"unknown data.name {d.name!r}; known: shapes, coco")
    torch.manual_seed(int(cfg.seed))
    trunk = TimmViTTrunk(_encoder(cfg, init_path, ctx.log), out_indices=(-1,))
    model = build_vitdet_maskrcnn(
        trunk, len(train.cat_ids) + 1, min_size=int(d.min_size), max_size=int(d.max_size),
        out_channels=int(m.fpn_channels), head_channels=int(m.head_channels), fc_dim=int(m.fc_dim),
        anchor_sizes=tuple(m.anchor_sizes), box_detections_per_img=int(m.detections_per_img),
        rpn_pre_nms_top_n_train=int(m.rpn_pre_nms_top_n[0]), rpn_pre_nms_top_n_test=int(m.rpn_pre_nms_top_n[1]),
        rpn_post_nms_top_n_train=int(m.rpn_post_nms_top_n[0]), rpn_post_nms_top_n_test=int(m.rpn_post_nms_top_n[1]),
        rpn_batch_size_per_image=int(m.rpn_batch_size_per_image),
        box_batch_size_per_image=int(m.roi_batch_size_per_image)).to(ctx.device)
    loader = build_loader(train, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(d.num_workers),
                          collate_fn=detection_collate)
    wrapped = dist.wrap_model(model, "ddp")

    def step(batch):
        images, targets = batch
        images = [im.to(ctx.device, non_blocking=True) for im in images]
        targets = [{k: (v.to(ctx.device) if torch.is_tensor(v) else v) for k, v in tg.items()} for tg in targets]
        losses = wrapped(images, targets)
        return {"loss": sum(losses.values()), **losses}

    def schedule(optimizer, total: int):
        return MultiStepLRScheduler(optimizer, decay_t=[int(f * total) for f in t.milestones], decay_rate=0.1,
                                    warmup_t=int(t.warmup_iters), warmup_lr_init=float(t.lr) * float(t.warmup_factor),
                                    t_in_epochs=False)

    vloader = DataLoader(val, batch_size=int(cfg.eval.batch_size), collate_fn=detection_collate)
    return _fit(cfg, ctx, "det", model, "backbone.trunk.vit.", loader, step, schedule,
                lambda mdl: coco_evaluate(mdl, vloader, val.coco, val.cat_ids, ctx.device))


def run_segmentation(cfg: DictConfig) -> dict:
    """``addp-seg``: UperNet (single-scale mIoU) on the shapes' label maps (default) or ADE20K
    (``data.root`` with ``images/{training,validation}`` and ``annotations/{training,validation}``).

    Schedule: poly (power 1) with linear warm-up (timm ``PolyLRScheduler``).
    """
    from timm.scheduler import PolyLRScheduler

    init_path = run.check_required_init(resolved_init(cfg.get("init")))
    ctx = run.setup_run(cfg, name="addp")
    d, m, t = cfg.data, cfg.model, cfg.train
    tf = SegTrainTransform(tuple(d.scale), tuple(d.ratio_range), int(d.crop_size))
    if d.name == "shapes":
        tr, va = _shapes(cfg, "train", int(d.num_train)), _shapes(cfg, "val", int(d.num_val))
        train = SegmentationFolder(tr.image_dir, tr.semseg_dir, transform=tf)
        val = SegmentationFolder(va.image_dir, va.semseg_dir, transform=normalize_pair)
    elif d.name == "ade20k":
        root = run.data_root(d, "images/{training,validation}/ and annotations/{training,validation}/ (ADEChallengeData2016)")
        train = SegmentationFolder(root / "images/training", root / "annotations/training", reduce_zero_label=True,
                                   transform=tf, key="data.root")
        val = SegmentationFolder(root / "images/validation", root / "annotations/validation", reduce_zero_label=True,
                                 transform=normalize_pair, key="data.root")
    else:
        raise ValueError(f"unknown data.name {d.name!r}; known: shapes, ade20k")
    num_classes = int(d.num_classes)
    torch.manual_seed(int(cfg.seed))
    model = UperNetSegmentor(TimmViTTrunk(_encoder(cfg, init_path, ctx.log), out_indices=tuple(m.out_indices)),
                             num_classes, channels=int(m.channels), aux_channels=int(m.aux_channels)).to(ctx.device)
    loader = build_loader(train, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(d.num_workers))
    wrapped = dist.wrap_model(model, "ddp")

    def step(batch):
        out = wrapped(batch[0].to(ctx.device, non_blocking=True))
        losses = segmentation_loss(out, batch[1].to(ctx.device), aux_weight=float(m.aux_weight))
        return {**losses, "logits": out["out"]}

    def schedule(optimizer, total: int):
        return PolyLRScheduler(optimizer, t_initial=total, power=1.0, lr_min=0.0, warmup_t=int(t.warmup_iters),
                               warmup_lr_init=float(t.lr) * float(t.warmup_ratio), t_in_epochs=False)

    vloader = DataLoader(val, batch_size=1)
    return _fit(cfg, ctx, "seg", model, "trunk.vit.", loader, step, schedule,
                lambda mdl: evaluate_segmentation(mdl, vloader, num_classes, ctx.device), predictions=("logits",))

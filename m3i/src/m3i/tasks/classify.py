"""``m3i-finetune`` / ``m3i-linprobe``: classification transfer of a pre-trained backbone.

Recipes (``train.recipe``):

- ``internimage`` (InternImage rows, official ``main.py`` / ``main_deepspeed.py``): AdamW, lr ``BASE_LR *
  global batch / 512``, official layer-wise lr decay with the DCN lr multiplier (``internimage_param_groups``),
  timm ``CosineLRScheduler`` over iterations with warmup from ``warmup_lr``, stepped after each optimizer step
  with ``step_update(epoch * iters + i)`` (so step ``k`` runs at the schedule's value for ``k - 1``, step 0 at
  ``warmup_lr``), label smoothing, gradient clipping, model EMA (timm ``ModelEmaV3``), no Mixup / CutMix in the H/G
  rows.
- ``mae`` (ViT rows, MAE / SiameseIM protocol): AdamW, lr ``blr * global batch / 256``, BEiT layer decay
  (``repro_shared.finetune.param_groups_layer_decay``), per-iteration half-cosine with linear warmup set before
  each step, Mixup 0.8 / CutMix 1.0 with label smoothing 0.1, RandAugment, random erasing.
- ``linprobe`` (mode ``linprobe``): frozen backbone, ``BNLinearHead``, LARS (MAE linear probing).

The default config fine-tunes the tiny ViT on the embedded shapes (``train`` split, evaluated on ``probe_test``).
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Subset

from repro_shared import dist, run
from repro_shared.checkpoint import CheckpointError
from repro_shared.data import ImageFolder, SkipNoneCollate, build_loader
from repro_shared.finetune import (build_eval_transform, build_lars, build_linprobe_transform, build_mixup,
                                   build_train_transform, classification_criterion, eval_loader, evaluate_classifier,
                                   half_cosine_lr, param_groups_layer_decay, train_classifier_epoch)
from repro_shared.train import StepCheckpointer

from ..convert import read_state_dict
from ..data.shapes import shapes_split
from ..models.classifier import LinearProbe, build_vit_classifier
from ..models.internimage import build_internimage, internimage_param_groups
from ..models.vit import VIT_VARIANTS
from .common import build_backbone

__all__ = ["ShapesClassification", "build_classifier", "load_backbone_weights", "run_classifier"]

RECIPES = ("internimage", "mae")


class ShapesClassification(Dataset):
    """The embedded shapes as ``(transform(PIL image), label)``."""

    def __init__(self, split: str, transform, size: int = 32):
        self.data, self.transform = shapes_split(split, size), transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data.images[i])), int(self.data.labels[i])


def _plain(node) -> dict:
    return dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}


def build_classifier(cfg: DictConfig, mode: str) -> torch.nn.Module:
    """The fine-tuning model (timm ViT or InternImage with its head) or the linear probe of ``cfg.model``.

    Raises:
        ValueError: an unknown backbone / variant / mode.
    """
    m, d = cfg.model, cfg.data
    k = int(d.num_classes)
    if mode == "linprobe":
        bb = build_backbone(m, int(d.input_size)) if m.backbone == "vit" else \
            build_internimage(m.variant, num_classes=0, core_op=str(m.core_op), **_plain(m.get("overrides")))
        return LinearProbe(bb, bb.dense_dim if m.backbone == "vit" else bb.global_dim, k)
    if mode != "finetune":
        raise ValueError(f"unknown mode {mode!r}; known: finetune, linprobe")
    if m.backbone == "vit":
        if m.variant not in VIT_VARIANTS:
            raise ValueError(f"unknown ViT variant {m.variant!r}; known: {', '.join(VIT_VARIANTS)}")
        dims = {**VIT_VARIANTS[m.variant], **_plain(m.get("overrides")), "img_size": int(d.input_size)}
        return build_vit_classifier(k, drop_path_rate=float(m.drop_path_rate), **dims)
    if m.backbone == "internimage":
        return build_internimage(m.variant, num_classes=k, drop_path_rate=float(m.drop_path_rate),
                                 with_cp=bool(m.with_cp), core_op=str(m.core_op), **_plain(m.get("overrides")))
    raise ValueError(f"unknown model.backbone {m.backbone!r}; known: vit, internimage")


def load_backbone_weights(model: torch.nn.Module, path, cfg: DictConfig, log) -> None:
    """Load a backbone (official InternImage file, converted weights, or an ``m3i-pretrain`` checkpoint's online /
    target backbone per ``init.branch``) into ``model``; the classifier head and the pre-training global head are
    left out.

    Raises:
        CheckpointError: keys of the trunk that are missing, unexpected or of another shape (the message names the
            file and the first of them: the ``model.*`` settings must match those the weights were trained with).
    """
    sd = read_state_dict(path, trust=bool(cfg.get("trust_checkpoint", False)),
                         branch=str(cfg.init.get("branch", "online")))
    target = model.backbone if isinstance(model, LinearProbe) else model
    skip = ("head.", "clip_projector.", "fc_norm.") if cfg.model.backbone == "vit" else ("head.",)
    own = target.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith(skip) and not (k.startswith("norm.") and k not in own)}
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in sd and not k.startswith(skip + ("fc_norm.",))]
    unexpected = [k for k in sd if k not in own]
    if mismatched or missing or unexpected:
        raise CheckpointError(
            f"init weights {path} do not fit the {cfg.model.backbone}-{cfg.model.variant} trunk built from model.*: "
            f"{len(mismatched)} of another shape {mismatched[:3]}, {len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}; set model.* (variant, overrides) as in the run that "
            "wrote the weights")
    report = torch.nn.Module.load_state_dict(target, sd, strict=False)
    log.info("init weights from %s: %d tensors (new: %s)", path, len(sd), report.missing_keys)


def _datasets(cfg: DictConfig, mode: str):
    d, a = cfg.data, cfg.aug
    size = int(d.input_size)
    if mode == "linprobe":
        train_tf = build_linprobe_transform(size, scale=(float(a.scale_min), 1.0))
    else:
        train_tf = build_train_transform(size, auto_augment=a.auto_augment, re_prob=float(a.re_prob),
                                         color_jitter=a.get("color_jitter"), scale=(float(a.scale_min), 1.0))
    eval_tf = build_eval_transform(size, crop_pct=d.get("crop_pct"))
    skip = bool(d.get("skip_corrupt", False))
    if d.name == "shapes":
        train, val = ShapesClassification("train", train_tf), ShapesClassification("probe_test", eval_tf)
    elif d.name == "imagefolder":
        train = ImageFolder(f"{d.root}/train", train_tf, skip_corrupt=skip, key="data.root")
        val = ImageFolder(f"{d.root}/val", eval_tf, skip_corrupt=skip, key="data.root")
    else:
        raise ValueError(f"unknown data.name {d.name!r}; known: shapes, imagefolder")
    limit = d.get("limit")  # quick checks: the first N training / validation images
    if limit:
        train, val = (Subset(x, range(min(int(limit), len(x)))) for x in (train, val))
    return train, val


def _optimizer_and_schedule(cfg: DictConfig, model: torch.nn.Module, mode: str, iters: int, ws: int):
    """(optimizer, lr_at, description) of ``train.recipe``; ``lr_at(k)`` is the lr to set before step ``k`` (None:
    a timm scheduler already set every group)."""
    t = cfg.train
    gbatch = int(t.batch_size) * ws
    epochs, warm = int(t.epochs), float(t.warmup_epochs)
    if mode == "linprobe":
        lr = float(t.lr) if t.get("lr") else float(t.blr) * gbatch / 256
        opt = build_lars(model.head, lr, weight_decay=float(t.weight_decay))
        return opt, lambda k: half_cosine_lr(k / iters, lr, epochs, warm, float(t.min_lr)), f"LARS lr {lr:.3g}"
    if t.recipe == "mae":
        lr = float(t.lr) if t.get("lr") else float(t.blr) * gbatch / 256
        groups = param_groups_layer_decay(model, float(t.weight_decay), float(t.layer_decay))
        opt = torch.optim.AdamW(groups, lr=lr)
        return opt, lambda k: half_cosine_lr(k / iters, lr, epochs, warm, float(t.min_lr)), f"MAE recipe lr {lr:.3g}"
    if t.recipe == "internimage":
        from timm.scheduler import CosineLRScheduler

        scale = gbatch / 512.0
        lr, warm_lr, min_lr = float(t.blr) * scale, float(t.warmup_lr) * scale, float(t.min_lr) * scale
        groups = internimage_param_groups(model, float(t.weight_decay), lr,
                                          layer_decay=float(t.layer_decay) if t.get("layer_decay") else None,
                                          dcn_lr_mul=t.get("dcn_lr_mul"))
        opt = torch.optim.AdamW(groups, lr=lr, eps=1e-8, betas=(0.9, 0.999))
        sched = CosineLRScheduler(opt, t_initial=epochs * iters, lr_min=min_lr, warmup_lr_init=warm_lr,
                                  warmup_t=int(warm * iters), cycle_limit=1, t_in_epochs=False)

        def lr_at(k: int) -> None:
            sched.step_update(max(k - 1, 0))  # the official loop steps the schedule after the optimizer step
            return None

        return opt, lr_at, f"InternImage recipe lr {lr:.3g} (warmup from {warm_lr:.3g})"
    raise ValueError(f"unknown train.recipe {t.recipe!r}; known: {', '.join(RECIPES)}")


def run_classifier(cfg: DictConfig, mode: str) -> dict:
    """Fine-tune (``mode="finetune"``) or linearly probe (``"linprobe"``) a classifier from ``init.path``.

    Evaluates every ``train.eval_every`` epochs and at the end (also the EMA weights when ``train.ema`` is set);
    ``metrics.json`` has the final ``top1`` / ``top5`` and the best ``max_top1`` (the official logs report the max).
    """
    init_path = run.check_required_init(cfg.get("init"))
    ctx = run.setup_run(cfg, name="m3i")
    log, device, t, d = ctx.log, ctx.device, cfg.train, cfg.data
    ws = ctx.dist.world_size
    model = build_classifier(cfg, mode)
    if init_path is not None:
        load_backbone_weights(model, init_path, cfg, log)
    else:
        log.info("no init weights: training from random initialisation")
    train_set, val_set = _datasets(cfg, mode)
    skip = bool(d.get("skip_corrupt", False))
    loader = build_loader(train_set, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(d.num_workers),
                          collate_fn=SkipNoneCollate() if skip else None, pin_memory=device.type == "cuda")
    val_loader = eval_loader(val_set, int(t.batch_size), int(d.num_workers), skip)
    model = model.to(device)
    iters = len(loader)
    optimizer, lr_at, desc = _optimizer_and_schedule(cfg, model, mode, iters, ws)
    a = cfg.aug
    mixup = build_mixup(int(d.num_classes), mixup=float(a.mixup), cutmix=float(a.cutmix),
                        label_smoothing=float(a.smoothing)) if mode == "finetune" else None
    criterion = classification_criterion(mixup, float(a.get("smoothing", 0.0)))
    ema = None
    if mode == "finetune" and t.get("ema"):
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=float(t.ema))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    wrapped = dist.wrap_model(model, "ddp" if ws > 1 else "none")
    results: dict[str, Any] = {}
    ckpt = StepCheckpointer(ctx.checkpoint_dir, model=model, optimizer=optimizer, scaler=scaler, iters=iters,
                        every=int(t.checkpoint_every), keep_last=int(t.keep_last), config=cfg,
                        extra=lambda: {"results": results, "ema": ema.module.state_dict() if ema is not None else None})
    step, stats, extra = ckpt.restore(t.resume, log)
    results = extra.get("results", results)
    if ema is not None and extra.get("ema") is not None:
        ema.module.load_state_dict(extra["ema"])
    log.info("%s %s-%s: %s, global batch %d, %d steps per epoch", mode, cfg.model.backbone, cfg.model.variant, desc,
             int(t.batch_size) * ws, iters)
    start_epoch, start_batch = divmod(step, iters)
    for epoch in range(start_epoch, int(t.epochs)):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        tr = train_classifier_epoch(wrapped, loader, optimizer, scaler, criterion, lr_at, epoch=epoch, device=device,
                                    seed=int(cfg.seed), precision=cfg.precision, mixup=mixup,
                                    clip_grad=t.get("clip_grad"), ema=ema, metrics=ctx.metrics, log=log,
                                    log_every=int(t.log_every), stats=stats if epoch == start_epoch else None,
                                    after_step=ckpt.after_step)
        results.update(train_loss=tr["loss"], epoch=epoch)
        last = epoch + 1 == int(t.epochs)
        if last or (int(t.eval_every) and (epoch + 1) % int(t.eval_every) == 0):
            ev = evaluate_classifier(model, val_loader, device)
            results.update(top1=ev["top1"], top5=ev["top5"], max_top1=max(results.get("max_top1", 0.0), ev["top1"]))
            if ema is not None:
                ev_ema = evaluate_classifier(ema.module, val_loader, device)
                results.update(ema_top1=ev_ema["top1"],
                               max_ema_top1=max(results.get("max_ema_top1", 0.0), ev_ema["top1"]))
            log.info("epoch %d | loss %.4f | top1 %.2f%s", epoch, tr["loss"], ev["top1"],
                     f" | EMA top1 {results['ema_top1']:.2f}" if ema is not None else "")
        ctx.metrics.log({"train_loss": tr["loss"], "epoch": epoch, **{k: results[k] for k in ("top1", "ema_top1")
                                                                     if k in results}}, step=(epoch + 1) * iters)
        ckpt.save((epoch + 1) * iters, None)
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    return results

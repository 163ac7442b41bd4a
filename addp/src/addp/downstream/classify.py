"""``addp-finetune`` (ImageNet fine-tuning, spec §2.4 / §3.5) and ``addp-linprobe`` (MAGE's linear-probe
protocol, spec §3.5 "Linear probing", unverified for ADDP) on the ADDP encoder.

Fine-tuning: mean-pooled patch tokens + ``fc_norm`` + head, AdamW (0.9, 0.999) over BEiT layer-decay groups,
timm ``create_transform`` (RandAugment rand-m9-mstd0.5-inc1, RandomErasing 0.25), Mixup 0.8 / CutMix 1.0 with
label smoothing 0.1 and SoftTargetCE. Linear probing: the frozen encoder, mean-pooled patch tokens, the
plain ``fc_norm`` normalisation, ``BatchNorm1d(affine=False)`` + Linear, LARS, cross-entropy. The pieces
come from ``repro_shared.finetune``; the loop is :func:`addp.engine.train_loop`.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from repro_shared import dist, run
from repro_shared.data import SkipNoneCollate, build_loader
from repro_shared.finetune import (BNLinearHead, build_eval_transform, build_lars, build_linprobe_transform,
                                   build_mixup, build_train_transform, classification_criterion, eval_loader,
                                   evaluate_classifier, freeze_except, param_groups_layer_decay)

from ..data.embedded import TintedDigits
from ..data.imagenet import imagenet_folder
from ..engine import LoopConfig, train_loop
from ..models.vit import build_vit
from ..weights import load_vit_backbone, resolve_run_file

__all__ = ["DigitsPIL", "classification_data", "resolved_init", "run_classifier"]


class DigitsPIL(Dataset):
    """The embedded tinted digits as PIL images (so timm / torchvision image transforms apply) and labels."""

    def __init__(self, split: str, transform, img_size: int = 32, limit: int | None = None):
        base = TintedDigits(split, img_size, limit)
        self.images = (base.images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        self.labels, self.transform, self.num_classes = base.labels, transform, base.num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="RGB")), int(self.labels[i])


def classification_data(d: DictConfig, split: str, transform) -> Dataset:
    """``digits`` (embedded) or ``imagenet`` (``<root>/<split>/<class>/<image>``, errors name the folder / file).

    Raises:
        ValueError: for an unknown ``data.name``.
        FileNotFoundError: ``data.root`` unset or not a folder (naming the key and the layout).
    """
    if d.name == "digits":
        return DigitsPIL(split, transform, int(d.get("base_size", 32)), d.get("limit"))
    if d.name == "imagenet":
        return imagenet_folder(d.root, split, transform, skip_corrupt=bool(d.skip_corrupt))
    raise ValueError(f"unknown data.name {d.name!r}; known: digits, imagenet")


def resolved_init(init: DictConfig | None) -> dict | None:
    """The ``init`` node with ``path`` resolved (an ``addp-train`` run folder -> its final ADDP file)."""
    if init is None:
        return None
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(init, resolve=True)
    node["path"] = resolve_run_file(node.get("path"))
    return node


def run_classifier(cfg: DictConfig, mode: str) -> dict:
    """Fine-tune (``mode="finetune"``) or linearly probe (``"linprobe"``) the ADDP encoder of ``init.path``
    (an ``addp-train`` run folder, our weights file or an official ADDP checkpoint; random init when unset).

    Evaluates every ``train.eval_every`` epochs and after the last; ``metrics.json`` holds the final ``top1`` /
    ``top5`` and the best ``max_top1`` (the official scripts print the maximum over epochs).

    Raises:
        ValueError: for an unknown mode, variant or data name, or a class count that differs from the data.
    """
    if mode not in ("finetune", "linprobe"):
        raise ValueError(f"unknown mode {mode!r}; use finetune or linprobe")
    init_path = run.check_required_init(resolved_init(cfg.get("init")))
    ctx = run.setup_run(cfg, name="addp")
    log, device, t, d, a = ctx.log, ctx.device, cfg.train, cfg.data, cfg.aug
    size, num_classes = int(d.input_size), int(d.num_classes)
    torch.manual_seed(int(cfg.seed))
    vit = build_vit(cfg.model.variant, num_classes, img_size=size,
                    drop_path_rate=float(cfg.model.drop_path_rate) if mode == "finetune" else 0.0,
                    keep_tokenizer_norm=bool(cfg.model.keep_tokenizer_norm))
    if init_path is not None:
        fresh = load_vit_backbone(vit, init_path, keep_tokenizer_norm=bool(cfg.model.keep_tokenizer_norm),
                                  trust=bool(cfg.trust_checkpoint))
        log.info("encoder loaded from %s (newly initialised: %s)", init_path, ", ".join(fresh))
    else:
        log.info("no init.path: the encoder starts from random weights")
    if mode == "linprobe":
        vit.head = BNLinearHead(vit.head.in_features, num_classes)
        freeze_except(vit, ["head."])
        train_tf = build_linprobe_transform(size, scale=(float(a.crop_min), 1.0))
    else:
        train_tf = build_train_transform(size, auto_augment=a.auto_augment, re_prob=float(a.re_prob), re_mode=a.re_mode,
                                         re_count=int(a.re_count), scale=(float(a.crop_min), 1.0))
    vit = vit.to(device)
    train_set = classification_data(d, "train", train_tf)
    n_cls = len(getattr(train_set, "classes", [])) or getattr(train_set, "num_classes", num_classes)
    if n_cls != num_classes:
        raise ValueError(f"the training set has {n_cls} classes but data.num_classes={num_classes}")
    val_set = classification_data(d, "val", build_eval_transform(size, crop_pct=d.get("crop_pct")))
    skip = bool(d.get("skip_corrupt", False))
    loader = build_loader(train_set, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(d.num_workers),
                          collate_fn=SkipNoneCollate() if skip else None, pin_memory=device.type == "cuda")
    vloader = eval_loader(val_set, int(cfg.eval.batch_size), int(d.num_workers), skip)
    lr = float(t.lr) if t.get("lr") is not None else float(t.blr) * int(t.batch_size) * ctx.dist.world_size / 256
    if mode == "finetune":
        groups = param_groups_layer_decay(vit, float(t.weight_decay), float(t.layer_decay))
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(t.betas))
        mixup = build_mixup(num_classes, mixup=float(a.mixup), cutmix=float(a.cutmix), label_smoothing=float(a.smoothing))
    else:
        optimizer = build_lars(vit.head, lr, weight_decay=float(t.weight_decay))
        mixup = None
    criterion = classification_criterion(mixup, float(a.smoothing) if mode == "finetune" else 0.0)
    wrapped = dist.wrap_model(vit, "ddp")

    def step(batch):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if mixup is not None:
            x, y = mixup(x, y)
        logits = wrapped(x)
        return {"loss": criterion(logits.float(), y), "logits": logits}

    epochs, every = int(t.epochs), int(t.eval_every)

    def evaluate(epoch: int) -> dict[str, float]:
        if (epoch + 1) % every and epoch + 1 != epochs:
            return {}
        return {f"val_{k}": float(v) for k, v in evaluate_classifier(vit, vloader, device).items()}

    history: list[dict] = []
    loop = LoopConfig(epochs=epochs, lr=lr, warmup_epochs=float(t.warmup_epochs), min_lr=float(t.min_lr),
                      clip_grad=t.get("clip_grad"), precision=str(cfg.precision), ckpt_every=int(t.ckpt_every),
                      keep_last=int(t.keep_last), log_every=int(t.log_every), seed=int(cfg.seed), resume=t.resume)
    log.info("%s: lr %.3g (global batch %d), %d steps per epoch", mode, lr, int(t.batch_size) * ctx.dist.world_size,
             len(loader))
    means = train_loop(name=mode, model=vit, step_fn=step, optimizer=optimizer, loader=loader, cfg=loop,
                       ckpt_dir=ctx.checkpoint_dir, device=device, metrics=ctx.metrics, log=log,
                       predictions=("logits",), config=cfg, on_epoch_end=evaluate, history=history)
    evals = [h for h in history if "val_top1" in h]
    if not evals:  # resumed after the last epoch: evaluate the restored weights
        evals = [{"epoch": epochs - 1, **evaluate(epochs - 1)}]
    final = {"top1": evals[-1]["val_top1"], "top5": evals[-1]["val_top5"],
             "max_top1": max(h["val_top1"] for h in evals), **{f"train_{k}": v for k, v in means.items()}}
    run.write_metrics(ctx.out_dir, final)
    ctx.metrics.close()
    log.info("%s: top1 %.2f (max %.2f)", mode, final["top1"], final["max_top1"])
    return final

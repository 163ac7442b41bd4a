"""``sim-finetune`` / ``sim-linprobe`` (MAE recipes on the SiameseIM encoder) and ``sim-eval`` (top-1 / top-5 on
ImageNet, ImageNet-A / -R / -Sketch, and mCE on ImageNet-C)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from repro_shared import checkpoint, dist, run
from repro_shared.data import SkipNoneCollate, build_loader
from repro_shared.finetune import (build_eval_transform, build_lars, build_linprobe_transform, build_mixup,
                                   build_train_transform, classification_criterion, eval_loader, evaluate_classifier,
                                   half_cosine_lr, param_groups_layer_decay, train_classifier_epoch)
from repro_shared.train import StepCheckpointer

from ..data import ALEXNET_CE, IMAGENET_C_CORRUPTIONS, build_classification_data, class_subset_for
from ..models import build_classifier, build_linear_probe
from .common import load_init

__all__ = ["run_classifier", "run_eval"]


def run_classifier(cfg: DictConfig, mode: str) -> dict:
    """Fine-tune (``mode="finetune"``) or linearly probe (``"linprobe"``) a classifier from ``init.path``.

    Evaluates every ``train.eval_every`` epochs and at the end; ``metrics.json`` has the final ``top1``/``top5``
    and the best ``max_top1`` (the official logs report the maximum).
    """
    init_path = run.check_required_init(cfg.get("init"))
    ctx = run.setup_run(cfg, name="sim")
    log, device, t, d = ctx.log, ctx.device, cfg.train, cfg.data
    size = int(d.input_size)
    if mode == "finetune":
        model = build_classifier(cfg.model.variant, int(d.num_classes), img_size=size,
                                 drop_path_rate=float(cfg.model.drop_path_rate))
        train_tf = build_train_transform(size, auto_augment=cfg.aug.auto_augment, re_prob=float(cfg.aug.re_prob),
                                         re_mode=cfg.aug.re_mode, re_count=int(cfg.aug.re_count))
    elif mode == "linprobe":
        model = build_linear_probe(cfg.model.variant, int(d.num_classes), img_size=size)
        train_tf = build_linprobe_transform(size, scale=(float(cfg.aug.crop_min), 1.0))
    else:
        raise ValueError(f"unknown mode {mode!r}; use finetune or linprobe")
    load_init(model, init_path, cfg, log)
    if mode == "linprobe":  # a loaded fine-tuned fc_norm would not be the plain normalisation of the protocol
        torch.nn.init.ones_(model.fc_norm.weight)
        torch.nn.init.zeros_(model.fc_norm.bias)
    model = model.to(device)
    train_set, num_classes = build_classification_data(d, "train", train_tf)
    if num_classes != int(d.num_classes):
        raise ValueError(f"the training set has {num_classes} classes but data.num_classes={d.num_classes}")
    val_set, _ = build_classification_data(d, "val", build_eval_transform(size, crop_pct=d.get("crop_pct")))
    skip = bool(d.get("skip_corrupt", False))
    loader = build_loader(train_set, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(d.num_workers),
                          collate_fn=SkipNoneCollate() if skip else None, pin_memory=device.type == "cuda",
                          persistent_workers=int(d.num_workers) > 0)
    vloader = eval_loader(val_set, int(cfg.eval.batch_size), int(d.num_workers), skip)
    iters, ws = len(loader), ctx.dist.world_size
    lr = float(t.lr) if t.get("lr") else float(t.blr) * int(t.batch_size) * ws / 256
    if mode == "finetune":
        optimizer = torch.optim.AdamW(param_groups_layer_decay(model, float(t.weight_decay), float(t.layer_decay)),
                                      lr=lr, betas=(0.9, 0.999))
        mixup = build_mixup(num_classes, mixup=float(cfg.aug.mixup), cutmix=float(cfg.aug.cutmix),
                            label_smoothing=float(cfg.aug.smoothing))
    else:
        optimizer = build_lars(model, lr, weight_decay=float(t.weight_decay))
        mixup = None
    criterion = classification_criterion(mixup, float(cfg.aug.smoothing) if mode == "finetune" else 0.0)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    wrapped = dist.wrap_model(model, "ddp" if ws > 1 else "none")
    results: dict = {}
    ckpt = StepCheckpointer(ctx.checkpoint_dir, model=model, optimizer=optimizer, scaler=scaler, iters=iters,
                            every=int(t.checkpoint_every), keep_last=int(t.keep_last), config=cfg,
                            extra=lambda: {"results": results})
    step, stats, extra = ckpt.restore(t.resume, log)
    results = extra.get("results", results)
    log.info("%s: lr %.3g (global batch %d), %d steps per epoch", mode, lr, int(t.batch_size) * ws, iters)
    def lr_at(k: int) -> float:  # official per-iteration schedule at the fractional epoch epoch + i / iters
        e, i = divmod(k, iters)
        return half_cosine_lr(e + i / iters, lr, int(t.epochs), float(t.warmup_epochs), float(t.min_lr))

    start_epoch, start_batch = divmod(step, iters)
    for epoch in range(start_epoch, int(t.epochs)):
        loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        tr = train_classifier_epoch(wrapped, loader, optimizer, scaler, criterion, lr_at, epoch=epoch, device=device,
                                    seed=int(cfg.seed), precision=cfg.precision, mixup=mixup, clip_grad=t.clip_grad,
                                    metrics=ctx.metrics, log=log, log_every=int(t.log_every),
                                    stats=stats if epoch == start_epoch else None, after_step=ckpt.after_step)
        rec = {f"train_{k}": v for k, v in tr.items()} | {"epoch": epoch}
        if (epoch + 1) % int(t.eval_every) == 0 or epoch + 1 == int(t.epochs):
            ev = evaluate_classifier(model, vloader, device)
            rec.update({f"val_{k}": v for k, v in ev.items()})
            results["max_top1"] = max(results.get("max_top1", 0.0), ev["top1"])
            log.info("epoch %d | loss %.4f | val top1 %.2f top5 %.2f", epoch, tr["loss"], ev["top1"], ev["top5"])
        results.update(rec)
        ctx.metrics.log(rec, step=(epoch + 1) * iters)
        ckpt.save((epoch + 1) * iters, None)
    final = {"top1": results.get("val_top1"), "top5": results.get("val_top5"), **results}
    run.write_metrics(ctx.out_dir, final)
    ctx.metrics.close()
    return final


def _load_classifier(cfg: DictConfig, path: str | None, num_classes: int, size: int):
    model = build_classifier(cfg.model.variant, num_classes, img_size=size, drop_path_rate=0.0)
    if not path:
        raise ValueError("no weights to evaluate: pass eval.checkpoint=/path (sim-finetune's ckpt_*.pt or the "
                         "official sim_base_1600ep_finetune.pth)")
    from ..convert import load_encoder_weights

    report = load_encoder_weights(model, path, trust=bool(cfg.get("trust_checkpoint", False)))
    if any(k.startswith(("head.", "fc_norm.")) for k in report.missing):
        raise checkpoint.CheckpointError(f"{path} holds no classifier head/fc_norm (a pre-training checkpoint?); "
                                         "evaluate a fine-tuned model")
    return model


def run_eval(cfg: DictConfig) -> dict:
    """``sim-eval``: top-1 / top-5 of a fine-tuned classifier.

    ``eval.benchmark``: ``imagenet`` (``data.root/val``), ``digits``, ``imagenet_a`` / ``imagenet_r`` (200-class
    folders, logits restricted to their classes; ``eval.imagenet_train`` gives the 1,000 wnids),
    ``imagenet_sketch`` (1,000-way), ``imagenet_c`` (``data.root/<corruption>/<1..5>/``: per-corruption error,
    mCE normalised by AlexNet, ``1 - mCE``).
    """
    e, d = cfg.eval, cfg.data
    if e.get("checkpoint"):  # eval.checkpoint is the weights to evaluate; it satisfies a row's required init
        if not Path(str(e.checkpoint)).expanduser().is_file():
            raise FileNotFoundError(f"eval.checkpoint={e.checkpoint!r} is not a file; pass sim-finetune's "
                                    "checkpoints/ckpt_*.pt or the official sim_base_1600ep_finetune.pth")
        init_path = None
    else:
        init_path = run.check_required_init(cfg.get("init"))
    ctx = run.setup_run(cfg, name="sim")
    size = int(d.input_size)
    tf = build_eval_transform(size, crop_pct=d.get("crop_pct"))
    bench = str(e.benchmark)
    num_classes = 10 if bench == "digits" else 1000
    model = _load_classifier(cfg, e.checkpoint or init_path, num_classes, size).to(ctx.device)
    bs, nw = int(e.batch_size), int(d.num_workers)
    if bench in ("imagenet", "digits"):
        ds, _ = build_classification_data(d, "val", tf)
        res = evaluate_classifier(model, eval_loader(ds, bs, nw), ctx.device)
    elif bench in ("imagenet_a", "imagenet_r", "imagenet_sketch"):
        from repro_shared.data import ImageFolder

        ds = ImageFolder(run.data_root(d, "<wnid>/<image> class folders"), tf, key="data.root")
        subset = class_subset_for(d.root, e.imagenet_train) if bench != "imagenet_sketch" else None
        res = evaluate_classifier(model, eval_loader(ds, bs, nw), ctx.device, class_subset=subset)
    elif bench == "imagenet_c":
        from repro_shared.data import ImageFolder

        res, ces = {}, []
        for c in IMAGENET_C_CORRUPTIONS:
            errs = []
            for s in range(1, 6):
                ds = ImageFolder(run.data_root(d, "<corruption>/<1..5>/<wnid>/<image>") / c / str(s), tf, key="data.root")
                errs.append(100.0 - evaluate_classifier(model, eval_loader(ds, bs, nw), ctx.device)["top1"])
            res[f"err_{c}"] = sum(errs) / 5
            ces.append(sum(errs) / 5 / 100.0 / ALEXNET_CE[c])
        res["mCE"] = 100.0 * sum(ces) / len(ces)
        res["one_minus_mCE"] = 100.0 - res["mCE"]
    else:
        raise ValueError(f"unknown eval.benchmark {bench!r}; known: imagenet, digits, imagenet_a, imagenet_r, "
                         "imagenet_sketch, imagenet_c")
    run.write_metrics(ctx.out_dir, res)
    ctx.log.info("%s: %s", bench, {k: round(v, 3) for k, v in res.items() if isinstance(v, float)})
    ctx.metrics.close()
    return res

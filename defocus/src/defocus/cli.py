"""Hydra entry points: ``defocus-train``, ``defocus-eval``, ``defocus-diagnose`` (config -> objects -> engine)."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from repro_shared import checkpoint, dist, run

from .engine import evaluate as run_eval
from .engine import train_one_epoch
from .models.convert import load_official
from .models.defocus_mamba import build_model, describe
from .recipe import build_optimizer, build_scheduler, scale_lr, scheduled_drop_path_rate


def build_from_cfg(cfg: DictConfig):
    m = cfg.model
    mixer = OmegaConf.to_container(m.mixer, resolve=True)
    const_rate = 0.0 if cfg.train.drop_path.scheduled else float(cfg.train.drop_path.rate)
    return build_model(m.name, mixer=mixer, num_classes=int(cfg.data.get("num_classes", m.num_classes)),
                       patch_size=int(m.patch_size), aux_loss=m.aux_loss, head_type=m.head_type,
                       use_checkpoint=bool(m.use_checkpoint), drop_path_rate=const_rate)


def class_map(cfg: DictConfig):
    """Logit columns used for validation (data.class_map, e.g. map22kto1k.txt), or None."""
    from .data.imagenet import load_class_map

    return load_class_map(cfg.data.get("class_map"))


def build_data(cfg: DictConfig, world_size: int = 1, rank: int = 0):
    """(train_loader, val_loader, mixup) of the configured dataset."""
    d = cfg.data
    if d.name == "digits":
        from .data.digits import build_digits_loaders

        if d.canvas % cfg.model.patch_size:
            raise ValueError(f"data.canvas={d.canvas} is not divisible by model.patch_size={cfg.model.patch_size}")
        tl, vl = build_digits_loaders(d.canvas, d.digit_size, d.noise, cfg.train.batch_size, cfg.seed, d.num_workers,
                                      d.get("train_subset"))
        return tl, vl, None
    if d.name == "imagenet":
        from .data.imagenet import build_imagenet_loaders, build_mixup

        tl, vl = build_imagenet_loaders(d, cfg.train.batch_size, world_size, rank)
        return tl, vl, build_mixup(d, int(d.num_classes))
    raise ValueError(f"unknown data.name {d.name!r}; use 'digits' or 'imagenet'")


def _load_weights(model, path: str, official: bool, use_ema: bool):
    if official:
        return load_official(model, path, use_ema=use_ema, strict=False)
    state = checkpoint.load_checkpoint(path, restore_rng=False)
    sd = state["extra"]["model_ema"] if use_ema else state["model"]
    model.load_state_dict(sd)
    return state


def run_train(cfg: DictConfig) -> dict:
    """``defocus-train``: build, (resume,) train, evaluate every epoch, checkpoint, write metrics.json."""
    ctx = run.setup_run(cfg, name="defocus")
    log, device, t = ctx.log, ctx.device, cfg.train
    model = build_from_cfg(cfg).to(device)
    log.info("model %s: %.3f M parameters", cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6)
    if t.get("init"):
        log.info("init weights from %s: %s", t.init, _load_weights(model, t.init, official=True, use_ema=False))
    train_loader, val_loader, mixup = build_data(cfg, ctx.dist.world_size, ctx.dist.rank)
    global_batch = t.batch_size * ctx.dist.world_size
    lr, wlr, mlr = (scale_lr(v, global_batch) for v in (t.base_lr, t.warmup_lr, t.min_lr))
    optimizer = build_optimizer(model, lr, t.weight_decay, t.betas, t.eps)
    scheduler = build_scheduler(optimizer, t.epochs, t.warmup_epochs, len(train_loader), mlr, wlr)
    cmap = class_map(cfg)
    ema = None
    if t.ema.enabled:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.ema.decay)
    wrapped = dist.wrap_model(model, strategy="ddp" if ctx.dist.world_size > 1 else "none")
    start_epoch = 0
    state = checkpoint.resume(ctx.checkpoint_dir, t.resume, model=model, optimizer=optimizer, scheduler=scheduler)
    if state is not None:
        start_epoch = state["epoch"] + 1
        if ema is not None and "model_ema" in state["extra"]:
            ema.module.load_state_dict(state["extra"]["model_ema"])
        log.info("resumed from epoch %d", state["epoch"])
    results: dict = {}
    for epoch in range(start_epoch, t.epochs):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        rate = (scheduled_drop_path_rate(epoch, t.epochs, t.drop_path.min_rate, t.drop_path.max_rate)
                if t.drop_path.scheduled else float(t.drop_path.rate))
        tr = train_one_epoch(wrapped, train_loader, optimizer, scheduler, epoch=epoch, device=device,
                             drop_path_rate=rate, aux_weight=t.aux_weight, clip_grad=t.clip_grad, mixup=mixup,
                             ema=ema, precision=cfg.precision, log=None, metrics=ctx.metrics)
        results = {f"val_{k}": v for k, v in run_eval(model, val_loader, device, cmap).items()}
        if ema is not None:
            results.update({f"val_ema_{k}": v for k, v in run_eval(ema.module, val_loader, device, cmap).items()})
        results.update({f"train_{k}": v for k, v in tr.items()}, drop_path_rate=rate, epoch=epoch)
        ctx.metrics.log(results, step=(epoch + 1) * len(train_loader))
        log.info("epoch %d | dpr %.3f | loss %.4f | val top1 %.2f", epoch, rate, tr["loss"], results["val_top1"])
        if (epoch + 1) % t.save_every == 0 or epoch == t.epochs - 1:
            extra = {"model_cfg": describe(model)}
            if ema is not None:
                extra["model_ema"] = ema.module.state_dict()
            checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, epoch), model=model,
                                       optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                                       step=(epoch + 1) * len(train_loader), config=cfg, extra=extra,
                                       keep_last=t.keep_last)
    if not results:  # resumed after the last epoch: evaluate the restored weights
        results = {f"val_{k}": v for k, v in run_eval(model, val_loader, device, cmap).items()}
    final = {"top1": results["val_top1"], "top5": results["val_top5"], **results}
    run.write_metrics(ctx.out_dir, final)
    ctx.metrics.close()
    log.info("final val top1 %.2f (metrics.json in %s)", final["top1"], ctx.out_dir)
    return final


def _require_checkpoint(path) -> str:
    if not path:
        raise ValueError("no checkpoint given: pass eval.checkpoint=/path/to/ckpt (defocus-train writes "
                         "<run dir>/checkpoints/ckpt_*.pt; official weights need eval.official=true)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return str(path)


def run_evaluate(cfg: DictConfig) -> dict:
    """``defocus-eval``: top-1/top-5 of a checkpoint (ours, or official with eval.official=true)."""
    ctx = run.setup_run(cfg, name="defocus")
    path = _require_checkpoint(cfg.eval.checkpoint)
    model = build_from_cfg(cfg).to(ctx.device)
    _load_weights(model, path, cfg.eval.official, cfg.eval.use_ema)
    _, val_loader, _ = build_data(cfg, ctx.dist.world_size, ctx.dist.rank)
    res = run_eval(model, val_loader, ctx.device, class_map(cfg))
    run.write_metrics(ctx.out_dir, res)
    ctx.log.info("eval %s: top1 %.2f top5 %.2f", path, res["top1"], res["top5"])
    return res


def run_diagnose(cfg: DictConfig) -> dict:
    """``defocus-diagnose``: over-focus metrics (metrics.json) and overfocus.png of a checkpoint."""
    from .diagnostics import overfocus_report, plot_maps

    ctx = run.setup_run(cfg, name="defocus")
    dg = cfg.diagnose
    path = _require_checkpoint(dg.checkpoint)
    model = build_from_cfg(cfg).to(ctx.device)
    _load_weights(model, path, dg.official, dg.use_ema)
    _, val_loader, _ = build_data(cfg)
    xs, ys = [], []
    for x, y in val_loader:
        xs.append(x), ys.append(y)
        if sum(len(v) for v in ys) >= dg.num_images:
            break
    images, labels = torch.cat(xs)[: dg.num_images].to(ctx.device), torch.cat(ys)[: dg.num_images].to(ctx.device)
    metrics, maps = overfocus_report(model, images, labels, list(dg.layers), dg.top_fraction)
    if dg.plot:
        p = cfg.model.patch_size
        grid = (images.shape[-2] // p, images.shape[-1] // p)
        png = plot_maps({k: {kk: vv.cpu() for kk, vv in v.items()} for k, v in maps.items()}, grid,
                        ctx.out_dir / "overfocus.png", title=f"{cfg.model.name} ({Path(path).name})")
        ctx.log.info("plot written to %s", png)
    run.write_metrics(ctx.out_dir, metrics)
    for k, v in sorted(metrics.items()):
        ctx.log.info("%s = %.4f", k, v)
    return metrics


_hydra = hydra.main(version_base=None, config_path="configs", config_name="train")
train = _hydra(run_train)
evaluate = _hydra(run_evaluate)
diagnose = _hydra(run_diagnose)

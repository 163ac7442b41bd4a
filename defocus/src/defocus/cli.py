"""Hydra entry points: ``defocus-train``, ``defocus-eval``, ``defocus-diagnose`` (config -> objects -> engine)."""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from repro_shared import checkpoint, dist, run
from repro_shared.data import SkipNoneCollate

from .data.digits import build_digits_datasets
from .data.imagenet import build_imagenet_dataset, build_mixup, build_val_loader, load_class_map
from .data.sampler import build_train_loader
from .engine import evaluate as run_eval
from .engine import train_one_epoch
from .models.convert import convert_official_state_dict, load_official, read_official, slice_22k_heads_to_1k
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
    return load_class_map(cfg.data.get("class_map"))


def build_data(cfg: DictConfig, world_size: int = 1, rank: int = 0):
    """(train_loader, val_loader, mixup) of the configured dataset.

    The train loader is resumable (``defocus.data.build_train_loader``); it checks before training that the
    training set holds at least one global batch (error naming both numbers and ``train.batch_size``).
    """
    d = cfg.data
    if d.name == "digits":
        if d.canvas % cfg.model.patch_size:
            raise ValueError(f"data.canvas={d.canvas} is not divisible by model.patch_size={cfg.model.patch_size}")
        train, val = build_digits_datasets(d.canvas, d.digit_size, d.noise, cfg.seed, d.get("train_subset"))
        val_loader, mixup = build_val_loader(val, 256, d.num_workers, world_size, rank), build_mixup(d, 10)
    elif d.name == "imagenet":
        train, val = build_imagenet_dataset("train", d), build_imagenet_dataset("val", d)
        collate = SkipNoneCollate() if d.get("skip_corrupt") else None
        val_loader = build_val_loader(val, cfg.train.batch_size, d.num_workers, world_size, rank, collate)
        mixup = build_mixup(d, int(d.num_classes))
    else:
        raise ValueError(f"unknown data.name {d.name!r}; use 'digits' or 'imagenet'")
    train_loader = build_train_loader(train, batch_size=cfg.train.batch_size, seed=cfg.seed,
                                      num_workers=d.num_workers, repeated_aug=bool(d.get("repeated_aug", False)),
                                      skip_corrupt=bool(d.get("skip_corrupt", False)),
                                      pin_memory=torch.cuda.is_available())
    return train_loader, val_loader, mixup


def _load_ours(model, path, use_ema: bool) -> dict | None:
    """Load one of our checkpoints into ``model`` (its EMA weights with ``use_ema``).

    Returns the EMA state dict stored next to the weights (``extra.model_ema``), or None.
    """
    state = checkpoint.load_checkpoint(path, restore_rng=False)
    ema_sd = state["extra"].get("model_ema")
    if use_ema and ema_sd is None:
        raise KeyError(f"{path} holds no EMA weights (train.ema.enabled was false); drop eval.use_ema=true")
    model.load_state_dict(ema_sd if use_ema else state["model"])
    return ema_sd


def _epoch_rate(t: DictConfig, epoch: int) -> float:
    if t.drop_path.scheduled:
        return scheduled_drop_path_rate(epoch, t.epochs, t.drop_path.min_rate, t.drop_path.max_rate)
    return float(t.drop_path.rate)


def run_train(cfg: DictConfig) -> dict:
    """``defocus-train``: build, (resume,) train, evaluate every epoch, checkpoint, write metrics.json.

    Checkpoints: every ``train.checkpoint_every`` optimizer steps (also mid-epoch) and at every epoch end
    (after its evaluation); ``train.resume=auto`` continues from the newest valid one exactly (same batches,
    same drop-path / Mixup draws, same lr and EMA), see :mod:`defocus.engine`.
    """
    if cfg.precision not in ("fp32", "bf16"):  # fp16 would need a loss scaler, which the official runs do not use
        raise ValueError(f"precision={cfg.precision!r}: use fp32 or bf16 (the official runs train under bf16 autocast)")
    init_path = run.check_required_init(cfg.get("init"))  # before building anything
    ctx = run.setup_run(cfg, name="defocus")
    log, device, t = ctx.log, ctx.device, cfg.train
    model = build_from_cfg(cfg).to(device)
    log.info("model %s: %.3f M parameters", cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6)
    if init_path is not None:
        log.info("init weights from %s: %s", init_path,
                 load_official(model, init_path, use_ema=bool(cfg.init.get("use_ema", False)), strict=False,
                               trust_checkpoint=bool(cfg.get("trust_checkpoint", False))))
    train_loader, val_loader, mixup = build_data(cfg, ctx.dist.world_size, ctx.dist.rank)
    iters = len(train_loader)
    global_batch = t.batch_size * ctx.dist.world_size
    lr, wlr, mlr = (scale_lr(v, global_batch) for v in (t.base_lr, t.warmup_lr, t.min_lr))
    optimizer = build_optimizer(model, lr, t.weight_decay, t.betas, t.eps)
    scheduler = build_scheduler(optimizer, t.epochs, t.warmup_epochs, iters, mlr, wlr)
    cmap = class_map(cfg)
    ema = None
    if t.ema.enabled:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.ema.decay)
    wrapped = dist.wrap_model(model, strategy="ddp" if ctx.dist.world_size > 1 else "none")
    step, stats, results = 0, None, {}
    state = checkpoint.resume(ctx.checkpoint_dir, t.resume, model=model, optimizer=optimizer, scheduler=scheduler,
                              restore_rng=False)  # all randomness is derived from (seed, epoch, step)
    if state is not None:
        step, extra = state["step"], state["extra"]
        if ema is not None and extra.get("model_ema") is not None:
            ema.module.load_state_dict(extra["model_ema"])
        stats, results = extra.get("epoch_stats"), extra.get("results", {})
        log.info("resumed from step %d (epoch %d, batch %d of %d)", step, step // iters, step % iters, iters)
    start_epoch, start_batch = divmod(step, iters)

    def save(steps_done: int, epoch: int, epoch_stats: dict | None, res: dict) -> None:
        extra = {"model_cfg": describe(model), "epoch_stats": epoch_stats, "results": res}
        if ema is not None:
            extra["model_ema"] = ema.module.state_dict()
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, steps_done), model=model,
                                   optimizer=optimizer, scheduler=scheduler, epoch=epoch, step=steps_done,
                                   config=cfg, extra=extra, keep_last=t.keep_last)

    def after_step(steps_done: int, epoch_stats: dict) -> None:
        # mid-epoch checkpoints; the epoch's last step is saved after its evaluation below
        if t.checkpoint_every and steps_done % t.checkpoint_every == 0 and steps_done % iters:
            save(steps_done, steps_done // iters, epoch_stats, results)

    for epoch in range(start_epoch, t.epochs):
        train_loader.set_epoch(epoch, start_batch if epoch == start_epoch else 0)
        rate = _epoch_rate(t, epoch)
        tr = train_one_epoch(wrapped, train_loader, optimizer, scheduler, epoch=epoch, device=device, seed=cfg.seed,
                             drop_path_rate=rate, aux_weight=t.aux_weight, clip_grad=t.clip_grad, mixup=mixup,
                             ema=ema, precision=cfg.precision, metrics=ctx.metrics,
                             stats=stats if epoch == start_epoch else None, after_step=after_step)
        results = {f"val_{k}": v for k, v in run_eval(model, val_loader, device, cmap).items()}
        if ema is not None:
            results.update({f"val_ema_{k}": v for k, v in run_eval(ema.module, val_loader, device, cmap).items()})
        results.update({f"train_{k}": v for k, v in tr.items()}, drop_path_rate=rate, epoch=epoch)
        ctx.metrics.log(results, step=(epoch + 1) * iters)
        log.info("epoch %d | dpr %.3f | loss %.4f | val top1 %.2f%s", epoch, rate, tr["loss"], results["val_top1"],
                 f" | EMA top1 {results['val_ema_top1']:.2f}" if ema is not None else "")
        save((epoch + 1) * iters, epoch, None, results)
    if not results:  # resumed after the last epoch of a checkpoint without results: evaluate the weights
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
    """``defocus-eval``: top-1/top-5 of a checkpoint (ours, or official with eval.official=true).

    When the checkpoint holds EMA weights (ours with ``train.ema.enabled``, official ``model_ema``), both are
    evaluated: ``top1``/``top5``/``loss`` are the raw model's, ``ema_top1``/``ema_top5``/``ema_loss`` the EMA
    model's (the official evaluation reports both; the released models are the EMA weights). ``eval.use_ema``
    loads the EMA weights as the main model.
    """
    run.check_required_init(cfg.get("init"))  # paper rows that evaluate given weights (e.g. in1k_base_res336)
    ctx = run.setup_run(cfg, name="defocus")
    e = cfg.eval
    path = _require_checkpoint(e.checkpoint)
    trust = bool(cfg.get("trust_checkpoint", False))
    model = build_from_cfg(cfg).to(ctx.device)
    _, val_loader, _ = build_data(cfg, ctx.dist.world_size, ctx.dist.rank)
    cmap = class_map(cfg)
    if e.official:
        raw = read_official(path, trust)
        checkpoint.load_state_dict_remapped(model, convert_official_state_dict(raw, use_ema=e.use_ema))
        ema_sd = convert_official_state_dict(raw, use_ema=True) if "model_ema" in raw and not e.use_ema else None
    else:
        ema_sd = _load_ours(model, path, e.use_ema)
        ema_sd = None if e.use_ema else ema_sd
    res = run_eval(model, val_loader, ctx.device, cmap)
    if ema_sd is not None:
        model.load_state_dict(ema_sd)
        res.update({f"ema_{k}": v for k, v in run_eval(model, val_loader, ctx.device, cmap).items()})
    run.write_metrics(ctx.out_dir, res)
    ctx.log.info("eval %s: top1 %.2f top5 %.2f%s", path, res["top1"], res["top5"],
                 f" | EMA top1 {res['ema_top1']:.2f} top5 {res['ema_top5']:.2f}" if "ema_top1" in res else "")
    return res


def run_diagnose(cfg: DictConfig) -> dict:
    """``defocus-diagnose``: over-focus metrics (metrics.json) and overfocus.png of a checkpoint."""
    from .diagnostics import overfocus_report, plot_maps

    ctx = run.setup_run(cfg, name="defocus")
    dg = cfg.diagnose
    path = _require_checkpoint(dg.checkpoint)
    model = build_from_cfg(cfg).to(ctx.device)
    if dg.official:
        load_official(model, path, use_ema=dg.use_ema, strict=False,
                      trust_checkpoint=bool(cfg.get("trust_checkpoint", False)))
    else:
        _load_ours(model, path, dg.use_ema)
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


def convert(argv: list[str] | None = None) -> Path:
    """``defocus-convert IN OUT [--use-ema] [--map22kto1k FILE] [--trust-checkpoint]``.

    Reads an official (or our) checkpoint weights-only, converts the keys to ours, optionally takes the EMA
    weights and slices the 21,841-way heads to IN-1k (official tools/convert_22k_to_1k.py), and writes
    ``{"model": state_dict}`` (tensors only) to OUT, which ``init.path`` accepts.
    """
    import argparse

    p = argparse.ArgumentParser(prog="defocus-convert", description=convert.__doc__.split("\n\n")[1])
    p.add_argument("src"), p.add_argument("dst")
    p.add_argument("--use-ema", action="store_true", help="take the container's model_ema weights")
    p.add_argument("--map22kto1k", default=None, help="file of 1000 logit indices (official map22kto1k.txt)")
    p.add_argument("--trust-checkpoint", action="store_true", help="full unpickling (only for trusted files)")
    a = p.parse_args(argv)
    sd = convert_official_state_dict(read_official(a.src, a.trust_checkpoint), use_ema=a.use_ema)
    if a.map22kto1k:
        sd = slice_22k_heads_to_1k(sd, load_class_map(a.map22kto1k).tolist())
    torch.save({"model": sd}, a.dst)
    print(f"wrote {len(sd)} tensors to {a.dst}")
    return Path(a.dst)


_hydra = hydra.main(version_base=None, config_path="configs", config_name="train")
_one_line = run.report_user_errors("defocus")  # bad input / divergence: "error: ...", exit 1, no traceback
train = _hydra(_one_line(run_train))
evaluate = _hydra(_one_line(run_evaluate))
diagnose = _hydra(_one_line(run_diagnose))

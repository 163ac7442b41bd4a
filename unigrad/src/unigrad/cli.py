"""Hydra entry points (config -> objects -> engine): ``unigrad-train``, ``unigrad-lineval``, ``unigrad-knn``,
``unigrad-convert``."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from repro_shared import checkpoint, dist, run
from repro_shared.checkpoint import load_external
from repro_shared.data import SkipNoneCollate, build_loader

from .data import eval_datasets, eval_loader, lineval_datasets, pretrain_dataset
from .engine import EpochMeter, lineval_one_epoch, train_one_epoch, validate
from .evaluation import effective_rank, embedding_std, extract_features, knn_top1, linear_probe_top1
from .losses import MoCoGradLoss, SiameseLoss
from .models import SiameseNet, build_encoder
from .models.convert import load_encoder_weights, official_to_ours, split_checkpoint, to_torchvision_resnet
from .schedules import ema_momentum, lineval_lr, pretrain_lr, scaled_lr

#: the balance factors (lambda) of the configs are stated for C = 2048 unit vectors (paper); the negative push
#: per direction scales like lambda / C (tr F = 1), so ``${scale_to_dim:100.0,${model.projector_output_dim}}`` gives
#: 100 at C = 2048 and 6.25 for the tiny 128-d default
REFERENCE_DIM = 2048
OmegaConf.register_new_resolver("scale_to_dim", lambda value, dim: float(value) * int(dim) / REFERENCE_DIM, replace=True)


# ------------------------------------------------------------------------------------------------ building
def build_objects(cfg: DictConfig) -> tuple[SiameseNet, SiameseLoss]:
    """The objective (``cfg.loss``, Hydra ``_target_``) and the network it needs (a momentum branch iff
    ``loss.target == momentum``), both from ``cfg.seed`` alone, so every rank builds identical weights and
    MoCo queues.

    Raises:
        ValueError: ``cfg.loss`` does not build a :class:`~unigrad.losses.SiameseLoss`.
    """
    m = cfg.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        try:
            criterion = instantiate(cfg.loss)
        except InstantiationException as e:  # a bad loss.* value: report the objective's own message
            if isinstance(e.__cause__, (ValueError, TypeError)):
                raise ValueError(f"loss ({cfg.loss._target_}): {e.__cause__}") from e
            raise
        if not isinstance(criterion, SiameseLoss):
            raise ValueError(f"loss._target_={cfg.loss._target_!r} is not an objective of unigrad.losses; use one of "
                             "the loss=<name> configs (configs/loss/*.yaml)")
        model = SiameseNet(m.encoder, int(m.projector_hidden_dim), int(m.projector_output_dim),
                           momentum=criterion.target == "momentum", predictor_hidden_dim=m.predictor_hidden_dim,
                           zero_init_residual=bool(m.zero_init_residual), tiny_widths=tuple(m.tiny_widths))
    return model, criterion


def check_batch(cfg: DictConfig, criterion: SiameseLoss, world_size: int) -> None:
    """Refuse batch sizes the method cannot train with, before anything runs.

    Raises:
        ValueError: per-process batch < 2 (train-mode BatchNorm in the projector and a batch correlation need
            at least two samples per view), or a MoCo queue that is not a multiple of the keys enqueued per step.
    """
    n = int(cfg.train.batch_size)
    if n < 2:
        raise ValueError(f"train.batch_size={n} per process is too small: the projector's BatchNorm and the batch "
                         "statistics of the objectives need at least 2 samples per view; use train.batch_size >= 2")
    if isinstance(criterion, MoCoGradLoss):
        keys, size = 2 * n * world_size, criterion.queue.shape[0]
        if size % keys:
            raise ValueError(f"loss.queue_size={size} is not a multiple of the {keys} keys enqueued per step "
                             f"(2 views x train.batch_size {n} x {world_size} processes); change loss.queue_size "
                             "or train.batch_size")
    if float(cfg.train.cutmix_alpha) > 0 and not getattr(criterion, "supports_mix", False):
        raise ValueError(f"train.cutmix_alpha > 0 is implemented for UniGrad only, not {type(criterion).__name__}")


def _use_sync_bn(setting, device: torch.device, world_size: int) -> bool:
    if str(setting) == "auto":
        return world_size > 1 and device.type == "cuda"
    return bool(setting)


@torch.no_grad()
def representation_metrics(model: SiameseNet, cfg: DictConfig, device: torch.device) -> dict[str, float]:
    """kNN top-1 and probe top-1 on backbone features, effective rank / std of the projector's embeddings and of
    the features, on the evaluation split (bank = train split)."""
    e = cfg.eval
    bank_set, query_set = eval_datasets(cfg.data)
    nw = int(cfg.data.num_workers)
    f_tr, y_tr = extract_features(model.encoder, eval_loader(bank_set, int(e.batch_size), nw), device)
    f_te, y_te = extract_features(model.encoder, eval_loader(query_set, int(e.batch_size), nw), device)
    was_training = model.projector.training
    model.projector.eval()
    emb_te = model.projector(f_te).float()
    model.projector.train(was_training)
    out = {"knn_top1": knn_top1(f_tr, y_tr, f_te, y_te, k=int(e.knn_k), t=float(e.knn_t)),
           "effective_rank": effective_rank(emb_te), "embedding_std": embedding_std(emb_te),
           "effective_rank_backbone": effective_rank(f_te)}
    if e.probe:
        out["probe_top1"] = linear_probe_top1(f_tr, y_tr, f_te, y_te)
    return out


def check_device(cfg: DictConfig) -> None:
    """Refuse ``device=cuda...`` on a machine without CUDA with a user error (before ``setup_run``).

    Raises:
        ValueError: CUDA requested but not available.
    """
    if str(cfg.device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device} was requested but CUDA is not available; use device=cpu or device=auto")


def _log_fresh_start(log, checkpoint_dir: Path, resume, key: str) -> None:
    """Say that a run starts from step 0 and how a killed run is continued (Hydra gives every new command its own
    timestamped folder, so only the same ``hydra.run.dir`` finds the checkpoints)."""
    if str(resume) == "auto":
        log.info("no checkpoint in %s: starting from step 0 (to continue a killed run, start it again with "
                 "hydra.run.dir=<its output folder>; %s=auto picks its newest valid checkpoint)", checkpoint_dir, key)


# ------------------------------------------------------------------------------------------------ training
def run_train(cfg: DictConfig) -> dict:
    """``unigrad-train``: build, resume (``train.resume=auto``), pre-train, checkpoint, evaluate, metrics.json."""
    check_device(cfg)
    ctx = run.setup_run(cfg, name="unigrad")
    log, device, t, world = ctx.log, ctx.device, cfg.train, ctx.dist.world_size
    model, criterion = build_objects(cfg)
    check_batch(cfg, criterion, world)
    dataset = pretrain_dataset(cfg.data)  # before the model moves: a missing folder fails fast
    if _use_sync_bn(cfg.dist.sync_bn, device, world):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = device.type == "cuda"  # faster convolutions on GPUs (spec §10); CPU keeps the default layout
    if channels_last:
        torch.backends.cudnn.benchmark = True
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    criterion.to(device)
    log.info("%s + %s (target=%s): %.2f M trainable parameters", cfg.model.encoder, type(criterion).__name__,
             criterion.target, sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6)
    loader = build_loader(dataset, batch_size=int(t.batch_size), seed=int(cfg.seed), num_workers=int(cfg.data.num_workers),
                          collate_fn=SkipNoneCollate() if cfg.data.skip_corrupt else None,
                          pin_memory=device.type == "cuda", persistent_workers=int(cfg.data.num_workers) > 0)
    init_lr = scaled_lr(float(t.base_lr), int(t.batch_size) * world, int(t.lr_batch_denominator))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=init_lr,
                                momentum=float(t.sgd_momentum), weight_decay=float(t.weight_decay))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    wrapped = dist.wrap_model(model, "ddp" if world > 1 else "none")
    meter = EpochMeter()
    step = 0
    try:
        state = checkpoint.resume(ctx.checkpoint_dir, t.resume, model=model, optimizer=optimizer, scaler=scaler,
                                  restore_rng=False)
        if state is not None:
            criterion.load_state_dict(state["extra"]["loss"])
    except (checkpoint.CheckpointError, RuntimeError) as e:  # RuntimeError: the objective's load_state_dict
        raise checkpoint.CheckpointError(
            f"cannot resume from {ctx.checkpoint_dir} (train.resume={t.resume}): its checkpoint was written by a run "
            f"of another configuration (model / loss / optimizer differ: {str(e).splitlines()[0]}); start this "
            "configuration in a new folder (another hydra.run.dir)") from e
    if state is not None:
        meter.load_state_dict(state["extra"]["meter"])
        step = int(state["step"])
        log.info("resumed from step %d (epoch %d)", step, state["epoch"])
    else:
        _log_fresh_start(log, ctx.checkpoint_dir, t.resume, "train.resume")
    iters = len(loader)
    total, warmup = int(t.epochs) * iters, int(t.warmup_epochs) * iters
    lr_at = partial(pretrain_lr, init_lr=init_lr, warmup_steps=warmup, total_steps=total,
                    min_lr_ratio=float(t.min_lr_ratio), cosine_denominator=str(t.cosine_denominator))
    mm_at = partial(ema_momentum, total_steps=total, base=float(t.base_momentum))
    epoch = step // iters

    def save(at_step: int) -> None:
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, at_step), model=model,
                                   optimizer=optimizer, scaler=scaler, epoch=epoch, step=at_step, config=cfg,
                                   extra={"loss": criterion.state_dict(), "meter": meter.state_dict()},
                                   keep_last=int(t.keep_last))

    def on_step_end(at_step: int) -> None:
        every = int(t.save_every_steps)
        if every and at_step % every == 0 and at_step % iters:  # epoch ends are saved after the epoch's summary
            save(at_step)

    results: dict = {}
    start = time.perf_counter()
    for epoch in range(step // iters, int(t.epochs)):
        loader.set_epoch(epoch, step - epoch * iters)
        step = train_one_epoch(wrapped, criterion, optimizer, loader, epoch=epoch, step=step, seed=int(cfg.seed),
                               lr_at=lr_at, mm_at=mm_at, device=device, precision=str(cfg.precision), scaler=scaler,
                               meter=meter, batch_size=int(t.batch_size), cutmix_alpha=float(t.cutmix_alpha),
                               metrics=ctx.metrics, log_every=int(t.log_every_steps), on_step_end=on_step_end,
                               channels_last=channels_last)
        summary = {f"epoch_{k}": v for k, v in meter.summary().items()}
        if summary["epoch_skipped_samples"]:
            log.warning("epoch %d skipped %d unreadable samples (data.skip_corrupt=true; paths in the warnings above)",
                        epoch, summary["epoch_skipped_samples"])
        every = int(cfg.eval.every_epochs)
        if cfg.eval.enabled and every and (epoch + 1) % every == 0 and epoch + 1 < int(t.epochs):
            summary.update(representation_metrics(model, cfg, device))
        ctx.metrics.log({"epoch": epoch, **summary}, step=step)
        log.info("epoch %d | loss %.4f | pos_sim %.4f | lr %.3g", epoch, summary["epoch_loss"], summary["epoch_pos_sim"],
                 lr_at(step - 1))
        meter = EpochMeter()
        save(step)
    results["train_time_s"] = time.perf_counter() - start
    results["steps"] = step
    if cfg.eval.enabled:
        results.update(representation_metrics(model, cfg, device))
        log.info("kNN top-1 %.2f | probe top-1 %s | effective rank %.2f", results["knn_top1"],
                 f"{results['probe_top1']:.2f}" if "probe_top1" in results else "-", results["effective_rank"])
    run.write_metrics(ctx.out_dir, results)
    ctx.metrics.close()
    return results


# ------------------------------------------------------------------------------------------- evaluations
def _pretrained_encoder(cfg: DictConfig, log) -> tuple[nn.Sequential, int, dict | None]:
    """The encoder of ``cfg.model`` with the weights of ``cfg.init.path`` (or random ones, said loudly)."""
    path = run.check_required_init(cfg.init)
    encoder, dim = build_encoder(cfg.model.encoder, zero_init_residual=bool(cfg.model.zero_init_residual),
                                 tiny_widths=tuple(cfg.model.tiny_widths))
    if path is None:
        log.warning("init.path is not set: evaluating a RANDOMLY INITIALISED %s (the random-init baseline)",
                    cfg.model.encoder)
        return encoder, dim, None
    weights = load_encoder_weights(path, branch=str(cfg.init.branch), trust=bool(cfg.trust_checkpoint))
    expected = encoder.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    wrong_shape = [k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape]
    if missing or unexpected or wrong_shape:
        raise checkpoint.CheckpointError(
            f"init.path={str(path)!r} holds an encoder that does not fit model.encoder={cfg.model.encoder} "
            f"({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong_shape)} wrongly shaped tensors (e.g. "
            f"{(missing + unexpected + wrong_shape)[:3]}); pass the model=... (and model.* sizes) it was trained with")
    encoder.load_state_dict(weights)
    log.info("loaded the %s encoder of %s", cfg.init.branch, path)
    return encoder, dim, {k: v.clone() for k, v in encoder.state_dict().items()}


def run_lineval(cfg: DictConfig) -> dict:
    """``unigrad-lineval``: train a linear classifier on the frozen encoder (SimSiam protocol with LARS)."""
    import timm.optim

    check_device(cfg)
    ctx = run.setup_run(cfg, name="unigrad")
    log, device, le = ctx.log, ctx.device, cfg.lineval
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        encoder, dim, loaded = _pretrained_encoder(cfg, log)
        fc = nn.Linear(dim, int(cfg.data.num_classes))
        nn.init.normal_(fc.weight, 0.0, 0.01)
        nn.init.zeros_(fc.bias)
    model = nn.Sequential(*encoder, fc).to(device)  # official layout: 0..9 encoder, 10 fc
    for p in encoder.parameters():
        p.requires_grad_(False)
    train_set, val_set = lineval_datasets(cfg.data)
    loader = build_loader(train_set, batch_size=int(le.batch_size), seed=int(cfg.seed), num_workers=int(cfg.data.num_workers),
                          collate_fn=SkipNoneCollate() if cfg.data.skip_corrupt else None,
                          pin_memory=device.type == "cuda", batch_size_key="lineval.batch_size")
    val_loader = eval_loader(val_set, int(le.val_batch_size), int(cfg.data.num_workers))
    init_lr = scaled_lr(float(le.base_lr), int(le.batch_size) * ctx.dist.world_size, int(le.lr_batch_denominator))
    if le.lars:
        optimizer = timm.optim.Lars(fc.parameters(), lr=init_lr, momentum=float(le.momentum),
                                    weight_decay=float(le.weight_decay), trust_coeff=float(le.trust_coefficient),
                                    trust_clip=False, always_adapt=True)
    else:
        optimizer = torch.optim.SGD(fc.parameters(), lr=init_lr, momentum=float(le.momentum),
                                    weight_decay=float(le.weight_decay))
    wrapped = dist.wrap_model(model, "ddp" if ctx.dist.world_size > 1 else "none")
    state = checkpoint.resume(ctx.checkpoint_dir, le.resume, model=model, optimizer=optimizer, restore_rng=False)
    if state is None:
        _log_fresh_start(log, ctx.checkpoint_dir, le.resume, "lineval.resume")
    step = 0 if state is None else int(state["step"])
    best = 0.0 if state is None else float(state["extra"]["best_top1"])
    iters, epochs = len(loader), int(le.epochs)
    epoch = step // iters

    def save(at_step: int) -> None:
        checkpoint.save_checkpoint(checkpoint.checkpoint_path(ctx.checkpoint_dir, at_step), model=model,
                                   optimizer=optimizer, epoch=epoch, step=at_step, config=cfg,
                                   extra={"best_top1": best}, keep_last=int(le.keep_last))

    def on_step_end(at_step: int) -> None:
        every = int(le.save_every_steps)
        if every and at_step % every == 0 and at_step % iters:
            save(at_step)

    res: dict = {}
    for epoch in range(step // iters, epochs):
        for group in optimizer.param_groups:
            group["lr"] = lineval_lr(epoch, init_lr=init_lr, epochs=epochs)
        loader.set_epoch(epoch, step - epoch * iters)
        step, loss = lineval_one_epoch(wrapped, optimizer, loader, epoch=epoch, step=step, seed=int(cfg.seed),
                                       device=device, log=log, on_step_end=on_step_end)
        row = {"epoch": epoch, "train_loss": loss}
        if (epoch + 1) % int(le.eval_every_epochs) == 0 or epoch + 1 == epochs:
            res = validate(model, val_loader, device)
            best = max(best, res["top1"])
            row.update(res)
            log.info("epoch %d | val top-1 %.2f top-5 %.2f", epoch, res["top1"], res["top5"])
        ctx.metrics.log(row, step=step)
        save(step)
    if not res:
        res = validate(model, val_loader, device)
    if loaded is not None:  # official sanity check: the linear protocol must not change the backbone
        now = model.state_dict()
        changed = [k for k, v in loaded.items() if not torch.equal(now[k].cpu(), v.cpu())]
        if changed:
            raise RuntimeError(f"the frozen encoder changed during linear evaluation: {changed[:5]}")
    final = {"top1": res["top1"], "top5": res["top5"], "best_top1": max(best, res["top1"])}
    run.write_metrics(ctx.out_dir, final)
    ctx.metrics.close()
    return final


def run_knn(cfg: DictConfig) -> dict:
    """``unigrad-knn``: weighted kNN top-1 of the (pre-trained or random) encoder on the evaluation split."""
    check_device(cfg)
    ctx = run.setup_run(cfg, name="unigrad")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        encoder, _, _ = _pretrained_encoder(cfg, ctx.log)
    encoder.to(ctx.device)
    bank_set, query_set = eval_datasets(cfg.data)
    k = cfg.knn
    f_tr, y_tr = extract_features(encoder, eval_loader(bank_set, int(k.batch_size), int(cfg.data.num_workers)), ctx.device)
    f_te, y_te = extract_features(encoder, eval_loader(query_set, int(k.batch_size), int(cfg.data.num_workers)), ctx.device)
    res = {"knn_top1": knn_top1(f_tr, y_tr, f_te, y_te, k=int(k.k), t=float(k.t)),
           "effective_rank_backbone": effective_rank(f_te)}
    ctx.log.info("kNN top-1 %.2f (k=%d, t=%.2f)", res["knn_top1"], int(k.k), float(k.t))
    run.write_metrics(ctx.out_dir, res)
    ctx.metrics.close()
    return res


def run_convert(cfg: DictConfig) -> Path:
    """``unigrad-convert``: an official checkpoint -> our weights (F carried over) or a torchvision ResNet."""
    from repro_shared.logging import get_logger
    from repro_shared.fsio import atomic_open

    log = get_logger("unigrad")
    if cfg.format not in ("ours", "torchvision"):
        raise ValueError(f"format must be 'ours' or 'torchvision', got {cfg.format!r}")
    obj = load_external(cfg.input, trust=bool(cfg.trust_checkpoint))
    try:
        sd, f = split_checkpoint(obj)
    except checkpoint.CheckpointError as e:
        raise checkpoint.CheckpointError(f"input={cfg.input}: {e}") from e
    if cfg.format == "torchvision":
        out = to_torchvision_resnet(sd, branch=str(cfg.branch))
    else:
        out = {"model": official_to_ours(sd), "source": str(cfg.input)}
        if f is not None:
            out["loss_state"] = {"F": f.float(), "F_initialized": torch.tensor(True)}
    path = Path(str(cfg.output))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.save(out, fh)
    log.info("wrote %s (%s, %d tensors%s)", path, cfg.format, len(out if cfg.format == "torchvision" else out["model"]),
             ", F carried over" if cfg.format == "ours" and f is not None else "")
    return path


def _main(config_name: str, fn):
    return hydra.main(version_base=None, config_path="configs", config_name=config_name)(run.report_user_errors("unigrad")(fn))


train = _main("train", run_train)
lineval = _main("lineval", run_lineval)
knn = _main("knn", run_knn)
convert = _main("convert", run_convert)

__all__ = ["build_objects", "check_batch", "check_device", "representation_metrics", "run_train", "run_lineval", "run_knn", "run_convert",
           "train", "lineval", "knn", "convert"]

"""Hydra entry points: ``pap-train``, ``pap-eval``, ``pap-search``."""

from __future__ import annotations

import time
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, DistributedSampler

from repro_shared import checkpoint, dist, run

from .data.build import build_dataset
from .data.coco import collate
from .engine import evaluate as coco_eval_loop
from .engine import train_one_epoch, warmup_step_lambda
from .models.build import build_detector


def _loader(ds, batch_size: int, train: bool, num_workers: int, seed: int = 0) -> DataLoader:
    sampler = DistributedSampler(ds, shuffle=train, seed=seed) if dist.get_world_size() > 1 else None
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate, generator=g, drop_last=False)


def pap_heads(model) -> dict[str, Any]:
    """The PAPLoss modules of a detector by head name (``bbox`` | ``rpn``, ``roi``)."""
    m = dist.unwrap_model(model)
    heads = {}
    if getattr(m, "pap", None) is not None:
        heads["bbox"] = m.pap
    if getattr(getattr(m, "rpn", None), "pap", None) is not None:
        heads["rpn"] = m.rpn.pap
    if getattr(getattr(m, "roi_heads", None), "pap", None) is not None:
        heads["roi"] = m.roi_heads.pap
    return heads


def train_and_evaluate(cfg: DictConfig, device: torch.device, log=None, metrics=None, ckpt_dir=None,
                       pap_override: dict[str, tuple[torch.Tensor, float]] | None = None,
                       fail_patience: int | None = None) -> dict[str, float]:
    """Build data + detector, train ``cfg.train`` and return the COCO metrics on the val split.

    ``pap_override`` maps a head name to (control points (5, 12), lambda) set on that head's PAPLoss
    before training (how the search trains each sampled loss).
    """
    t0 = time.time()
    train_ds = build_dataset(cfg.data, "train", train=True, train_size=int(cfg.model.train_size))
    val_ds = build_dataset(cfg.data, "val", train=False)
    model = build_detector(cfg.model, cfg.loss, num_classes=len(train_ds.cat_ids)).to(device)
    heads = pap_heads(model)
    for name, (ctrl, lam) in (pap_override or {}).items():
        if name not in heads:
            raise ValueError(f"cannot set PAP parameters of head {name!r}; this detector has {sorted(heads)}")
        heads[name].set_parameters(ctrl, lam)
    tc = cfg.train
    loader = _loader(train_ds, int(tc.batch_size), True, int(tc.num_workers), int(cfg.seed))
    iters_per_epoch = max(len(loader), 1)
    params = [p for p in model.parameters() if p.requires_grad]
    if tc.get("optimizer", "sgd") == "adamw":  # Deformable DETR
        optimizer = torch.optim.AdamW(params, lr=float(tc.lr), weight_decay=float(tc.weight_decay))
    elif tc.get("optimizer", "sgd") == "sgd":
        optimizer = torch.optim.SGD(params, lr=float(tc.lr), momentum=float(tc.momentum),
                                    weight_decay=float(tc.weight_decay))
    else:
        raise ValueError(f"unknown train.optimizer {tc.optimizer!r}; use 'sgd' or 'adamw'")
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_step_lambda(
        int(tc.warmup_iters), float(tc.warmup_ratio), [int(e) * iters_per_epoch for e in tc.milestones]))
    model = dist.wrap_model(model, "ddp")
    start_epoch, step = 0, 0
    if ckpt_dir is not None and tc.get("resume"):
        state = checkpoint.resume(ckpt_dir, tc.resume, model=dist.unwrap_model(model), optimizer=optimizer,
                                  scheduler=sched)
        if state is not None:
            start_epoch, step = int(state["epoch"]), int(state["step"])
    max_iters = tc.get("max_iters")
    fail_count = [0]
    for epoch in range(start_epoch, int(tc.epochs)):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        step = train_one_epoch(model, loader, optimizer, sched, device, epoch=epoch, step=step, log=log,
                               metrics=metrics, log_every=int(tc.log_every), max_iters=max_iters,
                               fail_patience=fail_patience, fail_count=fail_count)
        if ckpt_dir is not None and int(tc.get("ckpt_every", 0)) and (epoch + 1) % int(tc.ckpt_every) == 0:
            checkpoint.save_checkpoint(checkpoint.checkpoint_path(ckpt_dir, step), model=dist.unwrap_model(model),
                                       optimizer=optimizer, scheduler=sched, epoch=epoch + 1, step=step, config=cfg,
                                       keep_last=2)
        if max_iters is not None and step >= max_iters:
            break
    val_loader = _loader(val_ds, int(cfg.eval.batch_size), False, int(tc.num_workers))
    result = coco_eval_loop(dist.unwrap_model(model), val_loader, device, val_ds)
    result.update(train_time_s=time.time() - t0, iters=step)
    return result


@hydra.main(version_base=None, config_path="configs", config_name="train")
def train(cfg: DictConfig) -> None:
    """Train a detector on ``cfg.data`` and write the val COCO metrics to ``metrics.json``."""
    ctx = run.setup_run(cfg, name="param_ap_loss")
    result = train_and_evaluate(cfg, ctx.device, ctx.log, ctx.metrics, ckpt_dir=ctx.checkpoint_dir)
    ctx.log.info("val: " + " ".join(f"{k} {v:.2f}" for k, v in result.items()))
    ctx.metrics.close()
    run.write_metrics(ctx.out_dir, result)


@hydra.main(version_base=None, config_path="configs", config_name="train")
def evaluate(cfg: DictConfig) -> None:
    """Evaluate a checkpoint (``eval.checkpoint=PATH``) on the val split; writes ``metrics.json``."""
    ctx = run.setup_run(cfg, name="param_ap_loss")
    path = cfg.eval.get("checkpoint")
    if not path:
        raise ValueError("pap-eval needs eval.checkpoint=<path to a ckpt_*.pt written by pap-train>")
    val_ds = build_dataset(cfg.data, "val", train=False)
    model = build_detector(cfg.model, cfg.loss, num_classes=len(val_ds.cat_ids)).to(ctx.device)
    checkpoint.load_checkpoint(path, model=model)
    result = coco_eval_loop(model, _loader(val_ds, int(cfg.eval.batch_size), False, 0), ctx.device, val_ds)
    ctx.log.info("val: " + " ".join(f"{k} {v:.2f}" for k, v in result.items()))
    run.write_metrics(ctx.out_dir, result)


@hydra.main(version_base=None, config_path="configs", config_name="search")
def search(cfg: DictConfig) -> None:
    """PAP-loss parameter search (spec §3.6); state saved each round, resumable; writes ``metrics.json``."""
    from .search import run_search_from_config

    ctx = run.setup_run(cfg, name="param_ap_loss")
    result = run_search_from_config(cfg, ctx)
    run.write_metrics(ctx.out_dir, result)

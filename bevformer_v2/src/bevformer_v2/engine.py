"""Training and evaluation loops (spec §3.3, §3.4): AdamW (backbone lr x0.5), linear warmup (start 1/3),
step decay x0.1, gradient clipping 35, gradient accumulation to the paper's global batch; evaluation =
NMS-free decoding -> nuScenes results JSON -> devkit DetectionEval."""

from __future__ import annotations

import math
import time

import torch

from .data.dataset import collate
from .data.nusc_eval import boxes_to_results, evaluate_results
from .losses import detector_losses, hungarian_match, normalize_bbox, total_loss


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float):
    """AdamW (beta 0.9/0.999, eps 1e-8), wd on all params, ``img_backbone`` at lr x ``backbone_lr_mult``."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.split(".")[0] == "img_backbone" or ".img_backbone." in name else rest).append(p)
    groups = [dict(params=rest, lr=lr), dict(params=backbone, lr=lr * backbone_lr_mult)]
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)


def lr_factor(it: int, warmup_iters: int, warmup_ratio: float, step_iters) -> float:
    """mmcv linear warmup from ``warmup_ratio`` then x0.1 at each of ``step_iters``."""
    f = 0.1 ** sum(it >= s for s in step_iters)
    if it < warmup_iters:
        f *= 1 - (1 - it / warmup_iters) * (1 - warmup_ratio)
    return f


def to_device(batch: dict, device) -> dict:
    out = dict(batch)
    for k in ("imgs", "lidar2img", "bda", "flip", "intrinsics", "ego_k2t"):
        out[k] = batch[k].to(device)
    out["gt_boxes"] = [g.to(device) for g in batch["gt_boxes"]]
    out["gt_labels"] = [g.to(device) for g in batch["gt_labels"]]
    return out


def infinite_loader(dataset, batch_size: int, num_workers: int, seed: int, rank: int = 0, world: int = 1):
    """Epoch-wise shuffled batches (distributed: every rank takes its own stride of the permutation)."""
    epoch = 0
    while True:
        g = torch.Generator().manual_seed(seed + epoch)
        perm = torch.randperm(len(dataset), generator=g).tolist()[rank::world]
        dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, perm), batch_size=batch_size,
                                             shuffle=False, num_workers=num_workers, collate_fn=collate)
        yield from loader
        epoch += 1


def train(model, dataset, cfg, ctx, groups: int, seed: int = 0, start_iter: int = 0, optimizer=None,
          save_fn=None) -> dict:
    """Run ``cfg.iters`` optimiser steps (each = ``cfg.accum`` micro-batches). Returns the last logged values."""
    device = ctx.device
    core = model.module if hasattr(model, "module") else model
    optimizer = optimizer or build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult)
    steps = [int(round(f * cfg.iters)) for f in cfg.lr_step_frac]
    batches = infinite_loader(dataset, cfg.batch_size, cfg.num_workers, seed + 1000 * start_iter, ctx.dist.rank,
                              ctx.dist.world_size)
    model.train()
    last, t0 = {}, time.time()
    for it in range(start_iter, cfg.iters):
        f = lr_factor(it, cfg.warmup_iters, cfg.warmup_ratio, steps)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        logs: dict[str, float] = {}
        for _ in range(cfg.accum):
            batch = to_device(next(batches), device)
            out = model(batch)
            losses = detector_losses(out, batch, groups, core.perspective and cfg.lambda_pers > 0,
                                    core.fix_smooth_l1)
            loss = total_loss(losses, cfg.lambda_bev, cfg.lambda_pers) / cfg.accum
            loss.backward()
            for k, v in losses.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach()) / cfg.accum
            logs["loss"] = logs.get("loss", 0.0) + float(loss.detach())
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        logs.update(lr=optimizer.param_groups[0]["lr"], grad_norm=float(gnorm))
        logs["loss_bev"] = sum(v for k, v in logs.items() if k.endswith(("loss_cls", "loss_bbox")))
        if not math.isfinite(logs["loss"]):
            raise FloatingPointError(f"non-finite loss at iteration {it}: {logs}")
        if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iters:
            ctx.metrics.log(logs, step=it + 1)
            ctx.log.info("it %d/%d loss %.4f (bev %.4f) lr %.2e %.2fs/it", it + 1, cfg.iters, logs["loss"],
                         logs["loss_bev"], logs["lr"], (time.time() - t0) / (it + 1 - start_iter))
        if save_fn is not None and cfg.ckpt_every and (it + 1) % cfg.ckpt_every == 0:
            save_fn(it + 1, optimizer)
        last = logs
    return last


@torch.no_grad()
def predict(model, dataset, device, class_range: dict, batch_size: int = 1, head: str = "bev") -> dict:
    """Decoded predictions of every sample of ``dataset`` as nuScenes results (sample token -> list).

    ``head``: ``bev`` (the detector) or ``perspective`` (the DD3D head alone, paper Tab. 2 'Perspective only')."""
    if head not in ("bev", "perspective"):
        raise ValueError(f"unknown eval head {head!r}; use 'bev' or 'perspective'")
    model.eval()
    results = {}
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        batch = to_device(batch, device)
        preds = model(batch) if head == "bev" else model.predict_perspective(batch)
        for i, (boxes, scores, labels) in zip(batch["index"], preds):
            info = dataset.infos[i]
            results[info["token"]] = boxes_to_results(info, boxes.double().cpu().numpy(), scores.cpu().numpy(),
                                                      labels.cpu().numpy(), class_range)[:500]
    return results


def evaluate(model, dataset, nusc, eval_set: str, out_dir, device, head: str = "bev") -> dict:
    """devkit metrics (NDS, mAP, mATE, mASE, mAOE, mAVE, mAAE, per-class AP) on ``dataset``."""
    from nuscenes.eval.common.config import config_factory

    rng = config_factory("detection_cvpr_2019").class_range
    results = predict(model, dataset, device, rng, head=head)
    return evaluate_results(nusc, results, eval_set, out_dir)


@torch.no_grad()
def matched_errors(model, dataset, device) -> dict:
    """Diagnostics of the BEV head on ``dataset`` that stay informative when detection AP is still ~0:
    Hungarian-match the last decoder layer's queries (group 0) to the GT (official costs) and report the
    mean centre distance (m, xy) and velocity error (m/s) of the matched pairs, and the matched class
    probability."""
    model.eval()
    dist, vel, prob, n = 0.0, 0.0, 0.0, 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, collate_fn=collate)
    core = model.module if hasattr(model, "module") else model
    Qg = core.pts_bbox_head.num_query + (core.pts_bbox_head.num_proposals if core.two_stage else 0)
    for batch in loader:
        batch = to_device(batch, device)
        all_cls, all_reg = core.forward_raw(batch)[:2]
        cls, reg = all_cls[-1, 0, :Qg], all_reg[-1, 0, :Qg]
        gt, lab = batch["gt_boxes"][0], batch["gt_labels"][0]
        if len(gt) == 0:
            continue
        qi, gi = hungarian_match(cls, reg, normalize_bbox(gt), lab)
        dist += float((reg[qi, :2] - gt[gi, :2]).norm(dim=-1).sum())
        vel += float((reg[qi, 8:10] - gt[gi, 7:9]).norm(dim=-1).sum())
        prob += float(cls[qi, lab[gi]].sigmoid().sum())
        n += len(qi)
    n = max(n, 1)
    return {"matched_center_err": dist / n, "matched_vel_err": vel / n, "matched_cls_prob": prob / n}
